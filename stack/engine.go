package stack

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/moby/moby/client"
)

// Compose's labels (github.com/docker/compose/v2/pkg/api/labels.go).
const (
	labelProject     = "com.docker.compose.project"
	labelService     = "com.docker.compose.service"
	labelConfigHash  = "com.docker.compose.config-hash"
	labelNumber      = "com.docker.compose.container-number"
	labelVolume      = "com.docker.compose.volume"
	labelNetwork     = "com.docker.compose.network"
	labelWorkingDir  = "com.docker.compose.project.working_dir"
	labelConfigFiles = "com.docker.compose.project.config_files"
	labelOneoff      = "com.docker.compose.oneoff"
	labelImage       = "com.docker.compose.image"
	labelDependsOn   = "com.docker.compose.depends_on"
	labelComposeVer  = "com.docker.compose.version"
)

// composeVersion is written in com.docker.compose.version. Compose reads the
// label nowhere; the value says which tool created the resource.
const composeVersion = "carto-appliance"

// Engine talks to one Docker engine.
type Engine struct {
	api *client.Client
	// Firewall, when set, lets a roll fence a retiring container in the
	// routers (roll.go) and hand the router's published ports from its old
	// container to its new one (handover.go) without a failed request.
	Firewall Firewall
}

// ErrNoEngine is returned by Connect when no Docker engine answers.
var ErrNoEngine = errors.New("the Docker engine does not answer")

// Connect opens a client to the engine named by DOCKER_HOST (default: the
// local socket), negotiating the API version so that Docker 20.10 (API 1.41)
// and newer all work, and checks that the engine answers.
func Connect(ctx context.Context) (*Engine, error) {
	api, err := client.New(client.FromEnv)
	if err != nil {
		return nil, fmt.Errorf("creating the Docker client: %w", err)
	}
	if _, err := api.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		api.Close()
		return nil, fmt.Errorf("%w at %s: %v; start it (systemctl start docker) or set DOCKER_HOST", ErrNoEngine, api.DaemonHost(), err)
	}
	return &Engine{api: api}, nil
}

// Close releases the client's connections.
func (e *Engine) Close() error { return e.api.Close() }

// APIVersion is the negotiated Engine API version.
func (e *Engine) APIVersion() string { return e.api.ClientVersion() }

// EngineInfo is what preflight needs to know of the engine.
type EngineInfo struct {
	Version string // e.g. 20.10.24+dfsg1
	RootDir string // where images, containers and volumes live
}

// Info reports the engine's version and data directory.
func (e *Engine) Info(ctx context.Context) (EngineInfo, error) {
	res, err := e.api.Info(ctx, client.InfoOptions{})
	if err != nil {
		return EngineInfo{}, fmt.Errorf("asking the Docker engine for its info: %w", err)
	}
	return EngineInfo{Version: res.Info.ServerVersion, RootDir: res.Info.DockerRootDir}, nil
}

// PortOwner names the running container that publishes a host port, and
// its compose project ("" when no container does).
func (e *Engine) PortOwner(ctx context.Context, port int) (name, project string, err error) {
	list, err := e.api.ContainerList(ctx, client.ContainerListOptions{})
	if err != nil {
		return "", "", fmt.Errorf("listing containers: %w", err)
	}
	for _, c := range list.Items {
		for _, p := range c.Ports {
			if int(p.PublicPort) == port {
				name := c.ID[:12]
				if len(c.Names) > 0 {
					name = strings.TrimPrefix(c.Names[0], "/")
				}
				return name, c.Labels[labelProject], nil
			}
		}
	}
	return "", "", nil
}
