package firewall

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// In a network namespace of the test's own: a connection opened before the
// fence keeps working, a new one to the fenced address is refused at once,
// and once the fence is lifted new connections succeed again.
func TestFenceRefusesNewConnectionsOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, bin := range []string{"iptables", "nsenter", "ip"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skip("no " + bin + " here")
		}
	}
	inNetns(t, func() {
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			t.Errorf("ip link set lo up: %v: %s", err, out)
			return
		}
		ctx := context.Background()
		tid := unix.Gettid()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Error(err)
			return
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { // echo
					defer c.Close()
					buf := make([]byte, 16)
					for {
						n, err := c.Read(buf)
						if err != nil {
							return
						}
						c.Write(buf[:n])
					}
				}()
			}
		}()
		echo := func(c net.Conn) error {
			c.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := c.Write([]byte("ping")); err != nil {
				return err
			}
			buf := make([]byte, 4)
			_, err := c.Read(buf)
			return err
		}
		open, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Error(err)
			return
		}
		defer open.Close()

		addr := netip.MustParseAddr("127.0.0.1")
		for range 2 {
			if err := Fence(ctx, tid, addr); err != nil {
				t.Error(err)
				return
			}
		}
		start := time.Now()
		_, err = net.DialTimeout("tcp", ln.Addr().String(), 3*time.Second)
		if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > time.Second {
			t.Errorf("a new connection through the fence: %v after %s, want refused at once", err, time.Since(start))
		}
		if err := echo(open); err != nil {
			t.Errorf("the connection opened before the fence: %v", err)
		}
		if err := Unfence(ctx, tid, addr); err != nil {
			t.Error(err)
		}
		// A fence left behind (a crash) is found by its comment.
		for _, a := range []string{"10.1.2.3", "10.1.2.4"} {
			if err := Fence(ctx, tid, netip.MustParseAddr(a)); err != nil {
				t.Error(err)
			}
		}
		if err := ClearFences(ctx, tid); err != nil {
			t.Error(err)
		}
		if out, _ := nsIptables(ctx, tid, "-S", "OUTPUT"); len(out) == 0 || strings.Contains(out, "REJECT") {
			t.Errorf("left after Unfence:\n%s", out)
		}
		if err := Unfence(ctx, tid, addr); err != nil {
			t.Errorf("lifting twice: %v", err)
		}
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Errorf("after the fence: %v", err)
		} else {
			c.Close()
		}
		if err := Fence(ctx, tid, netip.MustParseAddr("fd00::1")); err == nil {
			t.Error("an IPv6 address was fenced")
		}
	})
}

// `ip -4 neigh show` lines, whatever their state, give their addresses
// once each; anything else is skipped.
func TestParseNeighbours(t *testing.T) {
	out := "172.28.0.14 dev eth0 lladdr 02:42:ac:1c:00:0e STALE\n" +
		"172.28.0.1 dev eth0 lladdr 02:42:7e:aa:bb:cc REACHABLE\n" +
		"172.28.0.9 dev eth0  FAILED\n" +
		"172.28.0.14 dev eth1 lladdr 02:42:ac:1c:00:0e DELAY\n" +
		"fe80::1 dev eth0 lladdr 02:42:7e:aa:bb:cc router STALE\n\n"
	got := parseNeighbours(out)
	want := []netip.Addr{netip.MustParseAddr("172.28.0.14"), netip.MustParseAddr("172.28.0.1"), netip.MustParseAddr("172.28.0.9")}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
