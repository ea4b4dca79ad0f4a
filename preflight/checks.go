package preflight

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cartodb/carto-appliance/release"
)

const gib = 1 << 30

// Distributions the appliance is tested on; other Linux systems may work
// and get a warning.
var supportedOS = map[string]string{
	"debian": "11", "ubuntu": "20.04", "rhel": "8", "rocky": "8", "almalinux": "8", "centos": "8", "ol": "8", "amzn": "2", "sles": "15",
}

func checkOS(h Host) Check {
	c := Check{ID: "os", Title: "Operating system"}
	if h.GOOS() != "linux" {
		c.Status, c.Detail, c.Fix = Fail, h.GOOS()+" is not Linux", "run the appliance on a Linux VM (Debian, Ubuntu, RHEL and derivatives)"
		return c
	}
	rel, err := h.OSRelease()
	if err != nil {
		c.Status, c.Detail, c.Fix = Warn, "cannot read /etc/os-release: "+err.Error(), "check that this is a supported Linux distribution"
		return c
	}
	name := rel["PRETTY_NAME"]
	if name == "" {
		name = rel["ID"] + " " + rel["VERSION_ID"]
	}
	min, ok := supportedOS[rel["ID"]]
	if !ok {
		for _, like := range strings.Fields(rel["ID_LIKE"]) {
			if _, ok := supportedOS[like]; ok {
				c.Status, c.Detail = Warn, name+" is not tested, but is like "+like
				c.Fix = "prefer Debian 11+, Ubuntu 20.04+ or RHEL 8+ and derivatives"
				return c
			}
		}
		c.Status, c.Detail, c.Fix = Warn, name+" is not a tested distribution", "prefer Debian 11+, Ubuntu 20.04+ or RHEL 8+ and derivatives"
		return c
	}
	if v, err := release.ParseVersion(rel["VERSION_ID"]); err == nil {
		if m, _ := release.ParseVersion(min); v.Compare(m) < 0 {
			c.Status, c.Detail, c.Fix = Warn, fmt.Sprintf("%s is older than %s %s", name, rel["ID"], min), fmt.Sprintf("upgrade to %s %s or later", rel["ID"], min)
			return c
		}
	}
	c.Status, c.Detail = Pass, name
	return c
}

func checkArch(h Host) Check {
	c := Check{ID: "arch", Title: "CPU architecture", Status: Pass, Detail: h.GOARCH()}
	if a := h.GOARCH(); a != "amd64" && a != "arm64" {
		c.Status, c.Fix = Fail, "CARTO's images are built for amd64 and arm64: use such a VM"
	}
	return c
}

// resource compares an amount with a requirement.
func resource(c Check, have float64, unit string, r release.Requirement, fix string) Check {
	c.Detail = fmt.Sprintf("%s%s (minimum %s, recommended %s)", trim(have), unit, trim(r.Min), trim(r.Recommended))
	switch {
	case have < r.Min:
		c.Status, c.Fix = Fail, fix
	case have < r.Recommended:
		c.Status, c.Fix = Warn, fix+" for production use"
	default:
		c.Status = Pass
	}
	return c
}

func trim(f float64) string { return strings.TrimSuffix(fmt.Sprintf("%.1f", f), ".0") }

func checkCPUs(h Host, r release.Requirement) Check {
	return resource(Check{ID: "cpu", Title: "CPUs"}, float64(h.CPUs()), " CPUs", r,
		fmt.Sprintf("give the VM at least %s vCPUs", trim(r.Recommended)))
}

func checkMemory(h Host, r release.Requirement) Check {
	c := Check{ID: "memory", Title: "Memory"}
	b, err := h.MemoryBytes()
	if err != nil {
		c.Status, c.Detail, c.Fix = Warn, "cannot read the memory size: "+err.Error(), fmt.Sprintf("make sure the VM has at least %s GiB", trim(r.Min))
		return c
	}
	return resource(c, float64(b)/gib, " GiB", r, fmt.Sprintf("give the VM at least %s GiB of memory", trim(r.Recommended)))
}

type dockerResult struct {
	Check
	RootDir string
}

func checkDocker(ctx context.Context, h Host) dockerResult {
	c := Check{ID: "docker", Title: "Docker engine"}
	info, err := h.Engine(ctx)
	if err != nil {
		c.Status, c.Detail = Fail, err.Error()
		if h.DockerInstalled() {
			c.Fix = "start it: systemctl enable --now docker"
		} else {
			c.Detail = "Docker is not installed"
			c.Fix = "let install install it from the distribution's packages, or install Docker Engine 20.10 or later yourself (https://docs.docker.com/engine/install/)"
			c.Inputs = []string{"install_docker"}
		}
		return dockerResult{Check: c}
	}
	c.Detail = "Docker Engine " + info.Version
	v, err := release.ParseVersion(strings.SplitN(strings.SplitN(info.Version, "+", 2)[0], "-", 2)[0])
	if m, _ := release.ParseVersion("20.10"); err == nil && v.Compare(m) < 0 {
		c.Status, c.Fix = Fail, "upgrade the Docker engine to 20.10 or later"
	} else {
		c.Status = Pass
	}
	return dockerResult{Check: c, RootDir: info.RootDir}
}

func checkDisk(h Host, r release.Requirement, dockerRoot string, dataDirs []string, loadBytes int64) Check {
	c := Check{ID: "disk", Title: "Free disk"}
	path := dockerRoot
	if path == "" {
		path = "/var/lib/docker"
	}
	free, err := h.FreeBytes(path)
	if err != nil {
		c.Status, c.Detail, c.Fix = Warn, err.Error(), fmt.Sprintf("make sure %s has %s GiB free", path, trim(r.Min))
		return c
	}
	c = resource(c, float64(free)/gib, " GiB free on "+path, r, fmt.Sprintf("free up or add space on %s's filesystem (the Docker engine's images, containers and the embedded database)", path))
	if c.Status == Fail {
		return c
	}
	if loadBytes > 0 && uint64(loadBytes) > free {
		c.Status = Fail
		c.Detail = fmt.Sprintf("the bundle's images take %.1f GiB once loaded, and %s has %.1f GiB free", float64(loadBytes)/gib, path, float64(free)/gib)
		c.Fix = fmt.Sprintf("free up or add space on %s's filesystem", path)
		return c
	}
	// The config and state dirs take little, but a full filesystem there
	// stops every write.
	for _, d := range dataDirs {
		if f, err := h.FreeBytes(d); err == nil && f < 100<<20 {
			c.Status, c.Detail = Fail, fmt.Sprintf("only %d MiB free on %s's filesystem", f>>20, d)
			c.Fix = fmt.Sprintf("free up space on %s's filesystem (100 MiB at least)", filepath.Clean(d))
		}
	}
	return c
}

func checkPort(ctx context.Context, h Host, name, addr string, port int, project string, own func(context.Context, string, int) bool) Check {
	c := Check{ID: "port-" + strings.ToLower(name), Title: fmt.Sprintf("Port %d (%s)", port, name)}
	portInput := strings.ToLower(name) + "_port" // http_port, https_port
	if addr == "" {
		addr = "0.0.0.0"
	}
	err := h.Listen(addr, port)
	if err == nil {
		c.Status, c.Detail = Pass, "free on "+addr
		return c
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		owner, ownerProject, oerr := h.PortOwner(ctx, port)
		if oerr == nil && owner != "" && ownerProject == project {
			c.Status, c.Detail = Pass, "held by this appliance's "+owner
			return c
		}
		if owner == "" && own != nil && own(ctx, addr, port) {
			c.Status, c.Detail = Pass, "held by this appliance's agent"
			return c
		}
		c.Status = Fail
		if owner != "" {
			c.Detail = fmt.Sprintf("already published by container %s", owner)
			c.Fix = "stop that container, or choose another port"
			c.Inputs = []string{portInput}
		} else {
			c.Detail = fmt.Sprintf("another program listens on %s:%d", addr, port)
			c.Fix = fmt.Sprintf("stop it (ss -ltnp 'sport = :%d' shows which), or choose another port", port)
			c.Inputs = []string{portInput}
		}
		return c
	}
	c.Status, c.Detail = Fail, err.Error()
	c.Fix = "use an address of this machine and a port it may open"
	c.Inputs = []string{"bind_address", portInput}
	return c
}

func checkDomain(ctx context.Context, h Host, domain string) Check {
	c := Check{ID: "dns", Title: "Domain " + domain}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := h.LookupHost(ctx, domain)
	if err != nil {
		c.Status, c.Detail = Fail, "does not resolve: "+err.Error()
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsTimeout {
			c.Fix = "check this machine's DNS servers (/etc/resolv.conf)"
		} else {
			c.Fix = fmt.Sprintf("add a DNS record for %s pointing at this VM (or at the load balancer in front of it); until then an /etc/hosts entry works for tests", domain)
		}
		return c
	}
	c.Status, c.Detail = Pass, "resolves to "+strings.Join(addrs, ", ")
	return c
}

func checkClock(ctx context.Context, h Host, url string) Check {
	c := Check{ID: "clock", Title: "Clock"}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	t, err := h.ServerTime(ctx, url)
	if err != nil {
		c.Status, c.Detail = Warn, "cannot compare with "+url+": "+err.Error()
		c.Fix = "make sure the clock is synchronised (timedatectl status)"
		return c
	}
	skew := h.Now().Sub(t)
	if skew < 0 {
		skew = -skew
	}
	c.Detail = fmt.Sprintf("%s off %s", skew.Round(time.Second), url)
	switch {
	case skew > 5*time.Minute:
		c.Status, c.Fix = Fail, "synchronise the clock (timedatectl set-ntp true): certificates and tokens fail with a skewed clock"
	case skew > time.Minute:
		c.Status, c.Fix = Warn, "synchronise the clock (timedatectl set-ntp true)"
	default:
		c.Status = Pass
	}
	return c
}

// checkEgress only warns: an air-gapped install reaches nothing, on
// purpose, and works from a local registry.
func checkEgress(ctx context.Context, egress func(context.Context) ([]string, int)) Check {
	c := Check{ID: "egress", Title: "Domains CARTO needs"}
	unreachable, checked := egress(ctx)
	if len(unreachable) == 0 {
		c.Status, c.Detail = Pass, fmt.Sprintf("all %d reachable", checked)
		return c
	}
	c.Status = Warn
	c.Detail = fmt.Sprintf("%d of %d unreachable: %s", len(unreachable), checked, strings.Join(unreachable, "; "))
	c.Fix = "allow them in the firewall or the proxy (carto-appliance proxy test shows each with its reason); an air-gapped install can ignore this"
	return c
}

// checkPeers fails while a node this one depends on does not answer: the
// install would be refused at its first step anyway, and the operator
// learns it before anything is pulled.
func checkPeers(ctx context.Context, peers func(context.Context) ([]string, int)) Check {
	c := Check{ID: "peers", Title: "Nodes this node depends on"}
	unreachable, checked := peers(ctx)
	if len(unreachable) == 0 {
		c.Status, c.Detail = Pass, fmt.Sprintf("all %d answer", checked)
		return c
	}
	c.Status = Fail
	c.Detail = strings.Join(unreachable, "; ")
	c.Fix = "install the layout's nodes in order (data, then app) and check this node reaches each one's private address on the peer port (default 9710)"
	c.Inputs = []string{"join"}
	return c
}

func insecureTLS() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true} //nolint:gosec // only the Date header is read
}
