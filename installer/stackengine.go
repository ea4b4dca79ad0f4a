package installer

import (
	"context"
	"io"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/cartodb/carto-appliance/stack"
)

// stackEngine is what the workflows ask of the Docker engine: the methods
// of *stack.Engine they use, and no more, so that unit tests can drive
// every workflow end to end with a fake in its place, without Docker.
type stackEngine interface {
	Pull(ctx context.Context, p *types.Project, opts stack.PullOptions) error
	Apply(ctx context.Context, p *types.Project, opts stack.ApplyOptions) (*stack.ApplyResult, error)
	Stop(ctx context.Context, p *types.Project, names []string, rep stack.Reporter) ([]string, error)
	Signal(ctx context.Context, project, service, signal string) (bool, error)
	Status(ctx context.Context, p *types.Project) ([]stack.ServiceStatus, error)
	Logs(ctx context.Context, project string, w io.Writer, opts stack.LogsOptions) error
	Down(ctx context.Context, project string, p *types.Project, opts stack.DownOptions) error
	PortOwner(ctx context.Context, port int) (name, project string, err error)
	Exec(ctx context.Context, project, service string, opts stack.ExecOptions) (int, error)
	RepoDigests(ctx context.Context, ref string) ([]string, error)
	Info(ctx context.Context) (stack.EngineInfo, error)
	LoadImage(ctx context.Context, r io.Reader, id string, refs []string, progress io.Writer) (bool, error)
	ImageID(ctx context.Context, ref string) (string, error)
	UntagImage(ctx context.Context, ref string) error
	Diagnose(ctx context.Context, project string) (*stack.Diagnostics, error)
	Leftovers(ctx context.Context, project string) ([]string, error)
	Close() error
}

var _ stackEngine = (*stack.Engine)(nil)

// connectEngine connects to the Docker engine; unit tests put a fake in
// its place, as they do for hostEngine.
var connectEngine = func(ctx context.Context) (stackEngine, error) {
	eng, err := stack.Connect(ctx)
	if err != nil {
		// A nil *stack.Engine in the interface would not be nil: callers
		// test the engine against nil before closing it.
		return nil, err
	}
	eng.Firewall = rollFirewall{}
	return eng, nil
}
