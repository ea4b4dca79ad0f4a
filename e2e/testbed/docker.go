// Package testbed builds and serves what the end-to-end tests run the
// appliance against: locally built images standing in for CARTO's (a Go
// stand-in service, plus PostgreSQL, Redis and nginx from Debian packages),
// and a private registry with TLS and `_json_key` auth to pull them from.
package testbed

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/build"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"
)

// Label is set on every image the test bed builds, so that they can be
// listed or pruned together (`docker image prune -a --filter label=…`).
const Label = "org.cartodb.testbed"

// DockerClient returns a client for the engine DOCKER_HOST names (the
// local socket by default), with the API version negotiated, after checking
// that the engine answers.
func DockerClient(ctx context.Context) (*client.Client, error) {
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return nil, fmt.Errorf("creating Docker client: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, err := cli.Ping(pctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		cli.Close()
		return nil, fmt.Errorf("no Docker engine answers at %s (start one with scripts/ensure-dockerd.sh): %w", cli.DaemonHost(), err)
	}
	return cli, nil
}

// imageExists reports whether the engine has ref.
func imageExists(ctx context.Context, cli *client.Client, ref string) (bool, error) {
	_, err := cli.ImageInspect(ctx, ref)
	switch {
	case err == nil:
		return true, nil
	case cerrdefs.IsNotFound(err):
		return false, nil
	default:
		return false, fmt.Errorf("inspecting image %s: %w", ref, err)
	}
}

// buildLockPath serialises image builds between processes on the machine
// (`go test ./...` runs packages in parallel, and the engine is shared):
// otherwise two of them build the same missing tag at once and leave a
// dangling duplicate.
var buildLockPath = filepath.Join(os.TempDir(), "carto-testbed-build.lock")

// lockBuilds takes the build lock, polling until ctx ends. flock locks
// belong to an open file, so goroutines of one process exclude each other
// too; the lock is not reentrant.
func lockBuilds(ctx context.Context) (unlock func(), err error) {
	f, err := os.OpenFile(buildLockPath, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, fmt.Errorf("opening the build lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("taking the build lock %s: %w", buildLockPath, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for the build lock %s: %w", buildLockPath, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// buildContext is a deterministic tar archive for ImageBuild: entries in
// the order added, fixed timestamps and owners, so that equal contents hash
// equally.
type buildContext struct {
	buf bytes.Buffer
	tw  *tar.Writer
}

func newBuildContext() *buildContext {
	c := &buildContext{}
	c.tw = tar.NewWriter(&c.buf)
	return c
}

func (c *buildContext) header(h *tar.Header) error {
	h.ModTime = time.Unix(0, 0)
	h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
	h.Format = tar.FormatPAX
	return c.tw.WriteHeader(h)
}

// dir adds a directory entry.
func (c *buildContext) dir(name string, mode int64) error {
	return c.header(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimSuffix(name, "/") + "/", Mode: mode})
}

// file adds a regular file.
func (c *buildContext) file(name string, mode int64, data []byte) error {
	if err := c.header(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}); err != nil {
		return err
	}
	_, err := c.tw.Write(data)
	return err
}

// symlink adds a symbolic link name → target.
func (c *buildContext) symlink(name, target string) error {
	return c.header(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777})
}

// bytes closes the archive and returns it.
func (c *buildContext) bytes() ([]byte, error) {
	if err := c.tw.Close(); err != nil {
		return nil, err
	}
	return c.buf.Bytes(), nil
}

// contentTag is the first 12 hex digits of the SHA-256 of parts, each
// length-prefixed so that part boundaries count.
func contentTag(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:", len(p))
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// buildImage builds ref from a tar context with the classic builder (the
// one every engine from 20.10 has) unless the engine already has ref.
// It reports whether it built.
func buildImage(ctx context.Context, cli *client.Client, ref string, tarCtx []byte, buildArgs map[string]string) (bool, error) {
	if ok, err := imageExists(ctx, cli, ref); err != nil || ok {
		return false, err
	}
	args := map[string]*string{}
	for k, v := range buildArgs {
		args[k] = &v
	}
	res, err := cli.ImageBuild(ctx, bytes.NewReader(tarCtx), client.ImageBuildOptions{
		Tags:        []string{ref},
		Remove:      true,
		ForceRemove: true,
		BuildArgs:   args,
		Labels:      map[string]string{Label: "1"},
		Version:     build.BuilderV1,
	})
	if err != nil {
		return false, fmt.Errorf("building %s: %w", ref, err)
	}
	defer res.Body.Close()
	if err := drainStream(res.Body); err != nil {
		return false, fmt.Errorf("building %s: %w", ref, err)
	}
	// A build can end without an error message and still tag nothing.
	if ok, err := imageExists(ctx, cli, ref); err != nil {
		return false, err
	} else if !ok {
		return false, fmt.Errorf("building %s: the engine reported success but has no such image", ref)
	}
	return true, nil
}

// drainStream reads a JSON message stream to its end (build, push or pull)
// and returns the first error reported inside it, with the last lines of
// output for context. The engine reports most failures this way, after an
// HTTP 200.
func drainStream(r io.Reader) error {
	dec := json.NewDecoder(r)
	var tail []string
	for {
		var m jsonstream.Message
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reading the engine's progress stream: %w", err)
		}
		if m.Error != nil {
			if len(tail) > 0 {
				return fmt.Errorf("%s (build output: %s)", m.Error.Message, strings.Join(tail, " | "))
			}
			return errors.New(m.Error.Message)
		}
		// Builds' output; push and pull progress is noise.
		if line := strings.TrimSpace(m.Stream); line != "" {
			tail = append(tail, line)
			if len(tail) > 8 {
				tail = slices.Delete(tail, 0, 1)
			}
		}
	}
}
