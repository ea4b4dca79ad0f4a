package testbed

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
	"sort"
	"strings"
	"time"

	"github.com/moby/moby/client"
)

// Options say how EnsureImages finds its inputs. The zero value works when
// the working directory is inside the module (as in `go test`).
type Options struct {
	// RepoDir is the module's root, which holds e2e/images. Default: the
	// directory of the go.mod that `go env GOMOD` finds from the working
	// directory.
	RepoDir string
	// Busybox is a statically linked busybox copied into the stand-in image
	// for /bin/sh and wget (the compose healthchecks use them). Default:
	// /bin/busybox, from Debian's busybox-static.
	Busybox string
	// Logf, when set, gets one line per image built or found. Default: silent.
	Logf func(format string, args ...any)
	// Channel, for Start, also publishes the test channel (Bed.ChannelDir).
	Channel bool
	// ApplianceBinary, with Channel, is a carto-appliance built as
	// NextApplianceVersion for this machine, which the channel offers for
	// nodes to update themselves to.
	ApplianceBinary string
}

// Images are the test bed's local images, each tagged with a hash of what
// it is built from, so an unchanged image is never rebuilt:
//
//	carto-testbed/debian-base:<sha256(rootfs.sh)[:12]>   (the package list is in the script)
//	carto-testbed/<name>:<sha256(build context, base ref)[:12]>
type Images struct {
	// Base is the debootstrapped bookworm root filesystem the Debian images
	// are built FROM.
	Base string
	// Standin plays every CARTO service image (e2e/images/standin).
	Standin string
	// Postgres is workspace-postgres: PostgreSQL 15.
	Postgres string
	// Valkey is valkey: redis-server 7.
	Valkey string
	// Router is router-http: nginx.
	Router string
}

// For returns the local image that plays the release image name (a
// manifest entry such as "maps-api" or "consumers/cdn-invalidator-sub").
func (im Images) For(name string) string {
	switch name {
	case "workspace-postgres":
		return im.Postgres
	case "valkey":
		return im.Valkey
	case "router-http":
		return im.Router
	}
	return im.Standin
}

// debianImages are the Images built FROM Base, by directory under
// e2e/images (each holding a Dockerfile with `ARG BASE` / `FROM ${BASE}`).
var debianImages = []string{"workspace-postgres", "valkey", "router-http"}

// EnsureImages builds whatever test image the engine lacks and returns the
// references of all of them. A cold run takes a couple of minutes (the
// debootstrap in e2e/images/rootfs.sh); a warm one, the time to compile the
// stand-in and hash the build contexts (about a second).
func EnsureImages(ctx context.Context, cli *client.Client, opts Options) (Images, error) {
	var im Images
	repo, err := opts.repoDir(ctx)
	if err != nil {
		return im, err
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	imagesDir := filepath.Join(repo, "e2e", "images")
	unlock, err := lockBuilds(ctx)
	if err != nil {
		return im, err
	}
	defer unlock()

	if im.Base, err = ensureBase(ctx, cli, imagesDir, logf); err != nil {
		return im, err
	}
	refs := map[string]*string{"workspace-postgres": &im.Postgres, "valkey": &im.Valkey, "router-http": &im.Router}
	for _, name := range debianImages {
		tarCtx, err := dirContext(filepath.Join(imagesDir, name))
		if err != nil {
			return im, fmt.Errorf("reading the build context of %s: %w", name, err)
		}
		ref := "carto-testbed/" + name + ":" + contentTag(tarCtx, []byte(im.Base))
		start := time.Now()
		built, err := buildImage(ctx, cli, ref, tarCtx, map[string]string{"BASE": im.Base})
		if err != nil {
			return im, err
		}
		logBuild(logf, ref, built, start)
		*refs[name] = ref
	}

	busybox := opts.Busybox
	if busybox == "" {
		busybox = "/bin/busybox"
	}
	tarCtx, err := standinContext(ctx, repo, busybox)
	if err != nil {
		return im, err
	}
	im.Standin = "carto-testbed/standin:" + contentTag(tarCtx)
	start := time.Now()
	built, err := buildImage(ctx, cli, im.Standin, tarCtx, nil)
	if err != nil {
		return im, err
	}
	logBuild(logf, im.Standin, built, start)
	return im, nil
}

func logBuild(logf func(string, ...any), ref string, built bool, start time.Time) {
	if built {
		logf("built %s in %s", ref, time.Since(start).Round(100*time.Millisecond))
	} else {
		logf("found %s", ref)
	}
}

func (o Options) repoDir(ctx context.Context) (string, error) {
	if o.RepoDir != "" {
		return o.RepoDir, nil
	}
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("finding the module root with `go env GOMOD` (%v); run inside the module or set Options.RepoDir", err)
	}
	return filepath.Dir(gomod), nil
}

// ensureBase makes sure the engine has the Debian base image, running
// rootfs.sh (debootstrap + docker import) when it does not. The tag is the
// hash rootfs.sh computes of itself: `sha256sum rootfs.sh | cut -c1-12`.
func ensureBase(ctx context.Context, cli *client.Client, imagesDir string, logf func(string, ...any)) (string, error) {
	script := filepath.Join(imagesDir, "rootfs.sh")
	b, err := os.ReadFile(script)
	if err != nil {
		return "", fmt.Errorf("reading the base image script: %w", err)
	}
	sum := sha256.Sum256(b)
	ref := "carto-testbed/debian-base:" + hex.EncodeToString(sum[:])[:12]
	if ok, err := imageExists(ctx, cli, ref); err != nil || ok {
		if ok {
			logf("found %s", ref)
		}
		return ref, err
	}
	logf("building %s with debootstrap (about 2 minutes)", ref)
	start := time.Now()
	cmd := exec.CommandContext(ctx, "bash", script, ref)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building %s with %s: %w\n%s", ref, script, err, strings.TrimSpace(out.String()))
	}
	logBuild(logf, ref, true, start)
	return ref, nil
}

// dirContext archives the regular files directly in dir, sorted by name,
// keeping only whether each is executable.
func dirContext(dir string) ([]byte, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	c := newBuildContext()
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return nil, err
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		mode := int64(0o644)
		if info.Mode()&0o111 != 0 {
			mode = 0o755
		}
		if err := c.file(e.Name(), mode, data); err != nil {
			return nil, err
		}
	}
	return c.bytes()
}

// standinContext compiles the stand-in (static, reproducible: -trimpath,
// no VCS stamp) and lays out the context e2e/images/standin/Dockerfile
// expects.
func standinContext(ctx context.Context, repo, busybox string) ([]byte, error) {
	srcDir := filepath.Join(repo, "e2e", "images", "standin")
	dockerfile, err := os.ReadFile(filepath.Join(srcDir, "Dockerfile"))
	if err != nil {
		return nil, fmt.Errorf("reading the stand-in's Dockerfile: %w", err)
	}
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return nil, fmt.Errorf("reading busybox for the stand-in image (install busybox-static; scripts/testbed-deps.sh): %w", err)
	}
	tmp, err := os.MkdirTemp("", "standin-build")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "standin")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", bin, "./e2e/images/standin")
	cmd.Dir = repo
	// The engine runs linux containers of the host's architecture here.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("compiling the stand-in: %w\n%s", err, out)
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}

	c := newBuildContext()
	steps := []func() error{
		func() error { return c.file("Dockerfile", 0o644, dockerfile) },
		func() error { return c.dir("rootfs", 0o755) },
		func() error { return c.file("rootfs/standin", 0o755, binary) },
		func() error { return c.dir("rootfs/bin", 0o755) },
		func() error { return c.file("rootfs/bin/busybox", 0o755, bb) },
		func() error { return c.symlink("rootfs/bin/sh", "busybox") },
		func() error { return c.symlink("rootfs/bin/wget", "busybox") },
		func() error { return c.dir("rootfs/tmp", 0o1777) },
		func() error { return c.dir("rootfs/usr", 0o755) },
		func() error { return c.dir("rootfs/usr/src", 0o755) },
		func() error { return c.dir("rootfs/usr/src/app", 0o755) },
		func() error { return c.file("rootfs/usr/src/app/onprem-init-db.sh", 0o755, binary) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, fmt.Errorf("archiving the stand-in's build context: %w", err)
		}
	}
	return c.bytes()
}
