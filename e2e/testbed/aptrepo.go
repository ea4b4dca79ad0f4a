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
	"strings"
	"time"
)

// AptRepo writes a flat Debian repository (Packages and an unsigned
// Release, for `deb [trusted=yes] URL ./`) into dir with the named
// packages, downloaded with apt-get into cacheDir once: a package source a
// VM can install from without the internet.
func AptRepo(ctx context.Context, cacheDir, dir string, packages ...string) error {
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var index bytes.Buffer
	for _, pkg := range packages {
		deb, err := cachedDeb(ctx, cacheDir, pkg)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(deb)
		if err != nil {
			return err
		}
		name := filepath.Base(deb)
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
		control, err := exec.CommandContext(ctx, "dpkg-deb", "-f", deb).Output()
		if err != nil {
			return fmt.Errorf("reading the control fields of %s: %w", name, err)
		}
		sum := sha256.Sum256(data)
		fmt.Fprintf(&index, "%sFilename: ./%s\nSize: %d\nSHA256: %s\n\n", control, name, len(data), hex.EncodeToString(sum[:]))
	}
	if err := os.WriteFile(filepath.Join(dir, "Packages"), index.Bytes(), 0o644); err != nil {
		return err
	}
	sum := sha256.Sum256(index.Bytes())
	release := fmt.Sprintf("Origin: carto-e2e\nLabel: carto-e2e\nSuite: e2e\nCodename: e2e\nDate: %s\nSHA256:\n %s %d Packages\n",
		time.Now().UTC().Format(time.RFC1123), hex.EncodeToString(sum[:]), index.Len())
	return os.WriteFile(filepath.Join(dir, "Release"), []byte(release), 0o644)
}

// cachedDeb is pkg's .deb in cacheDir, downloaded from this machine's
// Debian sources when missing (refreshing the package lists once if the
// download fails).
func cachedDeb(ctx context.Context, cacheDir, pkg string) (string, error) {
	find := func() string {
		m, _ := filepath.Glob(filepath.Join(cacheDir, pkg+"_*.deb"))
		if len(m) > 0 {
			return m[len(m)-1]
		}
		return ""
	}
	if deb := find(); deb != "" {
		return deb, nil
	}
	download := func() ([]byte, error) {
		cmd := exec.CommandContext(ctx, "apt-get", "download", "-q", pkg)
		cmd.Dir = cacheDir
		return cmd.CombinedOutput()
	}
	if out, err := download(); err != nil {
		if upd, err := exec.CommandContext(ctx, "apt-get", "update", "-q").CombinedOutput(); err != nil {
			return "", fmt.Errorf("apt-get update: %v\n%s", err, upd)
		}
		if out2, err := download(); err != nil {
			return "", fmt.Errorf("apt-get download %s: %v\n%s\n%s", pkg, err, out, out2)
		}
	}
	if deb := find(); deb != "" {
		return deb, nil
	}
	return "", fmt.Errorf("apt-get download %s left no %s_*.deb in %s", pkg, strings.TrimSpace(pkg), cacheDir)
}
