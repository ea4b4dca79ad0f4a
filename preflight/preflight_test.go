package preflight

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/stack"
	"github.com/cartodb/carto-appliance/templates"
)

// fakeHost is a healthy Debian 12 VM; each case breaks one thing.
type fakeHost struct {
	goos, arch     string
	osRelease      map[string]string
	cpus           int
	memory         uint64
	free           map[string]uint64
	engine         *stack.EngineInfo
	dockerBinary   bool
	listenErr      map[int]error
	owner, project string
	lookup         error
	serverTime     time.Time
	now            time.Time
}

func healthy() *fakeHost {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	return &fakeHost{
		goos: "linux", arch: "amd64",
		osRelease: map[string]string{"ID": "debian", "VERSION_ID": "12", "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)"},
		cpus:      8, memory: 32 * gib,
		free:   map[string]uint64{"/var/lib/docker": 200 * gib, "/opt/carto": 50 * gib},
		engine: &stack.EngineInfo{Version: "20.10.24+dfsg1", RootDir: "/var/lib/docker"}, dockerBinary: true,
		serverTime: now.Add(2 * time.Second), now: now,
	}
}

func (f *fakeHost) GOOS() string                          { return f.goos }
func (f *fakeHost) GOARCH() string                        { return f.arch }
func (f *fakeHost) OSRelease() (map[string]string, error) { return f.osRelease, nil }
func (f *fakeHost) CPUs() int                             { return f.cpus }
func (f *fakeHost) MemoryBytes() (uint64, error)          { return f.memory, nil }
func (f *fakeHost) DockerInstalled() bool                 { return f.dockerBinary }
func (f *fakeHost) Now() time.Time                        { return f.now }
func (f *fakeHost) FreeBytes(p string) (uint64, error) {
	if b, ok := f.free[p]; ok {
		return b, nil
	}
	return 0, fmt.Errorf("statfs %s: no such file", p)
}
func (f *fakeHost) Engine(context.Context) (stack.EngineInfo, error) {
	if f.engine == nil {
		return stack.EngineInfo{}, errors.New("no Docker engine answers at unix:///var/run/docker.sock")
	}
	return *f.engine, nil
}
func (f *fakeHost) Listen(_ string, port int) error { return f.listenErr[port] }
func (f *fakeHost) PortOwner(context.Context, int) (string, string, error) {
	return f.owner, f.project, nil
}
func (f *fakeHost) LookupHost(context.Context, string) ([]string, error) {
	if f.lookup != nil {
		return nil, f.lookup
	}
	return []string{"10.0.0.5"}, nil
}
func (f *fakeHost) ServerTime(context.Context, string) (time.Time, error) { return f.serverTime, nil }

func run(h *fakeHost) *Report {
	rel, err := templates.Default()
	if err != nil {
		panic(err)
	}
	return Run(context.Background(), Options{
		Requirements: rel.Manifest.Requirements, Domain: "carto.example.com",
		HTTPPort: 80, HTTPSPort: 443, Project: "carto", DataDirs: []string{"/opt/carto"},
		ClockURL: "https://registry.example.com/v2/", Host: h,
	})
}

func TestHealthyHostPasses(t *testing.T) {
	r := run(healthy())
	if r.Failed {
		t.Fatalf("a healthy host failed: %+v", r.Failures())
	}
	for _, c := range r.Checks {
		if c.Status != Pass {
			t.Errorf("%s: %s %s (fix %q)", c.ID, c.Status, c.Detail, c.Fix)
		}
	}
	if got := len(r.Checks); got != 10 {
		t.Errorf("%d checks, want 10", got)
	}
}

func TestEachProblemHasItsVerdictAndFix(t *testing.T) {
	inUse := &net.OpError{Op: "listen", Err: &syscallErr{syscall.EADDRINUSE}}
	for _, tc := range []struct {
		name   string
		breakf func(*fakeHost)
		id     string
		status Status
		detail string
		fix    string
	}{
		{"not linux", func(h *fakeHost) { h.goos = "darwin" }, "os", Fail, "darwin is not Linux", "Linux VM"},
		{"untested distribution", func(h *fakeHost) { h.osRelease = map[string]string{"ID": "arch", "PRETTY_NAME": "Arch Linux"} }, "os", Warn, "Arch Linux is not a tested", "prefer Debian"},
		{"old debian", func(h *fakeHost) { h.osRelease = map[string]string{"ID": "debian", "VERSION_ID": "10"} }, "os", Warn, "older than debian 11", "upgrade to debian 11"},
		{"derivative", func(h *fakeHost) { h.osRelease = map[string]string{"ID": "pop", "ID_LIKE": "ubuntu debian"} }, "os", Warn, "like ubuntu", "prefer"},
		{"32-bit", func(h *fakeHost) { h.arch = "386" }, "arch", Fail, "386", "amd64 and arm64"},
		{"one CPU", func(h *fakeHost) { h.cpus = 1 }, "cpu", Fail, "1 CPUs (minimum 2, recommended 8)", "at least 8 vCPUs"},
		{"four CPUs", func(h *fakeHost) { h.cpus = 4 }, "cpu", Warn, "4 CPUs", "for production use"},
		{"4 GiB of memory", func(h *fakeHost) { h.memory = 4 * gib }, "memory", Fail, "4 GiB (minimum 8, recommended 32)", "at least 32 GiB"},
		{"16 GiB of memory", func(h *fakeHost) { h.memory = 16 * gib }, "memory", Warn, "16 GiB", "for production use"},
		{"no docker", func(h *fakeHost) { h.engine, h.dockerBinary = nil, false }, "docker", Fail, "Docker is not installed", "inputs: install_docker"},
		{"docker stopped", func(h *fakeHost) { h.engine = nil }, "docker", Fail, "no Docker engine answers", "systemctl enable --now docker"},
		{"old docker", func(h *fakeHost) { h.engine.Version = "19.03.15" }, "docker", Fail, "19.03.15", "20.10 or later"},
		{"full docker disk", func(h *fakeHost) { h.free["/var/lib/docker"] = 5 * gib }, "disk", Fail, "5 GiB free on /var/lib/docker", "free up or add space"},
		{"small docker disk", func(h *fakeHost) { h.free["/var/lib/docker"] = 60 * gib }, "disk", Warn, "60 GiB free", "for production use"},
		{"full config disk", func(h *fakeHost) { h.free["/opt/carto"] = 10 << 20 }, "disk", Fail, "only 10 MiB free on /opt/carto", "100 MiB"},
		{"443 taken by a program", func(h *fakeHost) { h.listenErr = map[int]error{443: inUse} }, "port-https", Fail, "another program listens on 0.0.0.0:443", "choose another port inputs: https_port"},
		{"443 taken by a container", func(h *fakeHost) { h.listenErr, h.owner, h.project = map[int]error{443: inUse}, "web", "other" }, "port-https", Fail, "published by container web", "stop that container"},
		{"443 held by our router", func(h *fakeHost) {
			h.listenErr, h.owner, h.project = map[int]error{443: inUse}, "carto-router-http-1", "carto"
		}, "port-https", Pass, "this appliance's carto-router-http-1", ""},
		{"80 not allowed", func(h *fakeHost) {
			h.listenErr = map[int]error{80: errors.New("listen tcp 0.0.0.0:80: bind: permission denied")}
		}, "port-http", Fail, "permission denied", "inputs: bind_address http_port"},
		{"unresolvable domain", func(h *fakeHost) {
			h.lookup = &net.DNSError{Err: "no such host", Name: "carto.example.com", IsNotFound: true}
		}, "dns", Fail, "does not resolve", "add a DNS record for carto.example.com"},
		{"DNS timeout", func(h *fakeHost) { h.lookup = &net.DNSError{Err: "i/o timeout", IsTimeout: true} }, "dns", Fail, "does not resolve", "/etc/resolv.conf"},
		{"clock 3 minutes off", func(h *fakeHost) { h.serverTime = h.now.Add(-3 * time.Minute) }, "clock", Warn, "3m0s off", "set-ntp"},
		{"clock an hour off", func(h *fakeHost) { h.serverTime = h.now.Add(time.Hour) }, "clock", Fail, "1h0m0s off", "certificates and tokens"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := healthy()
			tc.breakf(h)
			r := run(h)
			var got *Check
			for i := range r.Checks {
				if r.Checks[i].ID == tc.id {
					got = &r.Checks[i]
				}
			}
			if got == nil {
				t.Fatalf("no %s check in %+v", tc.id, r.Checks)
			}
			// The fix names the inputs it speaks of by what they are,
			// never by a flag.
			fix := got.Fix
			if len(got.Inputs) > 0 {
				fix += " inputs: " + strings.Join(got.Inputs, " ")
			}
			if got.Status != tc.status || !strings.Contains(got.Detail, tc.detail) || !strings.Contains(fix, tc.fix) || ourFlag.MatchString(got.Fix+got.Detail) {
				t.Errorf("%s: %s %q fix %q; want %s, detail with %q, fix with %q", tc.id, got.Status, got.Detail, fix, tc.status, tc.detail, tc.fix)
			}
			if r.Failed != (tc.status == Fail) {
				t.Errorf("report failed=%v for a %s", r.Failed, tc.status)
			}
			for _, c := range r.Checks {
				if c.ID != tc.id && c.Status != Pass {
					t.Errorf("another check did not pass: %+v", c)
				}
			}
		})
	}
}

// ourFlag is a flag of carto-appliance's command line, which only cmd/
// may name.
var ourFlag = regexp.MustCompile(`--(install-docker|http-port|https-port|bind-address|ignore-preflight|domain|customer-env|key)\b`)

func TestEgressOnlyWarns(t *testing.T) {
	rel, _ := templates.Default()
	for _, tc := range []struct {
		unreachable []string
		status      Status
		detail      string
	}{
		{nil, Pass, "all 12 reachable"},
		{[]string{"auth.carto.com (dns: no such host)"}, Warn, "1 of 12 unreachable: auth.carto.com (dns: no such host)"},
	} {
		r := Run(context.Background(), Options{Requirements: rel.Manifest.Requirements, HTTPPort: 80, HTTPSPort: 443, Host: healthy(),
			Egress: func(context.Context) ([]string, int) { return tc.unreachable, 12 }})
		c := r.Checks[len(r.Checks)-1]
		if c.ID != "egress" || c.Status != tc.status || c.Detail != tc.detail || r.Failed {
			t.Errorf("%+v (report failed=%v)", c, r.Failed)
		}
	}
}

// A node of a tier layout fails preflight while a node it depends on does
// not answer; --ignore-preflight peers makes that a warning.
func TestPeersFailUntilTheyAnswer(t *testing.T) {
	rel, _ := templates.Default()
	for _, tc := range []struct {
		down   []string
		ignore []string
		status Status
	}{
		{nil, nil, Pass},
		{[]string{"the data node (10.0.0.3): connection refused"}, nil, Fail},
		{[]string{"the data node (10.0.0.3): connection refused"}, []string{"peers"}, Warn},
	} {
		r := Run(context.Background(), Options{Requirements: rel.Manifest.Requirements, Host: healthy(), Ignore: tc.ignore,
			Peers: func(context.Context) ([]string, int) { return tc.down, 1 }})
		c := r.Checks[len(r.Checks)-1]
		if c.ID != "peers" || c.Status != tc.status || r.Failed != (tc.status == Fail) || (tc.down != nil && !strings.Contains(c.Detail, tc.down[0])) {
			t.Errorf("%+v (report failed=%v)", c, r.Failed)
		}
	}
}

func TestFailedErrorListsEveryFailure(t *testing.T) {
	h := healthy()
	h.memory, h.cpus = 2*gib, 1
	err := (&FailedError{Report: run(h)}).Error()
	for _, want := range []string{"nothing was changed", "Memory: 2 GiB", "CPUs: 1 CPUs", "fix: give the VM"} {
		if !strings.Contains(err, want) {
			t.Errorf("error lacks %q:\n%s", want, err)
		}
	}
}

// syscallErr wraps an errno the way the net package does.
type syscallErr struct{ errno syscall.Errno }

func (e *syscallErr) Error() string { return e.errno.Error() }
func (e *syscallErr) Unwrap() error { return e.errno }

func TestIgnoredFailureWarns(t *testing.T) {
	h := healthy()
	h.lookup = &net.DNSError{Err: "no such host", IsNotFound: true}
	rel, _ := templates.Default()
	r := Run(context.Background(), Options{Requirements: rel.Manifest.Requirements, Domain: "carto.test", HTTPPort: 80, HTTPSPort: 443, Ignore: []string{"dns"}, Host: h})
	if r.Failed {
		t.Fatalf("an ignored failure failed the report: %+v", r.Failures())
	}
	for _, c := range r.Checks {
		if c.ID == "dns" && (c.Status != Warn || !strings.Contains(c.Detail, "ignored")) {
			t.Errorf("dns: %+v", c)
		}
	}
}

// Every check Run makes has an ID the operator can name.
func TestIDsAreComplete(t *testing.T) {
	r := run(healthy())
	for _, c := range r.Checks {
		if !slices.Contains(IDs, c.ID) {
			t.Errorf("check %s is not in IDs", c.ID)
		}
	}
}

// An air-gap bundle's images must fit on the engine's filesystem.
func TestDiskCheckCountsTheBundlesImages(t *testing.T) {
	rel, err := templates.Default()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		load int64
		want Status
	}{{50 * gib, Pass}, {250 * gib, Fail}} {
		r := Run(context.Background(), Options{Requirements: rel.Manifest.Requirements, HTTPPort: 80, HTTPSPort: 443, Project: "carto", LoadBytes: c.load, Host: healthy()})
		for _, ch := range r.Checks {
			if ch.ID == "disk" && (ch.Status != c.want || (c.want == Fail && !strings.Contains(ch.Detail, "the bundle's images take 250.0 GiB"))) {
				t.Errorf("loading %d GiB: %+v", c.load/gib, ch)
			}
		}
	}
}
