package firewall

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRenderRedirects(t *testing.T) {
	rules, err := renderRedirects("CARTO-HO-carto", []Redirect{
		{HostPort: 443, To: netip.MustParseAddrPort("172.18.0.9:8443")},
		{HostIP: netip.MustParseAddr("192.0.2.4"), HostPort: 80, To: netip.MustParseAddrPort("172.18.0.9:8080")},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "*nat\n:CARTO-HO-carto - [0:0]\n" +
		"-A CARTO-HO-carto -p tcp -m addrtype --dst-type LOCAL --dport 443 -j DNAT --to-destination 172.18.0.9:8443\n" +
		"-A CARTO-HO-carto -p tcp -d 192.0.2.4 --dport 80 -j DNAT --to-destination 172.18.0.9:8080\n" +
		"COMMIT\n"
	if rules != want {
		t.Errorf("rules:\n%s\nwant:\n%s", rules, want)
	}
	for _, bad := range []Redirect{
		{HostPort: 0, To: netip.MustParseAddrPort("172.18.0.9:8443")},
		{HostPort: 443},
		{HostPort: 443, To: netip.MustParseAddrPort("[fd00::1]:8443")},
	} {
		if _, err := renderRedirects("C", []Redirect{bad}); err == nil {
			t.Errorf("%+v rendered", bad)
		}
	}
	if c := HandoverChain("a-very-long-project-name-for-this-node"); len(c) > 28 {
		t.Errorf("chain %q too long for iptables", c)
	}
}

// The handover's rules and jumps with the real iptables, in a network
// namespace of the test's own: put in force twice (one jump each, the rules
// replaced), then removed without a trace, and removing again is no error.
func TestHandOverWithIptables(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := exec.LookPath("iptables-restore"); err != nil {
		t.Skip("no iptables here")
	}
	inNetns(t, func() {
		ctx := context.Background()
		nat := func() string {
			out, err := exec.Command("iptables", "-w", "-t", "nat", "-S").CombinedOutput()
			if err != nil {
				t.Errorf("iptables -S: %v: %s", err, out)
			}
			return string(out)
		}
		to := func(s string) []Redirect {
			return []Redirect{{HostPort: 443, To: netip.MustParseAddrPort(s)}}
		}
		if err := HandOver(ctx, "carto", to("172.18.0.9:8443")); err != nil {
			t.Error(err)
			return
		}
		if err := HandOver(ctx, "carto", to("172.18.0.10:8443")); err != nil {
			t.Error(err)
			return
		}
		got := nat()
		for _, want := range []string{
			"-A PREROUTING -j CARTO-HO-carto",
			"-A OUTPUT ! -d 127.0.0.0/8 -j CARTO-HO-carto",
			"--dport 443 -j DNAT --to-destination 172.18.0.10:8443",
		} {
			if strings.Count(got, want) != 1 {
				t.Errorf("want one %q in:\n%s", want, got)
			}
		}
		if strings.Contains(got, "172.18.0.9") {
			t.Errorf("the first redirect is still there:\n%s", got)
		}
		if err := EndHandover(ctx, "carto"); err != nil {
			t.Error(err)
		}
		if got := nat(); strings.Contains(got, "CARTO-HO") {
			t.Errorf("left after EndHandover:\n%s", got)
		}
		if err := EndHandover(ctx, "carto"); err != nil {
			t.Errorf("ending twice: %v", err)
		}
	})
}

// inNetns runs fn on a thread of its own in a new network namespace (with
// nothing in it, lo down), so that the test's rules touch only it.
func inNetns(t *testing.T, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare: %v", err)
			return
		}
		fn()
	}()
	<-done
}
