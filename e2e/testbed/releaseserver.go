package testbed

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
)

// ReleaseServer serves a release directory built by packaging/release.sh
// over HTTPS, as any static web server would: what the curl installer
// downloads from.
type ReleaseServer struct {
	// URL is the release's base URL (https://ADDR:PORT).
	URL string
	// CAPEM is the certificate of the CA that signed the server's: trust
	// it on the machines that download.
	CAPEM []byte
	// Dir is the release directory served.
	Dir string
	// Tampered, while set, serves the binaries with one byte changed.
	Tampered atomic.Bool
	// TamperedSums, while set, serves the binaries with one byte changed
	// and a SHA256SUMS that matches them (what an attacker who can change
	// the release's files serves); SHA256SUMS.sig stays the release's.
	TamperedSums atomic.Bool

	srv *http.Server
}

// StartReleaseServer builds a release of the repository at repoDir for
// this machine's architecture, with version, into dir, and serves it on a
// free port of addr (an address of this host the downloaders reach, e.g.
// a test network's gateway) until Close.
func StartReleaseServer(ctx context.Context, repoDir string, addr netip.Addr, dir, version string) (*ReleaseServer, error) {
	ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		return nil, fmt.Errorf("release server: %w", err)
	}
	s := &ReleaseServer{URL: "https://" + ln.Addr().String(), Dir: dir}
	keyPath := dir + ".key"
	if err := WriteTestReleaseKey(keyPath); err != nil {
		ln.Close()
		return nil, err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(repoDir, "packaging", "release.sh"), dir, s.URL, version)
	cmd.Env = append(os.Environ(), "ARCHES="+runtime.GOARCH, "GOFLAGS="+LicenseBuildFlags)
	cmd.Env = append(cmd.Env, releaseEnv(keyPath)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		ln.Close()
		return nil, fmt.Errorf("building the release: %v\n%s", err, out)
	}
	files := http.FileServer(http.Dir(dir))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tamper := s.Tampered.Load() || s.TamperedSums.Load()
		switch {
		case tamper && strings.HasPrefix(r.URL.Path, "/carto-appliance_linux_"):
			b, err := tampered(filepath.Join(dir, filepath.Base(r.URL.Path)))
			if err != nil {
				http.NotFound(w, r)
				return
			}
			w.Write(b)
		case s.TamperedSums.Load() && r.URL.Path == "/SHA256SUMS":
			b, err := tamperedSums(dir)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Write(b)
		default:
			files.ServeHTTP(w, r)
		}
	})
	if s.srv, s.CAPEM, err = serveTLS(ln, addr, "release.carto.test", h); err != nil {
		ln.Close()
		return nil, err
	}
	return s, nil
}

// tampered is the file at path with one byte changed.
func tampered(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b[len(b)/2] ^= 0xff
	return b, nil
}

// tamperedSums is the release's SHA256SUMS with the binaries' lines made
// to match their tampered versions.
func tamperedSums(dir string) ([]byte, error) {
	sums, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(sums), "\n")
	for i, line := range lines {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok || !strings.HasPrefix(name, "carto-appliance_linux_") {
			continue
		}
		b, err := tampered(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		if got := fmt.Sprintf("%x", sha256.Sum256(b)); got != sum {
			lines[i] = got + "  " + name
		}
	}
	return []byte(strings.Join(lines, "\n")), nil
}

// Close stops serving.
func (s *ReleaseServer) Close() error { return s.srv.Close() }
