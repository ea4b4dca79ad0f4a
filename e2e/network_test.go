//go:build integration

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/cartodb/carto-appliance/stack"
)

// Two networks sharing the project network's name (a leftover of an
// earlier run beside one made again: the engine allows it, then refuses
// to start a container on the name as ambiguous) do not stop an apply:
// the empty duplicate goes, the newest stays.
func TestApplyOverDuplicateNetworks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	eng := localEngine(t)
	project := "e2e-dupnet-" + randHex(4)
	name := project + "_default"
	labels := map[string]string{"com.docker.compose.project": project, "com.docker.compose.network": "default"}
	var ids []string
	for range 2 {
		res, err := docker.NetworkCreate(ctx, name, client.NetworkCreateOptions{Driver: "bridge", Labels: labels})
		if err != nil {
			// A newer engine refuses a second network of a name: then
			// there is nothing to fix.
			if len(ids) == 1 {
				docker.NetworkRemove(ctx, ids[0], client.NetworkRemoveOptions{})
				t.Skipf("the engine refuses a duplicate network name: %v", err)
			}
			t.Fatal(err)
		}
		ids = append(ids, res.ID)
		time.Sleep(10 * time.Millisecond) // distinct creation times
	}
	t.Cleanup(func() {
		for _, id := range ids {
			docker.NetworkRemove(context.Background(), id, client.NetworkRemoveOptions{})
		}
	})

	dir := t.TempDir()
	compose := "services:\n  db:\n    image: " + images.Base + "\n    command: [\"sleep\", \"600\"]\n    restart: unless-stopped\n"
	if err := os.WriteFile(filepath.Join(dir, stack.ComposeFileName), []byte(compose), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := stack.Load(ctx, dir, project)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Down(context.Background(), project, p, stack.DownOptions{RemoveVolumes: true}) })
	if _, err := eng.Apply(ctx, p, stack.ApplyOptions{Pull: stack.PullOptions{Policy: stack.PullMissing}, WaitTimeout: time.Minute}); err != nil {
		t.Fatalf("apply over two networks named %s: %v", name, err)
	}
	list, err := docker.NetworkList(ctx, client.NetworkListOptions{Filters: make(client.Filters).Add("name", name)})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, n := range list.Items {
		if n.Name == name {
			left = append(left, n.ID)
		}
	}
	if len(left) != 1 || left[0] != ids[1] {
		t.Errorf("networks named %s after the apply: %v, want the newest alone (%s)", name, left, ids[1])
	}
}
