package vm

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// cleanupTimeout bounds a test's cleanup (dumping logs, removing a VM),
// which runs after the test's own context may have ended.
const cleanupTimeout = 2 * time.Minute

// New starts a VM for t (failing it if the VM does not boot) and removes
// it when t ends, after logging the VM's Logs if t failed.
func New(t testing.TB, cli *client.Client, opts Options) *VM {
	t.Helper()
	v, err := Start(t.Context(), cli, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if t.Failed() {
			logs, err := v.Logs(ctx)
			t.Logf("%s", logs)
			if err != nil {
				t.Logf("collecting the logs of VM %q: %v", v.Name, err)
			}
		}
		if err := v.Remove(ctx); err != nil {
			t.Errorf("cleaning up: %v", err)
		}
	})
	if b := v.Boot(); b.State != "running" {
		t.Logf("VM %q booted %s; failed units: %s", v.Name, b.State, strings.Join(b.FailedUnits, ", "))
	}
	return v
}

// NewNetwork creates a network for t's VMs and removes it when t ends
// (after the VMs: cleanups run last-registered first).
func NewNetwork(t testing.TB, cli *client.Client, name string) *Net {
	t.Helper()
	n, err := Network(t.Context(), cli, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := n.Remove(ctx); err != nil {
			t.Errorf("cleaning up: %v", err)
		}
	})
	return n
}

// MustExec runs cmd in the VM and returns its standard output, failing t
// when it cannot run or exits non-zero (with its output in the message).
func (v *VM) MustExec(t testing.TB, cmd ...string) string {
	t.Helper()
	out, errOut, code, err := v.Exec(t.Context(), cmd...)
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		t.Fatalf("%q in VM %q: exit %d\nstdout: %s\nstderr: %s", cmd, v.Name, code, out, errOut)
	}
	return out
}
