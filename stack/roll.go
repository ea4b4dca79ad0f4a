package stack

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// A roll replaces a stateless service's container new-before-old, so that
// the requests the router sends it keep succeeding:
//
//  1. the new container starts beside the old one, under the same network
//     aliases (Docker's DNS answers both), and is awaited healthy; if it
//     never is, it is removed and the old one goes on serving;
//  2. each router is reloaded (LabelReload) so that it resolves the name
//     again, to both containers, and its processes from before the reload
//     are awaited gone (they may hold the old answer alone); then the old
//     container's address is fenced in each router (Firewall.Fence): new
//     connections to it are refused at once and nginx passes the request
//     to the next address, while open ones finish;
//  3. the old container is stopped with its stop signal and grace period: a
//     well-behaved server stops accepting (the router retries elsewhere) and
//     finishes what it is serving;
//  4. each router is reloaded again, and its old processes awaited, so
//     that it resolves the name to the new container alone;
//  5. the new container takes the service's container name; the fences are
//     lifted at the end of the apply (an apply cut short lifts them at the
//     start of the next one).
//
// Rolled: long-running services with a healthcheck that publish no port and
// keep no named volume. Databases are recreated in place (a short pause of
// what depends on them), one-shot services simply run again, and a service
// that publishes host ports cannot have two containers at once.
func rollable(s types.ServiceConfig) bool {
	if isOneShot(s) || s.HealthCheck == nil || s.HealthCheck.Disable || len(s.Ports) > 0 {
		return false
	}
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeVolume {
			return false
		}
	}
	return s.NetworkMode == ""
}

// roll is ensureContainer's recreate of a rollable service; it returns the
// new container's ID once the new container is healthy and the old one gone.
func (c *converger) roll(ctx context.Context, s types.ServiceConfig, have container.Summary, cfg *createConfig, name string) (outcome, string, error) {
	c.rep.Report(Event{Service: s.Name, Action: ActionRecreating, Detail: "new container first, beside the old one"})
	tmp := have.ID[:12] + "_" + name
	// Until it is ready, the new container is not restarted by the
	// engine: one that fails exits once, with the one address read below,
	// and is seen to fail at once. Restarted, it would come back again
	// and again, each time under the service's name in Docker's DNS with
	// another address, which a router could learn and no fence covers.
	// It gets the service's restart policy once ready (and from the next
	// converge, should this one be cut short before: rename below).
	trial := *cfg
	hc := *cfg.HostConfig
	hc.RestartPolicy = container.RestartPolicy{Name: container.RestartPolicyDisabled}
	trial.HostConfig = &hc
	id, err := c.e.create(ctx, tmp, &trial)
	if err != nil {
		return outcomeNone, "", fmt.Errorf("recreating service %s: %w (the old container is still serving)", s.Name, err)
	}
	var addrs []netip.Addr
	discard := func() {
		c.discard(context.WithoutCancel(ctx), s, id, addrs)
	}
	if err := c.e.start(ctx, id); err != nil {
		discard()
		return outcomeNone, "", fmt.Errorf("starting the new container of service %s: %w (the old container is still serving)", s.Name, err)
	}
	// Read at once: a container that dies releases its addresses, which
	// routers may have learnt from Docker's DNS meanwhile.
	addrs = c.e.addresses(ctx, id)
	c.fences.clearNew(ctx, addrs)
	if err := c.awaitReady(ctx, s, id); err != nil {
		discard()
		return outcomeNone, "", fmt.Errorf("%w (its new container was removed; the old one is still serving)", err)
	}
	if err := c.e.restartPolicy(ctx, id, cfg.HostConfig.RestartPolicy); err != nil {
		discard()
		return outcomeNone, "", fmt.Errorf("recreating service %s: %w (its new container was removed; the old one is still serving)", s.Name, err)
	}
	if err := c.retire(ctx, s, have); err != nil {
		return outcomeRecreated, id, err
	}
	if _, err := c.e.api.ContainerRename(ctx, id, client.ContainerRenameOptions{NewName: name}); err != nil {
		return outcomeRecreated, id, fmt.Errorf("recreating service %s: renaming %s: %w", s.Name, tmp, err)
	}
	c.markRolled(s.Name)
	return outcomeRecreated, id, nil
}

// discard removes a new container that did not become ready. It was in
// Docker's DNS under the service's name for a while, and a router may hold
// its address (gone, or about to be): fenced there, so that a request
// fails over to the old container at once instead of hanging, and the
// routers reloaded to forget it.
func (c *converger) discard(ctx context.Context, s types.ServiceConfig, id string, addrs []netip.Addr) {
	routers, err := c.e.routers(ctx, c.p.Name, "")
	if err != nil {
		routers = nil
	}
	if c.e.Firewall != nil {
		for _, r := range routers {
			fenced := addrs
			if len(fenced) == 0 {
				// It died before its address could be read, yet a router
				// may have learnt it meanwhile: what the router talked to
				// that nothing holds now.
				fenced = c.deadNeighbours(ctx, r)
			}
			for _, addr := range fenced {
				c.fences.add(ctx, c.e.Firewall, r, addr)
			}
		}
	}
	c.e.api.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true})
	c.reloadRouters(ctx, s, routers)
}

// deadNeighbours are the addresses on the project's networks that router r
// has talked to lately (its link-layer entries) and that neither a running
// container nor a gateway holds now: a container that died before its
// address was read. Any doubt fences nothing.
func (c *converger) deadNeighbours(ctx context.Context, r router) []netip.Addr {
	seen, err := c.e.Firewall.Neighbours(ctx, r.pid)
	if err != nil || len(seen) == 0 {
		return nil
	}
	var subnets []netip.Prefix
	held := map[netip.Addr]bool{}
	for _, id := range c.netIDs {
		insp, err := c.e.api.NetworkInspect(ctx, id, client.NetworkInspectOptions{})
		if err != nil {
			return nil
		}
		for _, cfg := range insp.Network.IPAM.Config {
			if cfg.Subnet.IsValid() {
				subnets = append(subnets, cfg.Subnet)
				held[cfg.Subnet.Masked().Addr().Next()] = true // the default gateway
			}
			held[cfg.Gateway] = true
		}
		for _, ep := range insp.Network.Containers {
			held[ep.IPv4Address.Addr()] = true
		}
	}
	var dead []netip.Addr
	for _, a := range seen {
		if !held[a] && slices.ContainsFunc(subnets, func(p netip.Prefix) bool { return p.Contains(a) }) {
			dead = append(dead, a)
		}
	}
	return dead
}

// addresses are a container's IPv4 addresses, as it runs now.
func (e *Engine) addresses(ctx context.Context, id string) []netip.Addr {
	insp, err := e.api.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil || insp.Container.NetworkSettings == nil {
		return nil
	}
	return ipv4s(insp.Container.NetworkSettings.Networks)
}

// retire takes the old container out: fenced in the routers, stopped with
// its grace period, removed, then the routers reloaded.
func (c *converger) retire(ctx context.Context, s types.ServiceConfig, old container.Summary) error {
	routers, err := c.e.routers(ctx, c.p.Name, old.ID)
	if err != nil {
		return err
	}
	// A router may still hold the name's addresses from before the new
	// container joined (nginx caches an answer for its valid= time): only
	// the old address. Reloaded now, it resolves both, so that fencing the
	// old one leaves it the new one to fail over to.
	c.reloadRouters(ctx, s, routers)
	if c.e.Firewall == nil {
		routers = nil // nothing to fence with
	}
	for _, addr := range containerAddrs(old) {
		for _, r := range routers {
			if err := c.fences.add(ctx, c.e.Firewall, r, addr); err != nil {
				// Without the fence the roll still works; a router
				// holding the old address waits on it until its
				// connect timeout, then tries the next one.
				c.rep.Report(Event{Service: s.Name, Action: ActionWaiting, Detail: "could not fence the old container's address in the router: " + err.Error()})
			}
		}
	}
	c.rep.Report(Event{Service: s.Name, Action: ActionStopping, Detail: "the old container, after its requests"})
	if err := c.e.removeContainer(ctx, old.ID, stopTimeout(s)); err != nil {
		return fmt.Errorf("recreating service %s: removing the old container: %w", s.Name, err)
	}
	c.reloadRouters(ctx, s, routers)
	return nil
}

// reloadRouters has every router resolve its upstreams again. A failed
// reload is reported, not fatal: the router still serves with its cache.
func (c *converger) reloadRouters(ctx context.Context, s types.ServiceConfig, routers []router) {
	for _, r := range routers {
		if err := c.e.reload(ctx, r); err != nil {
			c.rep.Report(Event{Service: r.service, Action: ActionWaiting, Detail: "reload while " + s.Name + " is replaced: " + err.Error()})
		}
	}
}

// router is a running container whose service carries LabelReload.
type router struct {
	id, service string
	pid         int
	reload      []string
}

func (e *Engine) routers(ctx context.Context, project, except string) ([]router, error) {
	list, err := e.api.ContainerList(ctx, client.ContainerListOptions{
		Filters: make(client.Filters).Add("label", labelProject+"="+project).Add("label", LabelReload),
	})
	if err != nil {
		return nil, fmt.Errorf("listing the routers of project %s: %w", project, err)
	}
	var out []router
	for _, s := range list.Items {
		if s.ID == except || s.State != container.StateRunning {
			continue
		}
		insp, err := e.api.ContainerInspect(ctx, s.ID, client.ContainerInspectOptions{})
		if err != nil || insp.Container.State == nil || insp.Container.State.Pid == 0 {
			continue // gone or stopping: nothing to fence or reload
		}
		out = append(out, router{
			id: s.ID, service: s.Labels[labelService], pid: insp.Container.State.Pid,
			reload: strings.Fields(s.Labels[LabelReload]),
		})
	}
	return out, nil
}

// reload runs the router's reload command, waits for it to end, then for
// the router's processes from before the reload to be gone (reloadDrain at
// most): nginx's old workers keep the upstream addresses they resolved
// until they have finished their requests and exit.
func (e *Engine) reload(ctx context.Context, r router) error {
	if len(r.reload) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	before := processLeaves(r.pid)
	code, err := e.runExec(ctx, r.id, r.reload)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("%s exited with code %d", strings.Join(r.reload, " "), code)
	}
	drain := time.NewTimer(reloadDrain)
	defer drain.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		before = slices.DeleteFunc(before, func(p int) bool { return !alive(p) })
		if len(before) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-drain.C:
			// A process that does not go (a long request, a process
			// that is not one of the router's workers) does not
			// hold the roll up any longer: the fence still refuses
			// its new connections to the old address.
			return nil
		case <-tick.C:
		}
	}
}

// reloadDrain bounds the wait for a router's old processes after a reload.
const reloadDrain = 10 * time.Second

// processLeaves lists the processes under pid (pid included) that have no
// children: a router's workers, not its master process or an init. Read
// from the host's /proc; nothing when it cannot be read.
func processLeaves(pid int) []int {
	var leaves []int
	var walk func(p, depth int)
	walk = func(p, depth int) {
		kids := processChildren(p)
		if len(kids) == 0 || depth > 8 {
			leaves = append(leaves, p)
			return
		}
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	if processChildren(pid) == nil {
		return nil // a router without workers: nothing to wait for
	}
	walk(pid, 0)
	return leaves
}

func processChildren(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if k, err := strconv.Atoi(f); err == nil {
				out = append(out, k)
			}
		}
	}
	return out
}

// alive says whether process p is still there (a zombie is not).
func alive(p int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
	if err != nil {
		return false
	}
	// The state follows the command name's closing parenthesis.
	_, rest, ok := strings.Cut(string(b), ") ")
	return ok && !strings.HasPrefix(rest, "Z")
}

func containerAddrs(c container.Summary) []netip.Addr {
	if c.NetworkSettings == nil {
		return nil
	}
	return ipv4s(c.NetworkSettings.Networks)
}

func ipv4s(nets map[string]*network.EndpointSettings) []netip.Addr {
	var out []netip.Addr
	for _, n := range nets {
		if n != nil && n.IPAddress.Is4() {
			out = append(out, n.IPAddress)
		}
	}
	return out
}

// fences are the addresses fenced in routers during one apply.
type fences struct {
	mu  sync.Mutex
	fw  Firewall
	set map[fence]bool
}

type fence struct {
	pid  int
	addr netip.Addr
}

func (f *fences) add(ctx context.Context, fw Firewall, r router, addr netip.Addr) error {
	if err := fw.Fence(ctx, r.pid, addr); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.set == nil {
		f.set = map[fence]bool{}
	}
	f.fw = fw
	f.set[fence{r.pid, addr}] = true
	return nil
}

// clearNew lifts the fences of the addresses a new container was given:
// the engine may hand a fenced (dead) container's address to a new one.
func (f *fences) clearNew(ctx context.Context, addrs []netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k := range f.set {
		if slices.Contains(addrs, k.addr) {
			f.fw.Unfence(ctx, k.pid, k.addr)
			delete(f.set, k)
		}
	}
}

// lift removes every fence at the end of the apply. A router that was
// itself replaced took its fences with it: those errors are expected.
func (f *fences) lift(ctx context.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k := range f.set {
		f.fw.Unfence(ctx, k.pid, k.addr)
		delete(f.set, k)
	}
}

// endRollsCutShort undoes what an apply cut short (a crash, a kill) may
// have left in the firewall: a handover that still sends the router's
// ports to a bridge container about to be removed as a duplicate (Docker's
// publishing takes them back), and fences in the running routers that
// would refuse connections to an address the engine gives out again.
func (e *Engine) endRollsCutShort(ctx context.Context, project string) error {
	if e.Firewall == nil {
		return nil
	}
	if err := e.Firewall.EndHandover(ctx, project); err != nil {
		return fmt.Errorf("ending a router handover left from before: %w", err)
	}
	routers, err := e.routers(ctx, project, "")
	if err != nil {
		return err
	}
	for _, r := range routers {
		if err := e.Firewall.ClearFences(ctx, r.pid); err != nil {
			return fmt.Errorf("lifting the fences left in router %s: %w", r.service, err)
		}
	}
	return nil
}

// restartPolicy gives a container its restart policy.
func (e *Engine) restartPolicy(ctx context.Context, id string, p container.RestartPolicy) error {
	if _, err := e.api.ContainerUpdate(ctx, id, client.ContainerUpdateOptions{RestartPolicy: &p}); err != nil {
		return fmt.Errorf("setting the restart policy of %s: %w", shortID(id), err)
	}
	return nil
}
