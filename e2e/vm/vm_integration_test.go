//go:build integration

package vm_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/cartodb/carto-appliance/e2e/testbed"
	"github.com/cartodb/carto-appliance/e2e/vm"
)

// Fresh VMs are what the install scenarios run the appliance on, so they
// must behave as Debian 12 machines do: systemd boots to "running" with
// Docker active; an image loaded from the host runs inside, and a port it
// publishes answers on the VM's address from the host; after a reboot the
// system runs again with its images and restartable containers back; and
// two VMs on one network reach each other by address and by name.
func TestFreshVMs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cli, err := testbed.DockerClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	scenario := t
	// Registered first, so it runs last: after the VMs' and the network's
	// own cleanups, nothing of this test may be left.
	t.Cleanup(func() { checkNothingLeft(t, cli) })

	step(t, "remove what killed runs left behind, not what is kept (the demo's VM)", func(t *testing.T) {
		kept, err := vm.KeptNetwork(ctx, cli, "kept")
		if err != nil {
			t.Fatal(err)
		}
		defer kept.Remove(context.WithoutCancel(ctx))
		if err := vm.Prune(ctx, cli); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.NetworkInspect(ctx, kept.ID, client.NetworkInspectOptions{}); err != nil {
			t.Errorf("Prune removed a kept network: %v", err)
		}
	})

	var (
		image   string
		images  testbed.Images
		standin string
	)
	step(t, "ensure the VM image and the stand-in image", func(t *testing.T) {
		start := time.Now()
		if image, err = vm.EnsureImage(ctx, cli); err != nil {
			t.Fatal(err)
		}
		t.Logf("EnsureImage: %s in %s", image, time.Since(start).Round(time.Millisecond))
		start = time.Now()
		if again, err := vm.EnsureImage(ctx, cli); err != nil || again != image {
			t.Fatalf("a second EnsureImage = %q, %v; want %q", again, err, image)
		}
		t.Logf("EnsureImage, cached: %s", time.Since(start).Round(time.Millisecond))
		if images, err = testbed.EnsureImages(ctx, cli, testbed.Options{Logf: t.Logf}); err != nil {
			t.Fatal(err)
		}
		standin = images.Standin
	})

	network := vm.NewNetwork(t, cli, "fresh")
	t.Logf("network %s: %s, gateway %s", network.Name, network.Subnet, network.Gateway)

	// VMs live as long as the scenario (New's cleanup belongs to the t
	// given), so they start here, and steps check them.
	vm1 := vm.New(t, cli, vm.Options{Name: "vm1", Network: network.Name, Image: image})
	step(t, "a VM boots to running", func(t *testing.T) {
		b := vm1.Boot()
		t.Logf("vm1 (%s) booted in %s", vm1.IP(), b.Took.Round(time.Millisecond))
		if b.State != "running" {
			t.Errorf("systemctl is-system-running = %s (failed: %q), want running", b.State, b.FailedUnits)
		}
		if got := strings.TrimSpace(vm1.MustExec(t, "hostname")); got != "vm1" {
			t.Errorf("hostname = %q, want vm1", got)
		}
	})

	step(t, "docker is active inside, on overlay2 and the systemd cgroup driver", func(t *testing.T) {
		if got := strings.TrimSpace(vm1.MustExec(t, "systemctl", "is-active", "docker")); got != "active" {
			t.Errorf("systemctl is-active docker = %q", got)
		}
		got := strings.TrimSpace(vm1.MustExec(t, "docker", "info", "--format", "{{.Driver}} {{.CgroupDriver}} {{.ServerVersion}}"))
		if !strings.HasPrefix(got, "overlay2 systemd 20.10.") {
			t.Errorf("inner docker info: driver, cgroup driver, version = %q, want overlay2 systemd 20.10.*", got)
		}
	})

	step(t, "an image loaded from the host runs, and its published port answers on the VM's address", func(t *testing.T) {
		start := time.Now()
		if err := vm1.LoadImages(ctx, standin); err != nil {
			t.Fatal(err)
		}
		t.Logf("LoadImages(%s): %s", standin, time.Since(start).Round(time.Millisecond))
		vm1.MustExec(t, "docker", "run", "-d", "--name", "web", "--restart", "unless-stopped", "-p", "8080:3000", standin)
		waitHTTP(t, ctx, "http://"+vm1.IP()+":8080/health", "ok")
	})

	regDir := t.TempDir() // the scenario's: the registry outlives the step
	var pulled string
	step(t, "the VM's engine pulls from the test registry on the host's loopback", func(t *testing.T) {
		reg, err := testbed.StartRegistry(ctx, regDir)
		if err != nil {
			t.Fatal(err)
		}
		scenario.Cleanup(func() {
			if err := reg.RemoveLocalTags(context.Background(), cli); err != nil {
				scenario.Errorf("cleaning up: %v", err)
			}
			reg.Stop()
		})
		if err := reg.PushVariant(ctx, cli, images, "maps-api", "vmtest", nil); err != nil {
			t.Fatal(err)
		}
		_, portStr, _ := strings.Cut(reg.Host, ":")
		port, _ := strconv.Atoi(portStr)
		if err := vm1.ForwardHostPort(ctx, port); err != nil {
			t.Fatal(err)
		}
		if err := vm1.CopyFile(ctx, reg.CACertPath, "/etc/docker/certs.d/"+reg.Host+"/ca.crt", 0o644); err != nil {
			t.Fatal(err)
		}
		if err := vm1.CopyFile(ctx, reg.KeyJSONPath, "/root/key.json", 0o600); err != nil {
			t.Fatal(err)
		}
		vm1.MustExec(t, "sh", "-c", "docker login -u "+testbed.RegistryUser+" --password-stdin "+reg.Host+" </root/key.json")
		pulled = reg.Ref("maps-api", "vmtest")
		start := time.Now()
		vm1.MustExec(t, "docker", "pull", "-q", pulled)
		t.Logf("docker pull %s in the VM: %s", pulled, time.Since(start).Round(time.Millisecond))
	})

	step(t, "after a reboot the VM runs again, with the image and the container back", func(t *testing.T) {
		before := vm1.MustExec(t, "docker", "image", "inspect", "--format", "{{.Id}}", standin)
		if err := vm1.Reboot(ctx); err != nil {
			t.Fatal(err)
		}
		b := vm1.Boot()
		t.Logf("vm1 rebooted in %s", b.Took.Round(time.Millisecond))
		if b.State != "running" {
			t.Errorf("after reboot: systemctl is-system-running = %s (failed: %q)", b.State, b.FailedUnits)
		}
		if after := vm1.MustExec(t, "docker", "image", "inspect", "--format", "{{.Id}}", standin); after != before {
			t.Errorf("image ID after reboot = %s, before = %s", after, before)
		}
		waitHTTP(t, ctx, "http://"+vm1.IP()+":8080/health", "ok")
		// The registry's forwarded port is back too.
		vm1.MustExec(t, "docker", "rmi", pulled)
		vm1.MustExec(t, "docker", "pull", "-q", pulled)
	})

	vm2 := vm.New(t, cli, vm.Options{Name: "vm2", Network: network.Name, Image: image})
	step(t, "two VMs on one network reach each other by address and by name", func(t *testing.T) {
		t.Logf("vm2 (%s) booted in %s", vm2.IP(), vm2.Boot().Took.Round(time.Millisecond))
		if vm2.IP() == vm1.IP() {
			t.Fatalf("both VMs have address %s", vm1.IP())
		}
		if err := vm2.LoadImages(ctx, standin); err != nil {
			t.Fatal(err)
		}
		vm2.MustExec(t, "docker", "run", "-d", "--name", "web", "-p", "8080:3000", standin)
		for _, c := range []struct {
			from *vm.VM
			url  string
		}{
			{vm2, "http://" + vm1.IP() + ":8080/health"},
			{vm2, "http://vm1:8080/health"},
			{vm1, "http://" + vm2.IP() + ":8080/health"},
			{vm1, "http://vm2:8080/health"},
		} {
			got := c.from.MustExec(t, "curl", "-fsS", "--retry", "20", "--retry-delay", "1", "--retry-all-errors", "-m", "5", c.url)
			if got != "ok" {
				t.Errorf("from %s, GET %s = %q, want ok", c.from.Name, c.url, got)
			}
		}
		id1 := vm1.MustExec(t, "cat", "/etc/machine-id")
		if id2 := vm2.MustExec(t, "cat", "/etc/machine-id"); id1 == id2 || strings.TrimSpace(id1) == "" {
			t.Errorf("machine-ids %q and %q: want two distinct ones", id1, id2)
		}
	})
}

func step(t *testing.T, name string, f func(t *testing.T)) {
	t.Helper()
	if !t.Run(name, f) {
		t.FailNow()
	}
}

// waitHTTP polls url from the host until it answers 200 with want, for at
// most 30 s.
func waitHTTP(t *testing.T, ctx context.Context, url, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	hc := &http.Client{Timeout: 3 * time.Second}
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && string(body) == want {
				return
			}
			last = fmt.Sprintf("%s: %q", resp.Status, body)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("GET %s never answered 200 %q (last: %s)", url, want, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// checkNothingLeft fails t if a container, volume or network this process
// created is still there.
func checkNothingLeft(t *testing.T, cli *client.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := make(client.Filters).Add("label", vm.OwnerLabel+"="+strconv.Itoa(os.Getpid()))
	var left []string
	if cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f}); err != nil {
		t.Errorf("listing containers: %v", err)
	} else {
		for _, c := range cs.Items {
			left = append(left, "container "+strings.Join(c.Names, ","))
		}
	}
	if vs, err := cli.VolumeList(ctx, client.VolumeListOptions{Filters: f}); err != nil {
		t.Errorf("listing volumes: %v", err)
	} else {
		for _, v := range vs.Items {
			left = append(left, "volume "+v.Name)
		}
	}
	if ns, err := cli.NetworkList(ctx, client.NetworkListOptions{Filters: f}); err != nil {
		t.Errorf("listing networks: %v", err)
	} else {
		for _, n := range ns.Items {
			left = append(left, "network "+n.Name)
		}
	}
	if len(left) > 0 {
		t.Errorf("left behind: %s", strings.Join(left, "; "))
	}
}
