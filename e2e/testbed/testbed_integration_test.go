//go:build integration

package testbed_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/cartodb/carto-appliance/e2e/testbed"
	"github.com/cartodb/carto-appliance/templates"
)

// The release pushed to the test registry is served only to the right
// key.json: a pull through the engine with it works and runs as the
// stand-in for that image; one with another key.json is refused with 401.
func TestRegistryServesTheReleaseToTheRightKeyOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	rel, err := templates.Default()
	if err != nil {
		t.Fatal(err)
	}
	version := rel.Manifest.Version

	cli, err := testbed.DockerClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	var reg *testbed.Registry
	regDir := t.TempDir() // the test's: a subtest's goes with the subtest
	step(t, "start the registry", func(t *testing.T) {
		reg, err = testbed.StartRegistry(ctx, regDir)
		if err != nil {
			t.Fatal(err)
		}
		reg.Logf = t.Logf
		t.Logf("registry on %s", reg.Host)
	})
	defer reg.Stop()
	defer func() {
		if err := reg.RemoveLocalTags(context.Background(), cli); err != nil {
			t.Errorf("cleaning up: %v", err)
		}
	}()

	var images testbed.Images
	step(t, "ensure the images", func(t *testing.T) {
		start := time.Now()
		images, err = testbed.EnsureImages(ctx, cli, testbed.Options{Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("EnsureImages: %s", time.Since(start).Round(time.Millisecond))
		start = time.Now()
		again, err := testbed.EnsureImages(ctx, cli, testbed.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("EnsureImages, cached: %s", time.Since(start).Round(time.Millisecond))
		if again != images {
			t.Errorf("a second EnsureImages returned %+v, want %+v", again, images)
		}
	})

	step(t, "push the release", func(t *testing.T) {
		start := time.Now()
		if err := reg.PushRelease(ctx, cli, images, version, rel.Manifest.Images); err != nil {
			t.Fatal(err)
		}
		t.Logf("pushed %d images in %s", len(rel.Manifest.Images), time.Since(start).Round(time.Millisecond))
		catalog := registryGET(t, reg, reg.KeyJSONPath, "/v2/_catalog")
		var c struct{ Repositories []string }
		if err := json.Unmarshal([]byte(catalog), &c); err != nil {
			t.Fatalf("catalog %q: %v", catalog, err)
		}
		for _, name := range rel.Manifest.Images {
			if !slices.Contains(c.Repositories, name) {
				t.Errorf("catalog lacks %s: %q", name, c.Repositories)
			}
		}
	})

	step(t, "the registry itself refuses the wrong key", func(t *testing.T) {
		registryGET(t, reg, reg.WrongKeyJSONPath, "/v2/_catalog", http.StatusUnauthorized)
	})

	ref := reg.Ref("maps-api", version)
	step(t, "a pull with the wrong key fails with 401", func(t *testing.T) {
		removeImage(ctx, t, cli, ref)
		err := reg.Pull(ctx, cli, "maps-api", version, reg.WrongKeyJSONPath)
		if err == nil {
			t.Fatal("pull with the wrong key succeeded")
		}
		if !cerrdefs.IsUnauthorized(err) && !strings.Contains(err.Error(), "unauthorized") {
			t.Fatalf("pull with the wrong key: %v; want unauthorized", err)
		}
		t.Logf("refused as expected: %v", err)
		if _, err := cli.ImageInspect(ctx, ref); !cerrdefs.IsNotFound(err) {
			t.Errorf("after a refused pull, inspecting %s: %v; want not found", ref, err)
		}
	})

	step(t, "a pull with the right key works and runs as maps-api", func(t *testing.T) {
		if err := reg.Pull(ctx, cli, "maps-api", version, reg.KeyJSONPath); err != nil {
			t.Fatal(err)
		}
		who := runStandin(ctx, t, cli, ref, "node", "/usr/src/app/dist/app/index.js")
		if who.Image != "maps-api" || who.Version != version || !slices.Equal(who.Args, []string{"node", "/usr/src/app/dist/app/index.js"}) {
			t.Errorf("/whoami = %+v", who)
		}
	})

	step(t, "a variant replaces the tag", func(t *testing.T) {
		if err := reg.PushVariant(ctx, cli, images, "maps-api", version, map[string]string{"STANDIN_FAIL": "unhealthy"}); err != nil {
			t.Fatal(err)
		}
		removeImage(ctx, t, cli, ref)
		if err := reg.Pull(ctx, cli, "maps-api", version, reg.KeyJSONPath); err != nil {
			t.Fatal(err)
		}
		inspect, err := cli.ImageInspect(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(inspect.Config.Env, "STANDIN_FAIL=unhealthy") {
			t.Errorf("variant's env %q lacks STANDIN_FAIL=unhealthy", inspect.Config.Env)
		}
	})
}

func step(t *testing.T, name string, f func(t *testing.T)) {
	t.Helper()
	if !t.Run(name, f) {
		t.FailNow()
	}
}

// registryGET does an HTTPS GET on the registry, trusting only its test CA,
// as _json_key with the key at keyPath, and checks the status (200 unless
// given).
func registryGET(t *testing.T, reg *testbed.Registry, keyPath, path string, want ...int) string {
	t.Helper()
	caPEM, err := os.ReadFile(reg.CACertPath)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	key, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest(http.MethodGet, "https://"+reg.Host+path, nil)
	req.SetBasicAuth(testbed.RegistryUser, string(key))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	status := http.StatusOK
	if len(want) > 0 {
		status = want[0]
	}
	if resp.StatusCode != status {
		t.Fatalf("GET %s: %s, want %d: %s", path, resp.Status, status, body)
	}
	return string(body)
}

func removeImage(ctx context.Context, t *testing.T, cli *client.Client, ref string) {
	t.Helper()
	if _, err := cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		t.Fatalf("removing %s: %v", ref, err)
	}
}

type whoami struct {
	Image, Version string
	Args           []string
}

// runStandin runs ref with args on the default bridge and returns its
// /whoami, polled over the container's address until it answers (30 s).
func runStandin(ctx context.Context, t *testing.T, cli *client.Client, ref string, args ...string) whoami {
	t.Helper()
	created, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config: &container.Config{Image: ref, Cmd: args, Labels: map[string]string{testbed.Label: "1"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cli.ContainerRemove(context.Background(), created.ID, client.ContainerRemoveOptions{Force: true})
	})
	if _, err := cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	inspect, err := cli.ContainerInspect(ctx, created.ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var addr string
	for _, ep := range inspect.Container.NetworkSettings.Networks {
		if ep.IPAddress.IsValid() {
			addr = ep.IPAddress.String()
		}
	}
	if addr == "" {
		t.Fatal("the container has no address")
	}
	url := fmt.Sprintf("http://%s:3000/whoami", addr)
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			var w whoami
			err = json.NewDecoder(resp.Body).Decode(&w)
			resp.Body.Close()
			if err == nil {
				return w
			}
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("GET %s: %v", url, errors.Join(last, errors.New("no answer in 30s")))
	return whoami{}
}
