package stack

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"gopkg.in/yaml.v3"
)

// Template extension keys (see templates/release/docker-compose.yml).
const (
	extRole      = "x-carto-role"
	extEmbedded  = "x-carto-embedded"
	extHTTPSPort = "x-carto-https-port"
	extHTTPPort  = "x-carto-http-port"
	extReload    = "x-carto-reload"
	extPeerPort  = "x-carto-peer-port"
)

// Roles of a node. RoleAll runs every service (the standard layout).
const (
	RoleAll  = "all"
	RoleData = "data"
	RoleApp  = "app"
	RoleWeb  = "web"
)

// Appliance labels, written into the generated compose file so that they are
// part of the service config compose hashes (labels added only at container
// creation would make `docker compose up` see a different config).
const (
	LabelVersion = "io.carto.appliance.version"
	LabelRole    = "io.carto.appliance.role"
	// LabelReload is the command that makes a router (nginx) drop the
	// addresses it resolved (x-carto-reload): run after a service behind it
	// was rolled, see roll.go.
	LabelReload = "io.carto.appliance.reload"
)

// RenderOptions selects what of the release template this node runs.
type RenderOptions struct {
	Role string // RoleAll (default) or one of the tier roles: the role label
	// ServiceRoles are the template's service roles (x-carto-role) the
	// node runs; none: every one for RoleAll, else Role's own.
	ServiceRoles []string
	// PeerAddress, on a node of a tier layout, is its private address:
	// the services that other nodes reach (x-carto-peer-port) publish that
	// port there, and only there.
	PeerAddress string
	Version     string            // CARTO version, written as a label
	Env         map[string]string // the rendered .env, for the x-carto-embedded switches
	// TLSOffload drops the published HTTPS ports (x-carto-https-port): a
	// load balancer in front ends TLS, and nothing listens on 443.
	TLSOffload bool
	// HTTPByAgent drops the published HTTP ports (x-carto-http-port): the
	// agent answers there (ACME challenges, and redirects to https).
	HTTPByAgent bool
	// Forward, on a node whose services reach those of another node by
	// name (the tier2 web node's router), stands in for them.
	Forward *Forward
}

// Forward puts, in place of each service of Roles that another node runs
// and publishes (x-carto-peer-port "HOST:CONTAINER"), a forwarder under
// the service's name on the stack's network: the router's upstreams keep
// their names and ports, resolved by Docker's DNS, and reach the other
// node's private address. The forwarder is carto-appliance itself
// (`carto-appliance forward`, a TCP relay), run from Binary (mounted
// read-only) in the image of the service Carrier: an image the node has,
// so that no extra image is pulled nor built on a customer's VM.
type Forward struct {
	To      string   // the other node's private address
	Roles   []string // the roles of the services it runs
	Carrier string   // a service of this node whose image carries the relay
	Binary  string   // the carto-appliance executable on the host
}

// forwarderBinary is where a forwarder container sees carto-appliance.
const forwarderBinary = "/usr/local/bin/carto-appliance-forward"

// ForwarderPrefix names the forwarder standing in for a service of
// another node ("peer-maps-api").
const ForwarderPrefix = "peer-"

// peerPorts reads x-carto-peer-port: "PORT" or "HOST:CONTAINER".
func peerPorts(v string) (host, container string, err error) {
	host, container, found := strings.Cut(v, ":")
	if !found {
		container = host
	}
	for _, p := range []string{host, container} {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", "", fmt.Errorf("%s %q: give PORT or HOST:CONTAINER, ports between 1 and 65535", extPeerPort, v)
		}
	}
	return host, container, nil
}

// RenderCompose turns the release's compose template into this node's
// docker-compose.yml: services of other roles and embedded databases switched
// off in .env are dropped along with every depends_on pointing at them, the
// template's own x-carto-* keys are removed, and the appliance's labels are
// added. Interpolation is left to compose, so the file stays free of secrets.
func RenderCompose(template []byte, opts RenderOptions) ([]byte, error) {
	role := opts.Role
	if role == "" {
		role = RoleAll
	}
	runs := func(svcRole string) bool {
		if len(opts.ServiceRoles) > 0 {
			return slices.Contains(opts.ServiceRoles, svcRole)
		}
		return role == RoleAll || svcRole == role
	}
	var doc map[string]any
	if err := yaml.Unmarshal(template, &doc); err != nil {
		return nil, fmt.Errorf("parsing the release's compose template: %w", err)
	}
	services, ok := doc["services"].(map[string]any)
	if !ok || len(services) == 0 {
		return nil, fmt.Errorf("the release's compose template has no services")
	}
	for k := range doc {
		if strings.HasPrefix(k, "x-") {
			delete(doc, k)
		}
	}
	dropped := map[string]bool{}
	forwards := map[string]string{} // service -> "HOST:CONTAINER" of the node it runs on
	for name, raw := range services {
		svc, ok := raw.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("compose template: service %q is not a mapping", name)
		}
		svcRole, _ := svc[extRole].(string)
		if svcRole == "" {
			return nil, fmt.Errorf("compose template: service %q has no %s", name, extRole)
		}
		if !runs(svcRole) {
			dropped[name] = true
		}
		if v, ok := svc[extPeerPort].(string); ok {
			host, container, err := peerPorts(v)
			if err != nil {
				return nil, fmt.Errorf("compose template: service %q: %w", name, err)
			}
			switch {
			case !dropped[name] && opts.PeerAddress != "":
				ports, _ := svc["ports"].([]any)
				svc["ports"] = append(ports, opts.PeerAddress+":"+host+":"+container)
			case dropped[name] && opts.Forward != nil && slices.Contains(opts.Forward.Roles, svcRole):
				forwards[name] = host + ":" + container
			}
		}
		if key, ok := svc[extEmbedded].(string); ok && opts.Env[key] == "0" {
			dropped[name] = true
		}
		if target, ok := svc[extHTTPSPort].(string); ok && opts.TLSOffload {
			svc["ports"] = withoutTarget(svc["ports"], target)
		}
		if target, ok := svc[extHTTPPort].(string); ok && opts.HTTPByAgent {
			svc["ports"] = withoutTarget(svc["ports"], target)
		}
		reload, _ := svc[extReload].(string)
		for k := range svc {
			if strings.HasPrefix(k, "x-") {
				delete(svc, k)
			}
		}
		labels, _ := svc["labels"].(map[string]any)
		if labels == nil {
			labels = map[string]any{}
		}
		if reload != "" {
			labels[LabelReload] = reload
		}
		labels[LabelVersion] = opts.Version
		labels[LabelRole] = role
		svc["labels"] = labels
	}
	for name := range dropped {
		delete(services, name)
	}
	if err := addForwarders(services, forwards, opts, role); err != nil {
		return nil, err
	}
	for _, raw := range services {
		svc := raw.(map[string]any)
		deps, ok := svc["depends_on"].(map[string]any)
		if !ok {
			continue
		}
		for dep := range deps {
			if dropped[dep] {
				delete(deps, dep)
			}
		}
		if len(deps) == 0 {
			delete(svc, "depends_on")
		}
	}
	if len(services) == 0 {
		return nil, fmt.Errorf("no service of the release runs on a node with role %q", role)
	}
	var buf bytes.Buffer
	buf.WriteString("# Generated by carto-appliance for this node; do not edit by hand.\n" +
		"# Change customer.env or appliance.yaml and run `carto-appliance config apply`.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("writing the compose file: %w", err)
	}
	return buf.Bytes(), nil
}

// addForwarders adds a forwarder for each service of forwards, under its
// name on the stack's network.
func addForwarders(services map[string]any, forwards map[string]string, opts RenderOptions, role string) error {
	if len(forwards) == 0 {
		return nil
	}
	f := opts.Forward
	carrier, ok := services[f.Carrier].(map[string]any)
	if !ok {
		return fmt.Errorf("compose template: no service %q on this node to carry the forwarders", f.Carrier)
	}
	for name, ports := range forwards {
		host, container, _ := strings.Cut(ports, ":")
		to := net.JoinHostPort(f.To, host)
		relay := []any{forwarderBinary, "forward", "--listen", ":" + container, "--to", to}
		services[ForwarderPrefix+name] = map[string]any{
			"image":      carrier["image"],
			"entrypoint": relay,
			"command":    []any{},
			"volumes":    []any{f.Binary + ":" + forwarderBinary + ":ro"},
			"networks":   map[string]any{"default": map[string]any{"aliases": []any{name}}},
			"restart":    "unless-stopped",
			// Healthy while the other node's service accepts connections.
			"healthcheck": map[string]any{
				"test":     []any{"CMD", forwarderBinary, "forward", "--check", to},
				"interval": "5s", "timeout": "5s", "retries": 3, "start_period": "10s",
			},
			"labels": map[string]any{LabelVersion: opts.Version, LabelRole: role},
		}
	}
	return nil
}

// withoutTarget drops the short-syntax port mappings to a container port
// ("HOST:PORT:TARGET").
func withoutTarget(ports any, target string) any {
	list, ok := ports.([]any)
	if !ok {
		return ports
	}
	var out []any
	for _, p := range list {
		if s, ok := p.(string); ok && (s == target || strings.HasSuffix(s, ":"+target)) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// Load reads <dir>/docker-compose.yml and <dir>/.env the way `docker compose
// -p <name>` run in dir does (same compose-go options and post-processing),
// so that the config hashes computed from the result equal compose's. The OS
// environment is deliberately not read: .env is the whole truth.
func Load(ctx context.Context, dir, name string) (*types.Project, error) {
	composePath := filepath.Join(dir, ComposeFileName)
	if _, err := os.Stat(composePath); err != nil {
		return nil, fmt.Errorf("loading the stack: %w", err)
	}
	opts, err := cli.NewProjectOptions([]string{composePath},
		cli.WithWorkingDirectory(dir),
		cli.WithEnvFiles(),
		cli.WithDotEnv,
		cli.WithName(name),
		cli.WithResolvedPaths(true),
		cli.WithoutEnvironmentResolution,
	)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", composePath, err)
	}
	p, err := opts.LoadProject(ctx)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", composePath, err)
	}
	if p, err = p.WithServicesEnabled(); err != nil {
		return nil, fmt.Errorf("loading %s: %w", composePath, err)
	}
	for svcName, s := range p.Services {
		s.CustomLabels = map[string]string{
			labelProject:     p.Name,
			labelService:     svcName,
			labelComposeVer:  composeVersion,
			labelWorkingDir:  p.WorkingDir,
			labelConfigFiles: strings.Join(p.ComposeFiles, ","),
			labelOneoff:      "False",
		}
		p.Services[svcName] = s
	}
	if p, err = p.WithSelectedServices(nil); err != nil {
		return nil, fmt.Errorf("loading %s: %w", composePath, err)
	}
	p = p.WithoutUnnecessaryResources()
	if p, err = p.WithServicesEnvironmentResolved(true); err != nil {
		return nil, fmt.Errorf("loading %s: reading the services' env files: %w", composePath, err)
	}
	if err := checkSupported(p); err != nil {
		return nil, err
	}
	return p, nil
}

// ComposeFileName is the generated compose file in the config dir.
const ComposeFileName = "docker-compose.yml"

// serviceNames returns the project's services sorted by name.
func serviceNames(p *types.Project) []string {
	names := make([]string, 0, len(p.Services))
	for n := range p.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// PeerPorts are the host ports a node running the template's services
// of role publishes on its private address for the next node
// (x-carto-peer-port), sorted.
func PeerPorts(template []byte, role string) ([]int, error) {
	var doc struct {
		Services map[string]map[string]any `yaml:"services"`
	}
	if err := yaml.Unmarshal(template, &doc); err != nil {
		return nil, fmt.Errorf("parsing the release's compose template: %w", err)
	}
	var out []int
	for name, svc := range doc.Services {
		v, ok := svc[extPeerPort].(string)
		if r, _ := svc[extRole].(string); !ok || r != role {
			continue
		}
		host, _, err := peerPorts(v)
		if err != nil {
			return nil, fmt.Errorf("compose template: service %q: %w", name, err)
		}
		n, _ := strconv.Atoi(host)
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

// Hostnames returns the names the template's services are reached by on
// the stack's network (service names and network aliases), sorted: traffic
// to them must never go through a proxy.
func Hostnames(template []byte) ([]string, error) {
	var doc struct {
		Services map[string]struct {
			Networks any `yaml:"networks"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(template, &doc); err != nil {
		return nil, fmt.Errorf("parsing the release's compose template: %w", err)
	}
	var names []string
	for name, svc := range doc.Services {
		names = append(names, name)
		if nets, ok := svc.Networks.(map[string]any); ok {
			for _, n := range nets {
				if cfg, ok := n.(map[string]any); ok {
					if aliases, ok := cfg["aliases"].([]any); ok {
						for _, a := range aliases {
							if s, ok := a.(string); ok {
								names = append(names, s)
							}
						}
					}
				}
			}
		}
	}
	sort.Strings(names)
	return names, nil
}
