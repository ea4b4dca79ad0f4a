package stack

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/docker/go-units"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
)

// The compose fields the engine turns into container settings. A release
// template using any other field is refused by checkSupported rather than
// run without it: silently dropping, say, a memory limit would be worse.
var supportedFields = map[string]bool{
	"image": true, "command": true, "entrypoint": true, "environment": true,
	"env_file": true, "labels": true, "ports": true, "volumes": true,
	"restart": true, "logging": true, "healthcheck": true, "networks": true,
	"extra_hosts": true, "shm_size": true, "mem_limit": true,
	"mem_reservation": true, "user": true, "working_dir": true,
	"cap_add": true, "cap_drop": true, "read_only": true,
	"stop_grace_period": true, "stop_signal": true, "tmpfs": true,
	"ulimits": true, "hostname": true, "init": true, "sysctls": true,
	"security_opt": true, "depends_on": true,
}

// checkSupported refuses a project that uses compose features the engine
// does not implement, naming the service and the field.
func checkSupported(p *types.Project) error {
	for _, name := range serviceNames(p) {
		raw, err := json.Marshal(p.Services[name])
		if err != nil {
			return fmt.Errorf("checking service %q: %w", name, err)
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(raw, &fields); err != nil {
			return fmt.Errorf("checking service %q: %w", name, err)
		}
		var bad []string
		for f := range fields {
			if !supportedFields[f] {
				bad = append(bad, f)
			}
		}
		if len(bad) > 0 {
			sort.Strings(bad)
			return fmt.Errorf("service %q uses compose field(s) %s that carto-appliance does not support; remove them from the release template", name, strings.Join(bad, ", "))
		}
		if s := p.Services[name]; s.Image == "" {
			return fmt.Errorf("service %q has no image", name)
		}
	}
	return nil
}

// createConfig is everything ContainerCreate needs for one service.
type createConfig struct {
	Config     *container.Config
	HostConfig *container.HostConfig
	Networking *network.NetworkingConfig
}

func containerName(project, service string) string {
	return project + "-" + service + "-1"
}

// toCreateConfig maps a compose service to Engine API settings the way
// compose does (pkg/compose/create.go), for the fields of supportedFields.
func toCreateConfig(p *types.Project, s types.ServiceConfig, labels map[string]string) (*createConfig, error) {
	env := make([]string, 0, len(s.Environment))
	for _, k := range sortedKeys(s.Environment) {
		if v := s.Environment[k]; v != nil {
			env = append(env, k+"="+*v)
		} else {
			env = append(env, k)
		}
	}
	cfg := &container.Config{
		Hostname:     s.Hostname,
		User:         s.User,
		Cmd:          s.Command,
		Entrypoint:   s.Entrypoint,
		Image:        s.Image,
		WorkingDir:   s.WorkingDir,
		Env:          env,
		Labels:       labels,
		StopSignal:   s.StopSignal,
		ExposedPorts: network.PortSet{},
		AttachStdout: true,
		AttachStderr: true,
	}
	if s.StopGracePeriod != nil {
		secs := int(time.Duration(*s.StopGracePeriod).Seconds())
		cfg.StopTimeout = &secs
	}
	if hc := s.HealthCheck; hc != nil {
		h := &container.HealthConfig{Test: hc.Test}
		if hc.Disable {
			h.Test = []string{"NONE"}
		}
		if hc.Interval != nil {
			h.Interval = time.Duration(*hc.Interval)
		}
		if hc.Timeout != nil {
			h.Timeout = time.Duration(*hc.Timeout)
		}
		if hc.StartPeriod != nil {
			h.StartPeriod = time.Duration(*hc.StartPeriod)
		}
		if hc.StartInterval != nil {
			h.StartInterval = time.Duration(*hc.StartInterval)
		}
		if hc.Retries != nil {
			h.Retries = int(*hc.Retries)
		}
		cfg.Healthcheck = h
	}

	host := &container.HostConfig{
		CapAdd:         s.CapAdd,
		CapDrop:        s.CapDrop,
		Init:           s.Init,
		ReadonlyRootfs: s.ReadOnly,
		RestartPolicy:  restartPolicy(s.Restart),
		ShmSize:        int64(s.ShmSize),
		Sysctls:        s.Sysctls,
		ExtraHosts:     s.ExtraHosts.AsList(":"),
		SecurityOpt:    s.SecurityOpt,
		PortBindings:   network.PortMap{},
		Tmpfs:          map[string]string{},
		Resources: container.Resources{
			Memory:            int64(s.MemLimit),
			MemoryReservation: int64(s.MemReservation),
		},
	}
	if s.Logging != nil {
		host.LogConfig = container.LogConfig{Type: s.Logging.Driver, Config: s.Logging.Options}
	}
	for _, t := range s.Tmpfs {
		path, opts, _ := strings.Cut(t, ":")
		host.Tmpfs[path] = opts
	}
	for name, u := range s.Ulimits {
		soft, hard := u.Soft, u.Hard
		if u.Single != 0 {
			soft, hard = u.Single, u.Single
		}
		host.Ulimits = append(host.Ulimits, &units.Ulimit{Name: name, Soft: int64(soft), Hard: int64(hard)})
	}
	for _, pc := range s.Ports {
		proto := pc.Protocol
		if proto == "" {
			proto = "tcp"
		}
		port, err := network.ParsePort(fmt.Sprintf("%d/%s", pc.Target, proto))
		if err != nil {
			return nil, fmt.Errorf("service %q: port %d/%s: %w", s.Name, pc.Target, proto, err)
		}
		cfg.ExposedPorts[port] = struct{}{}
		if pc.Published == "" {
			continue
		}
		b := network.PortBinding{HostPort: pc.Published}
		if pc.HostIP != "" {
			ip, err := netip.ParseAddr(pc.HostIP)
			if err != nil {
				return nil, fmt.Errorf("service %q: port %s: host address %q: %w", s.Name, pc.Published, pc.HostIP, err)
			}
			b.HostIP = ip
		}
		host.PortBindings[port] = append(host.PortBindings[port], b)
	}
	for _, v := range s.Volumes {
		m := mount.Mount{Target: v.Target, ReadOnly: v.ReadOnly}
		switch v.Type {
		case types.VolumeTypeBind:
			m.Type, m.Source = mount.TypeBind, v.Source
			if v.Bind != nil && v.Bind.CreateHostPath {
				// compose creates a missing bind source; Mounts would refuse it,
				// the legacy Binds form creates it: use that, as compose does.
				mode := "rw"
				if v.ReadOnly {
					mode = "ro"
				}
				host.Binds = append(host.Binds, v.Source+":"+v.Target+":"+mode)
				continue
			}
		case types.VolumeTypeVolume:
			m.Type = mount.TypeVolume
			if v.Source != "" {
				vol, ok := p.Volumes[v.Source]
				if !ok {
					return nil, fmt.Errorf("service %q mounts undeclared volume %q", s.Name, v.Source)
				}
				m.Source = vol.Name
			}
		case types.VolumeTypeTmpfs:
			m.Type = mount.TypeTmpfs
		default:
			return nil, fmt.Errorf("service %q: volume type %q is not supported", s.Name, v.Type)
		}
		host.Mounts = append(host.Mounts, m)
	}

	// One network per stack: compose's primary network is the only one an
	// API 1.41 engine accepts at create time.
	netKey := "default"
	if len(s.Networks) > 1 {
		return nil, fmt.Errorf("service %q joins %d networks; carto-appliance supports one", s.Name, len(s.Networks))
	}
	for k := range s.Networks {
		netKey = k
	}
	nw, ok := p.Networks[netKey]
	if !ok {
		return nil, fmt.Errorf("service %q joins undeclared network %q", s.Name, netKey)
	}
	aliases := []string{containerName(p.Name, s.Name), s.Name}
	if c := s.Networks[netKey]; c != nil {
		aliases = append(aliases, c.Aliases...)
	}
	host.NetworkMode = container.NetworkMode(nw.Name)
	networking := &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
		nw.Name: {Aliases: aliases},
	}}
	return &createConfig{Config: cfg, HostConfig: host, Networking: networking}, nil
}

func restartPolicy(r string) container.RestartPolicy {
	name, attempts, _ := strings.Cut(r, ":")
	n, _ := strconv.Atoi(attempts)
	switch name {
	case "", "no", "none":
		return container.RestartPolicy{Name: container.RestartPolicyDisabled}
	case "on-failure":
		return container.RestartPolicy{Name: container.RestartPolicyOnFailure, MaximumRetryCount: n}
	case "always":
		return container.RestartPolicy{Name: container.RestartPolicyAlways}
	default:
		return container.RestartPolicy{Name: container.RestartPolicyUnlessStopped}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
