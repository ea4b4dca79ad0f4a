package vm

import (
	"context"
	"fmt"
	"net/netip"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// Net is a user-defined bridge network for one scenario's VMs: each VM
// gets its own address on it, and they reach each other by address or by
// their Options.Name (the engine's DNS answers for it on this network).
type Net struct {
	// Name is the engine's name for the network: "cartovm-<name>-<random>",
	// so that concurrent runs of one scenario do not collide. Give it as
	// Options.Network.
	Name string
	ID   string
	// Subnet is the engine-chosen IPv4 subnet.
	Subnet netip.Prefix
	// Gateway is the host's address on the network: a server on the host
	// listening there (or on 0.0.0.0) is reachable from the VMs.
	Gateway netip.Addr

	cli *client.Client
}

// Network creates a bridge network for a scenario. Remove it when done
// (NewNetwork does so at the end of a test).
func Network(ctx context.Context, cli *client.Client, name string) (*Net, error) {
	return newNetwork(ctx, cli, name, false)
}

// KeptNetwork is Network for kept VMs (Options.Keep): RemoveKept removes it.
func KeptNetwork(ctx context.Context, cli *client.Client, name string) (*Net, error) {
	return newNetwork(ctx, cli, name, true)
}

func newNetwork(ctx context.Context, cli *client.Client, name string, keep bool) (*Net, error) {
	full := "cartovm-" + name + "-" + randomSuffix()
	res, err := cli.NetworkCreate(ctx, full, client.NetworkCreateOptions{
		Driver: "bridge",
		Labels: ownerLabels(name, keep),
	})
	if err != nil {
		return nil, fmt.Errorf("creating network %q: %w", full, err)
	}
	n := &Net{Name: full, ID: res.ID, cli: cli}
	insp, err := cli.NetworkInspect(ctx, res.ID, client.NetworkInspectOptions{})
	if err != nil {
		n.Remove(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("inspecting network %q: %w", full, err)
	}
	for _, c := range insp.Network.IPAM.Config {
		if c.Subnet.Addr().Is4() {
			n.Subnet, n.Gateway = c.Subnet, c.Gateway
			break
		}
	}
	return n, nil
}

// Remove removes the network; it must have no VM left on it. A network
// already gone is not an error.
func (n *Net) Remove(ctx context.Context) error {
	if _, err := n.cli.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("removing network %q: %w", n.Name, err)
	}
	return nil
}
