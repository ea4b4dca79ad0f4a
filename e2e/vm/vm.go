// Package vm runs "fresh VMs" for end-to-end scenarios: containers with
// systemd as PID 1 and their own Docker Engine 20.10, each with its own
// address on a scenario's bridge network, standing in for the Debian 12
// machines the appliance is installed on.
//
// A VM is a container of the image EnsureImage builds (e2e/images/vm),
// run the way ../shared/TESTBED.md found to work on these machines: the
// host's cgroup namespace and /sys/fs/cgroup, tmpfs /run, no seccomp or
// AppArmor profile, /dev/fuse, and every capability the host has but
// SYS_RESOURCE, PERFMON, BPF and CHECKPOINT_RESTORE (--privileged fails
// here). Its /var/lib/docker is a Docker volume, so that the inner engine
// can use overlay2. Everything the package creates carries Label, and
// Prune removes what a killed test left behind.
package vm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

const (
	// Label is on every container, volume and network this package
	// creates; its value is the name the caller gave.
	Label = "org.cartodb.testbed.vm"
	// OwnerLabel holds the process ID of the test that created the object;
	// Prune removes objects whose process is gone. Kept objects hold
	// keptOwner instead.
	OwnerLabel = "org.cartodb.testbed.vm.owner"
	// keptOwner owns the objects that outlive their process (the demo's):
	// Prune leaves them, RemoveKept removes them.
	keptOwner = "kept"
)

// DefaultBootTimeout bounds Start and Reboot when Options.BootTimeout is 0.
// A boot takes a few seconds on these machines; the margin is for a loaded
// shared host (parallel scenarios on 2 cores have made one docker exec
// take a minute).
const DefaultBootTimeout = 3 * time.Minute

// Options describe a VM. Name and Network are required.
//
// There is no host-network mode: an inner engine in the host's network
// namespace changes the host's networking. With its defaults it would share
// the host engine's docker0 and rebuild the DOCKER iptables chains; with
// "bridge": "none" it deletes docker0 at start (tried: it did, under the
// host engine's containers). To reach a server on the host's loopback,
// such as the test registry, use ForwardHostPort.
type Options struct {
	// Name is the VM's hostname and its DNS name on Network. The container
	// is named "cartovm-<Name>-<random>".
	Name string
	// Network is the name of the network to attach to (Net.Name).
	Network string
	// Memory limits the VM, its inner engine and containers included, in
	// bytes. Default: no limit.
	Memory int64
	// Volumes are extra mounts in `docker run -v` form, "SRC:DST[:ro]",
	// where SRC is a host path or a volume name.
	Volumes []string
	// Image defaults to EnsureImage's.
	Image string
	// BootTimeout bounds the wait for systemd and the inner engine, at
	// Start and at each Reboot. Default: DefaultBootTimeout.
	BootTimeout time.Duration
	// Keep makes the VM outlive the process that started it (the demo's,
	// which `make check` must not remove): Prune leaves it alone and
	// RemoveKept removes it.
	Keep bool
}

// VM is a running VM. Its methods may be called from several goroutines,
// but Reboot and Remove not while others run.
type VM struct {
	// Name is Options.Name.
	Name string
	// ID is the container's ID; Container its name.
	ID, Container string

	cli    *client.Client
	opts   Options
	volume string // the inner engine's /var/lib/docker

	mu       sync.Mutex
	ip       string       // guarded by mu
	gateway  string       // guarded by mu: the host's address on the network
	boot     Boot         // guarded by mu
	forwards []*forwarder // guarded by mu: ForwardHostPort's
}

// Boot describes the VM's last boot.
type Boot struct {
	// State is what `systemctl is-system-running` said: "running", or
	// "degraded" when some unit failed (FailedUnits).
	State       string
	FailedUnits []string
	// Took is from starting the container until the inner engine answered.
	Took time.Duration
}

// Start creates and boots a VM, waiting until systemd reports the system
// running (or degraded: see Boot) and the inner engine answers. On failure
// it removes what it created; the error carries the VM's logs.
func Start(ctx context.Context, cli *client.Client, opts Options) (*VM, error) {
	if opts.Name == "" {
		return nil, errors.New("starting a VM: Options.Name is empty")
	}
	if opts.Network == "" {
		return nil, fmt.Errorf("starting VM %q: Options.Network is empty", opts.Name)
	}
	if opts.BootTimeout == 0 {
		opts.BootTimeout = DefaultBootTimeout
	}
	if opts.Image == "" {
		ref, err := EnsureImage(ctx, cli)
		if err != nil {
			return nil, err
		}
		opts.Image = ref
	}
	caps, err := hostCaps()
	if err != nil {
		return nil, err
	}
	v := &VM{Name: opts.Name, Container: "cartovm-" + opts.Name + "-" + randomSuffix(), cli: cli, opts: opts}
	v.volume = v.Container + "-docker"
	labels := ownerLabels(opts.Name, opts.Keep)

	if _, err := cli.VolumeCreate(ctx, client.VolumeCreateOptions{Name: v.volume, Labels: labels}); err != nil {
		return nil, fmt.Errorf("creating volume %q for VM %q: %w", v.volume, opts.Name, err)
	}
	stopTimeout := 30
	cfg := &container.Config{
		Image:       opts.Image,
		Hostname:    opts.Name,
		Labels:      labels,
		StopSignal:  "SIGRTMIN+3", // systemd's "halt": a clean shutdown on docker stop/restart
		StopTimeout: &stopTimeout,
		// A terminal gives systemd a /dev/console for its boot and shutdown
		// status lines, which the container's log keeps: the one report
		// left when a VM dies (Logs). Plain, without colours.
		Tty: true,
		Env: []string{"SYSTEMD_COLORS=0"},
	}
	hc := &container.HostConfig{
		NetworkMode:  container.NetworkMode(opts.Network),
		CgroupnsMode: container.CgroupnsModeHost,
		Binds:        append([]string{"/sys/fs/cgroup:/sys/fs/cgroup:rw"}, opts.Volumes...),
		Mounts:       []mount.Mount{{Type: mount.TypeVolume, Source: v.volume, Target: "/var/lib/docker"}},
		Tmpfs:        map[string]string{"/run": "", "/run/lock": ""},
		SecurityOpt:  []string{"seccomp=unconfined", "apparmor=unconfined"},
		CapAdd:       caps,
		Resources: container.Resources{
			Memory:  opts.Memory,
			Devices: []container.DeviceMapping{{PathOnHost: "/dev/fuse", PathInContainer: "/dev/fuse", CgroupPermissions: "rwm"}},
		},
	}
	nc := &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
		opts.Network: {Aliases: []string{opts.Name}},
	}}
	res, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: v.Container, Config: cfg, HostConfig: hc, NetworkingConfig: nc,
	})
	if err != nil {
		v.Remove(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("creating VM %q: %w", opts.Name, err)
	}
	v.ID = res.ID
	start := time.Now()
	if _, err := cli.ContainerStart(ctx, v.ID, client.ContainerStartOptions{}); err != nil {
		v.Remove(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("starting VM %q: %w", opts.Name, err)
	}
	if err := v.waitBooted(ctx, start); err != nil {
		v.Remove(context.WithoutCancel(ctx))
		return nil, err
	}
	return v, nil
}

// Reboot restarts the container, so that systemd shuts down cleanly and
// boots again, and waits as Start does. The root filesystem and the inner
// engine's volume persist, as a disk would; /run starts empty.
//
// The kernel's boot ID (/proc/sys/kernel/random/boot_id) is the host's and
// does not change: `journalctl -b` covers every boot of the VM.
func (v *VM) Reboot(ctx context.Context) error {
	timeout := 30
	start := time.Now()
	if _, err := v.cli.ContainerRestart(ctx, v.ID, client.ContainerRestartOptions{Timeout: &timeout}); err != nil {
		return fmt.Errorf("rebooting VM %q: %w", v.Name, err)
	}
	return v.waitBooted(ctx, start)
}

// waitBooted polls until systemd says running or degraded and the inner
// engine answers, bounded by Options.BootTimeout, then records the boot and
// the VM's address.
func (v *VM) waitBooted(ctx context.Context, start time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, v.opts.BootTimeout)
	defer cancel()
	var state, last string
	for {
		if state == "" {
			out, _, _, err := v.Exec(ctx, "systemctl", "is-system-running")
			switch s := strings.TrimSpace(out); {
			case err != nil:
				last = err.Error()
			case s == "running" || s == "degraded":
				state = s
			default:
				last = "systemctl is-system-running: " + s // initializing, starting; or no bus yet
			}
		}
		if state != "" {
			out, errOut, code, err := v.Exec(ctx, "docker", "info", "--format", "{{.ServerVersion}}")
			if err == nil && code == 0 {
				break
			}
			last = fmt.Sprintf("docker info: %s%s%v", out, errOut, err)
		}
		select {
		case <-ctx.Done():
			logs, _ := v.Logs(context.WithoutCancel(ctx))
			return fmt.Errorf("VM %q did not boot within %s (last: %s): %w\n%s", v.Name, v.opts.BootTimeout, strings.TrimSpace(last), ctx.Err(), logs)
		case <-time.After(250 * time.Millisecond):
		}
	}
	b := Boot{State: state, Took: time.Since(start)}
	if state == "degraded" {
		out, _, _, _ := v.Exec(ctx, "systemctl", "list-units", "--failed", "--plain", "--no-legend")
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				b.FailedUnits = append(b.FailedUnits, f[0])
			}
		}
	}
	insp, err := v.cli.ContainerInspect(ctx, v.ID, client.ContainerInspectOptions{})
	if err != nil {
		return fmt.Errorf("inspecting VM %q: %w", v.Name, err)
	}
	ep := insp.Container.NetworkSettings.Networks[v.opts.Network]
	if ep == nil || !ep.IPAddress.IsValid() || !ep.Gateway.IsValid() {
		return fmt.Errorf("VM %q has no address on network %q", v.Name, v.opts.Network)
	}
	v.mu.Lock()
	v.ip, v.gateway, v.boot = ep.IPAddress.String(), ep.Gateway.String(), b
	v.mu.Unlock()
	return nil
}

// IP is the VM's address on its network: ports published by the VM's
// inner engine answer there, from the host and from the other VMs. It may
// change on Reboot.
func (v *VM) IP() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.ip
}

// NetNS is the path of the VM's network namespace as the host sees it
// (/proc/PID/ns/net), for a host program that must see the network as the
// VM does and nothing else, such as a browser that the host's own network
// changes (Docker creating bridges for other scenarios) would disturb. It
// changes on Reboot.
func (v *VM) NetNS(ctx context.Context) (string, error) {
	insp, err := v.cli.ContainerInspect(ctx, v.ID, client.ContainerInspectOptions{})
	if err != nil {
		return "", fmt.Errorf("inspecting VM %q: %w", v.Name, err)
	}
	st := insp.Container.State
	if st == nil || !st.Running || st.Pid == 0 {
		return "", fmt.Errorf("VM %q is not running", v.Name)
	}
	return "/proc/" + strconv.Itoa(st.Pid) + "/ns/net", nil
}

// Boot describes the VM's last boot (Start or Reboot).
func (v *VM) Boot() Boot {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.boot
}

// Remove removes the VM's container (killing it: the inner containers die
// with it) and its inner engine's volume. What is already gone is not an
// error.
func (v *VM) Remove(ctx context.Context) error {
	var errs []error
	v.mu.Lock()
	for _, f := range v.forwards {
		f.Close()
	}
	v.forwards = nil
	v.mu.Unlock()
	if v.ID != "" {
		_, err := v.cli.ContainerRemove(ctx, v.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("removing VM %q: %w", v.Name, err))
		}
	}
	if _, err := v.cli.VolumeRemove(ctx, v.volume, client.VolumeRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("removing volume %q of VM %q: %w", v.volume, v.Name, err))
	}
	return errors.Join(errs...)
}

// Prune removes the VMs, volumes and networks of this package whose
// creating process is gone (a test killed by its timeout runs no cleanup).
// Those of live processes, this one included, and kept ones are left alone.
func Prune(ctx context.Context, cli *client.Client) error {
	return remove(ctx, cli, func(labels map[string]string) bool { return !ownerAlive(labels) })
}

// RemoveKept removes the kept VMs (Options.Keep), their volumes and
// networks.
func RemoveKept(ctx context.Context, cli *client.Client) error {
	return remove(ctx, cli, func(labels map[string]string) bool { return labels[OwnerLabel] == keptOwner })
}

// remove removes this package's containers, volumes and networks whose
// labels gone says are to go.
func remove(ctx context.Context, cli *client.Client, gone func(map[string]string) bool) error {
	var errs []error
	f := make(client.Filters).Add("label", Label)
	cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return fmt.Errorf("listing VMs: %w", err)
	}
	for _, c := range cs.Items {
		if !gone(c.Labels) {
			continue
		}
		if _, err := cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("removing leftover VM %s: %w", c.ID[:12], err))
		}
	}
	vs, err := cli.VolumeList(ctx, client.VolumeListOptions{Filters: f})
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("listing VM volumes: %w", err))...)
	}
	for _, vol := range vs.Items {
		if !gone(vol.Labels) {
			continue
		}
		if _, err := cli.VolumeRemove(ctx, vol.Name, client.VolumeRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("removing leftover volume %q: %w", vol.Name, err))
		}
	}
	ns, err := cli.NetworkList(ctx, client.NetworkListOptions{Filters: f})
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("listing VM networks: %w", err))...)
	}
	for _, n := range ns.Items {
		if !gone(n.Labels) {
			continue
		}
		if _, err := cli.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("removing leftover network %q: %w", n.Name, err))
		}
	}
	return errors.Join(errs...)
}

// ownerLabels label an object created for name by this process, or kept.
func ownerLabels(name string, keep bool) map[string]string {
	owner := strconv.Itoa(os.Getpid())
	if keep {
		owner = keptOwner
	}
	return map[string]string{Label: name, OwnerLabel: owner}
}

// ownerAlive reports whether the process named by labels' OwnerLabel still
// runs (or cannot be told, or the object is kept: then it is left alone).
func ownerAlive(labels map[string]string) bool {
	pid, err := strconv.Atoi(labels[OwnerLabel])
	if err != nil || pid <= 0 {
		return true
	}
	_, err = os.Stat("/proc/" + strconv.Itoa(pid))
	return !errors.Is(err, os.ErrNotExist)
}

// randomSuffix is 6 hex digits, to keep the names of concurrent runs apart.
func randomSuffix() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}
