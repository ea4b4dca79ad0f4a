package stack

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"strconv"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// Firewall is what a roll needs of the host's packet filter (the firewall
// package's rules, set by the installer). Engines without one recreate the
// plain way: a service's ports refuse connections for the moment between
// its old container and its new one, and a router may send a request to a
// container that is going away.
type Firewall interface {
	// HandOver sends new connections to the host ports straight to the
	// given container addresses, ahead of Docker's own port publishing.
	HandOver(ctx context.Context, project string, rs []PortRedirect) error
	// EndHandover gives the ports back to Docker's publishing.
	EndHandover(ctx context.Context, project string) error
	// Fence makes new TCP connections from the network namespace of
	// process pid to addr fail at once; open ones are left alone.
	Fence(ctx context.Context, pid int, addr netip.Addr) error
	// Unfence lifts one fence, ClearFences every fence in a namespace.
	Unfence(ctx context.Context, pid int, addr netip.Addr) error
	ClearFences(ctx context.Context, pid int) error
	// Neighbours are the IPv4 addresses the namespace of process pid has
	// link-layer entries for.
	Neighbours(ctx context.Context, pid int) ([]netip.Addr, error)
}

// PortRedirect is one published TCP port handed to a container address.
type PortRedirect struct {
	HostIP   netip.Addr // unspecified: every local address
	HostPort int
	To       netip.AddrPort
}

// The router's handover. The router publishes the host ports, which two
// containers cannot do at once, so its replacement goes through a bridge
// container:
//
//  1. B, the new configuration with its ports published on loopback only
//     (so that Docker lets forwarded traffic reach them), starts beside the
//     old router A and is awaited healthy;
//  2. the host ports are handed to B (Firewall.HandOver): new connections go to
//     B, open ones stay with A;
//  3. A is stopped with its stop signal and grace period (nginx: SIGQUIT,
//     graceful: it finishes its requests and closes kept-alive connections
//     between requests, never in the middle of one);
//  4. A', exactly the compose service (ports published by Docker, the
//     service's container name), starts and is awaited healthy, while the
//     handover still sends new connections to B;
//  5. the handover ends (new connections to A' through Docker's rules), and
//     B is stopped gracefully and removed.
//
// At every moment one healthy router accepts new connections, and the end
// state is what `docker compose up` would have made: nothing for compose to
// recreate, and nothing that depends on the appliance running to keep the
// ports answered (a reboot restores Docker's publishing, not the handover).

// handoverPorts lists the service's published ports as redirects without a
// destination, or false when one of them cannot be handed over (UDP, a
// range).
func handoverPorts(cfg *createConfig) ([]PortRedirect, bool) {
	var out []PortRedirect
	for port, bindings := range cfg.HostConfig.PortBindings {
		if port.Proto() != network.TCP {
			return nil, false
		}
		for _, b := range bindings {
			n, err := strconv.Atoi(b.HostPort)
			if err != nil || n < 1 || n > 65535 {
				return nil, false
			}
			out = append(out, PortRedirect{HostIP: b.HostIP, HostPort: n, To: netip.AddrPortFrom(netip.Addr{}, port.Num())})
		}
	}
	return out, len(out) > 0
}

// handoverable says whether the service is replaced through a handover.
func (c *converger) handoverable(s types.ServiceConfig, cfg *createConfig) bool {
	if c.e.Firewall == nil || isOneShot(s) || s.HealthCheck == nil || s.HealthCheck.Disable {
		return false
	}
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeVolume {
			return false
		}
	}
	_, ok := handoverPorts(cfg)
	return ok
}

// handover is ensureContainer's recreate of a service that publishes ports.
func (c *converger) handover(ctx context.Context, s types.ServiceConfig, old container.Summary, cfg *createConfig, name string) (outcome, string, error) {
	redirects, _ := handoverPorts(cfg)
	c.rep.Report(Event{Service: s.Name, Action: ActionRecreating, Detail: "a bridge container takes the new connections first"})
	bridgeCfg := *cfg
	bridgeHost := *cfg.HostConfig
	bridgeHost.PortBindings = network.PortMap{}
	for port := range maps.Keys(cfg.HostConfig.PortBindings) {
		bridgeHost.PortBindings[port] = []network.PortBinding{{HostIP: netip.AddrFrom4([4]byte{127, 0, 0, 1})}}
	}
	bridgeCfg.HostConfig = &bridgeHost
	bridgeName := old.ID[:12] + "_" + name
	bridge, err := c.e.create(ctx, bridgeName, &bridgeCfg)
	if err != nil {
		return outcomeNone, "", fmt.Errorf("recreating service %s: %w (the old container is still serving)", s.Name, err)
	}
	discard := func(id string) {
		c.e.api.ContainerRemove(context.WithoutCancel(ctx), id, client.ContainerRemoveOptions{Force: true})
	}
	if err := c.e.start(ctx, bridge); err != nil {
		discard(bridge)
		return outcomeNone, "", fmt.Errorf("starting the new container of service %s: %w (the old container is still serving)", s.Name, err)
	}
	if err := c.awaitReady(ctx, s, bridge); err != nil {
		discard(bridge)
		return outcomeNone, "", fmt.Errorf("%w (its new container was removed; the old one is still serving)", err)
	}
	addr, err := c.e.addressOf(ctx, bridge)
	if err == nil {
		for i := range redirects {
			redirects[i].To = netip.AddrPortFrom(addr, redirects[i].To.Port())
		}
		err = c.e.Firewall.HandOver(ctx, c.p.Name, redirects)
	}
	if err != nil {
		// Without the handover the replacement is the plain one: a
		// moment of refused connections, but the service is updated.
		c.rep.Report(Event{Service: s.Name, Action: ActionRecreating, Detail: "without a handover: " + err.Error()})
		c.e.Firewall.EndHandover(context.WithoutCancel(ctx), c.p.Name)
		discard(bridge)
		return c.recreate(ctx, s, old, cfg, name)
	}
	c.rep.Report(Event{Service: s.Name, Action: ActionStopping, Detail: "the old container, after its requests"})
	if err := c.e.removeContainer(ctx, old.ID, stopTimeout(s)); err != nil {
		return outcomeNone, "", fmt.Errorf("recreating service %s: removing the old container: %w (the new one is serving)", s.Name, err)
	}
	c.rep.Report(Event{Service: s.Name, Action: ActionCreating, Detail: "its container as compose defines it"})
	id, err := c.e.create(ctx, name, cfg)
	if err == nil {
		if err = c.e.start(ctx, id); err == nil {
			err = c.awaitReady(ctx, s, id)
		}
	}
	if err != nil {
		// The bridge container keeps the ports answered; the next
		// apply (or the upgrade's rollback) starts from here.
		return outcomeRecreated, id, fmt.Errorf("%w (the ports are still handed to its bridge container %s)", err, bridgeName)
	}
	if err := c.e.Firewall.EndHandover(ctx, c.p.Name); err != nil {
		return outcomeRecreated, id, fmt.Errorf("recreating service %s: giving the ports back to Docker: %w", s.Name, err)
	}
	c.rep.Report(Event{Service: s.Name, Action: ActionStopping, Detail: "its bridge container, after its requests"})
	if err := c.e.removeContainer(ctx, bridge, stopTimeout(s)); err != nil {
		return outcomeRecreated, id, fmt.Errorf("recreating service %s: removing its bridge container: %w", s.Name, err)
	}
	c.markRolled(s.Name)
	return outcomeRecreated, id, nil
}

// addressOf is the container's IPv4 address on its (one) network.
func (e *Engine) addressOf(ctx context.Context, id string) (netip.Addr, error) {
	insp, err := e.api.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("inspecting container %s: %w", id[:12], err)
	}
	if insp.Container.NetworkSettings != nil {
		if addrs := ipv4s(insp.Container.NetworkSettings.Networks); len(addrs) > 0 {
			return addrs[0], nil
		}
	}
	return netip.Addr{}, fmt.Errorf("container %s has no IPv4 address", id[:12])
}
