package vm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// EnsureImage returns the VM image's reference,
// carto-testbed/vm:<sha256(e2e/images/vm/rootfs.sh)[:12]>, building it
// with that script (debootstrap + docker import, about a minute) when the
// engine lacks it. The script is found from the module root that
// `go env GOMOD` names in the working directory (as in `go test`), or else
// next to this source file.
func EnsureImage(ctx context.Context, cli *client.Client) (string, error) {
	script, err := rootfsScript(ctx)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(script)
	if err != nil {
		return "", fmt.Errorf("reading the VM image script: %w", err)
	}
	sum := sha256.Sum256(b)
	ref := "carto-testbed/vm:" + hex.EncodeToString(sum[:])[:12]
	if _, err := cli.ImageInspect(ctx, ref); err == nil {
		return ref, nil
	} else if !cerrdefs.IsNotFound(err) {
		return "", fmt.Errorf("inspecting image %s: %w", ref, err)
	}
	// The script takes a lock and checks for the tag again, so concurrent
	// callers build once.
	cmd := exec.CommandContext(ctx, "bash", script, ref)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building %s with %s: %w\n%s", ref, script, err, strings.TrimSpace(out.String()))
	}
	return ref, nil
}

// rootfsScript finds e2e/images/vm/rootfs.sh.
func rootfsScript(ctx context.Context) (string, error) {
	const rel = "e2e/images/vm/rootfs.sh"
	var tried []string
	if out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output(); err == nil {
		if gomod := strings.TrimSpace(string(out)); gomod != "" && gomod != os.DevNull {
			p := filepath.Join(filepath.Dir(gomod), rel)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			tried = append(tried, p)
		}
	}
	// Without -trimpath, this file's path is in the binary.
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		p := filepath.Join(filepath.Dir(file), "..", "images", "vm", "rootfs.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		tried = append(tried, p)
	}
	return "", fmt.Errorf("finding %s (tried %q): run inside the module", rel, tried)
}
