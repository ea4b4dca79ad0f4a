package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/moby/moby/client"

	"github.com/cartodb/carto-appliance/e2e/vm"
	"github.com/cartodb/carto-appliance/release"
)

// bundleFigures measures the air-gap bundle of the embedded release: its
// size (plain and gzip) against the images' own size, and, in a fresh VM
// (an engine that has none of the images), `carto-appliance bundle load`
// (the whole file checked, then each image loaded) against `docker load`
// of the same images saved in one file.
type bundleFigures struct {
	images, plain, gzipped int64
	appLoad, dockerLoad    time.Duration
}

func (b *bench) bundleBench(ctx context.Context) (*bundleFigures, error) {
	var f bundleFigures
	version := b.bed.Release.Manifest.Version
	plain := filepath.Join(b.dir, "carto.bundle")
	gz := filepath.Join(b.dir, "carto.bundle.gz")
	for _, out := range []string{plain, gz} {
		if err := b.bed.Registry.Bundle(ctx, b.bed.ChannelDir, version, out, out == gz, ""); err != nil {
			return nil, err
		}
	}
	for p, n := range map[string]*int64{plain: &f.plain, gz: &f.gzipped} {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		*n = fi.Size()
	}
	bundle, err := release.OpenBundle(ctx, plain)
	if err != nil {
		return nil, err
	}
	// The images, saved by the engine into one file, as an operator of
	// the legacy flow carries them.
	ids := make([]string, 0, len(bundle.Index.Images))
	for _, img := range bundle.Index.Images {
		insp, err := b.bed.Docker.ImageInspect(ctx, img.ID)
		if err != nil {
			return nil, err
		}
		f.images += insp.Size
		ids = append(ids, img.ID)
	}
	all := filepath.Join(b.dir, "images.tar")
	if err := saveImages(ctx, b.bed.Docker, ids, all); err != nil {
		return nil, err
	}

	if _, err := vm.EnsureImage(ctx, b.bed.Docker); err != nil {
		return nil, err
	}
	netw, err := vm.Network(ctx, b.bed.Docker, "bench")
	if err != nil {
		return nil, err
	}
	defer netw.Remove(context.Background())
	node, err := vm.Start(ctx, b.bed.Docker, vm.Options{Name: "carto-bench", Network: netw.Name})
	if err != nil {
		return nil, err
	}
	defer node.Remove(context.Background())
	for host, in := range map[string]string{b.bin: "/usr/local/bin/carto-appliance", plain: "/root/carto.bundle", all: "/root/images.tar"} {
		if err := node.CopyFile(ctx, host, in, 0o755); err != nil {
			return nil, err
		}
	}
	inVM := func(args ...string) error {
		out, errOut, code, err := node.Exec(ctx, args...)
		if err == nil && code != 0 {
			err = fmt.Errorf("%v: exit %d\n%s\n%s", args, code, out, errOut)
		}
		return err
	}
	if f.dockerLoad, err = timed(func() error { return inVM("docker", "load", "-q", "-i", "/root/images.tar") }); err != nil {
		return nil, err
	}
	if err := inVM("sh", "-c", "docker rmi -f $(docker images -aq) >/dev/null && docker image prune -af >/dev/null"); err != nil {
		return nil, err
	}
	if f.appLoad, err = timed(func() error { return inVM("carto-appliance", "bundle", "load", "/root/carto.bundle") }); err != nil {
		return nil, err
	}
	return &f, nil
}

func saveImages(ctx context.Context, cli *client.Client, ids []string, out string) error {
	rc, err := cli.ImageSave(ctx, ids)
	if err != nil {
		return err
	}
	defer rc.Close()
	w, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, rc); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}
