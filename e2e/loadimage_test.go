//go:build integration

package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/moby/client"
)

// An air-gap install loads its bundle's images through the Engine API:
// an image file as `docker save` writes it is loaded once, tagged as the
// compose file names it, not loaded again when present, and a file that
// holds another image than the bundle says is refused, leaving nothing.
func TestLoadImageFromASavedFile(t *testing.T) {
	ctx := context.Background()
	eng := localEngine(t)
	// Two tiny images of their own, saved by ID (no tag in the file, as
	// a bundle holds them), then removed from the engine.
	saved := func(t *testing.T) (id, file string) {
		t.Helper()
		tag := "carto-e2e/loadtest:" + randHex(6)
		id = buildScratchImage(t, tag)
		res, err := docker.ImageSave(ctx, []string{id})
		if err != nil {
			t.Fatal(err)
		}
		file = filepath.Join(t.TempDir(), "image.tar")
		f, _ := os.Create(file)
		_, err = io.Copy(f, res)
		res.Close()
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := docker.ImageRemove(ctx, tag, client.ImageRemoveOptions{}); err != nil {
			t.Fatal(err)
		}
		if got, _ := eng.ImageID(ctx, id); got != "" {
			t.Fatalf("image %s is still there", id)
		}
		return id, file
	}
	load := func(file, id string, refs ...string) (bool, error) {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var progress bytes.Buffer
		return eng.LoadImage(ctx, f, id, refs, &progress)
	}

	id, file := saved(t)
	ref := "registry.example.invalid/carto/loadtest:" + randHex(4)
	t.Cleanup(func() { eng.UntagImage(context.Background(), ref) })
	if loaded, err := load(file, id, ref); err != nil || !loaded {
		t.Fatalf("loading: %t %v", loaded, err)
	}
	if got, err := eng.ImageID(ctx, ref); err != nil || got != id {
		t.Errorf("%s is %q (%v), want %s", ref, got, err, id)
	}
	if loaded, err := load(file, id, ref); err != nil || loaded {
		t.Errorf("loading again: %t %v", loaded, err)
	}

	other, otherFile := saved(t)
	wrong := "sha256:" + strings.Repeat("0", 64)
	if _, err := load(otherFile, wrong, "registry.example.invalid/carto/wrong:1"); err == nil || !strings.Contains(err.Error(), "not image "+wrong) {
		t.Errorf("a file of another image: %v", err)
	}
	if got, _ := eng.ImageID(ctx, other); got != "" {
		t.Errorf("the other image %s was left loaded", other)
	}
	if got, _ := eng.ImageID(ctx, "registry.example.invalid/carto/wrong:1"); got != "" {
		t.Errorf("the wrong tag was left")
	}
}

// buildScratchImage builds an image FROM scratch holding a random file,
// tagged tag, and returns its ID.
func buildScratchImage(t *testing.T, tag string) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range map[string]string{"Dockerfile": "FROM scratch\nCOPY x /x\n", "x": randHex(16)} {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body))})
		tw.Write([]byte(body))
	}
	tw.Close()
	res, err := docker.ImageBuild(context.Background(), &buf, client.ImageBuildOptions{Tags: []string{tag}, Remove: true})
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	inspect, err := docker.ImageInspect(context.Background(), tag)
	if err != nil {
		t.Fatalf("building %s: %v", tag, err)
	}
	return inspect.ID
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
