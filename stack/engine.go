package stack

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

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

// engineAnswerTimeout bounds the wait for the engine's answer to any
// request, its status line and headers (a stream's body, such as a pull's
// progress or followed logs, is not bounded: the engine answers those at
// once). Every endpoint the appliance uses answers at once or after work
// that takes far less: a stop within its grace period, a load of layers it
// reports as it goes. Only a wedged engine takes longer, and then it never
// answers: seen on Docker 20.10, a health exec stuck holding a container's
// lock made every inspect of that container wait, an upgrade's undo among
// them, for ever. Bounded, such a run ends as broken, its error in the
// journal and its lock released, and the node can be mended (restart the
// engine, config apply) instead of waiting on a run that never ends.
var engineAnswerTimeout = 15 * time.Minute

// Connect opens a client to the engine named by DOCKER_HOST (default: the
// local socket), negotiating the API version so that Docker 20.10 (API 1.41)
// and newer all work, and checks that the engine answers.
func Connect(ctx context.Context) (*Engine, error) {
	// The transport is the client's default one (the same idle limits)
	// with the answer bound; WithHost sets it up for the default socket
	// before FromEnv's DOCKER_HOST, if any, replaces that.
	// An empty TLSNextProto keeps net/http from setting up HTTP/2 on it,
	// which gives it a TLS config: the client would then speak https to
	// a plain socket. (DOCKER_TLS_VERIFY's client comes with its own.)
	hc := &http.Client{
		Transport: &http.Transport{MaxIdleConns: 6, IdleConnTimeout: 30 * time.Second, ResponseHeaderTimeout: engineAnswerTimeout,
			TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}},
		CheckRedirect: client.CheckRedirect,
	}
	api, err := client.New(client.WithHTTPClient(hc), client.WithHost(client.DefaultDockerHost), client.FromEnv)
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
