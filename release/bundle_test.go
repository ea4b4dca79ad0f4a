package release

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/release/releasetest"
)

// bundleImages writes a stand-in `docker save` file for each image of r.
func bundleImageFiles(t *testing.T, r *Release) []BundleImageFile {
	t.Helper()
	dir := t.TempDir()
	var files []BundleImageFile
	for _, name := range r.Manifest.Images {
		p := filepath.Join(dir, name+".tar")
		body := bytes.Repeat([]byte("layer of "+name+" "), 5000)
		if err := os.WriteFile(p, body, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte("config of " + name))
		files = append(files, BundleImageFile{Name: name, ID: "sha256:" + hex.EncodeToString(sum[:]), Path: p})
	}
	return files
}

// here is this machine's platform.
var here = runtime.GOOS + "_" + runtime.GOARCH

// writeTestBundle writes a bundle of r to a file, signed with key.
func writeTestBundle(t *testing.T, r *Release, key ed25519.PrivateKey, compress bool) string {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteBundle(&buf, r, bundleImageFiles(t, r), "1.2.0", map[string][]byte{here: []byte("a binary"), "other_arch": []byte("another machine's")}, releasetest.KeyName, key, compress, now); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "carto.bundle")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBundleRoundTrip(t *testing.T) {
	t.Parallel()
	r := testRelease(t, "2026.1.0", "2025.11.3")
	for _, compress := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%t", compress), func(t *testing.T) {
			p := writeTestBundle(t, r, releasetest.Key, compress)
			b, err := OpenBundle(t.Context(), p)
			if err != nil {
				t.Fatal(err)
			}
			if b.Release.Digest() != r.Digest() || b.Index.Version != "2026.1.0" || len(b.Index.Images) != 2 || string(b.Appliances[here]) != "a binary" || len(b.Appliances) != 1 || len(b.Index.Appliances) != 2 {
				t.Fatalf("bundle %+v", b.Index)
			}
			if b.Index.UnpackedSize() != 5000*int64(len("layer of router ")+len("layer of api ")) {
				t.Errorf("unpacked size %d", b.Index.UnpackedSize())
			}
			var got []string
			err = b.EachImage(t.Context(), func(img BundleImage, rd io.Reader) error {
				data, err := io.ReadAll(rd)
				if !bytes.HasPrefix(data, []byte("layer of "+img.Name)) {
					t.Errorf("image %s streams %q…", img.Name, data[:20])
				}
				got = append(got, img.Name)
				return err
			})
			if err != nil || strings.Join(got, ",") != "router,api" {
				t.Errorf("EachImage: %v %v", got, err)
			}
		})
	}
}

// rewrite copies the bundle at p, tar entry by entry, through edit (which
// may change a header and its body, or drop the entry with a nil header).
func rewrite(t *testing.T, p string, edit func(hdr *tar.Header, body []byte) (*tar.Header, []byte)) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out bytes.Buffer
	tr, tw := tar.NewReader(f), tar.NewWriter(&out)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		hdr, body = edit(hdr, body)
		if hdr == nil {
			continue
		}
		hdr.Size = int64(len(body))
		tw.WriteHeader(hdr)
		tw.Write(body)
	}
	tw.Close()
	q := filepath.Join(t.TempDir(), "edited.bundle")
	os.WriteFile(q, out.Bytes(), 0o644)
	return q
}

// Every way a bundle can be wrong is refused before anything uses it,
// naming the file and the reason.
func TestOpenBundleRefusals(t *testing.T) {
	t.Parallel()
	r := testRelease(t, "2026.1.0", "2025.11.3")
	good := writeTestBundle(t, r, releasetest.Key, false)
	data, _ := os.ReadFile(good)
	cut := func(n int) string {
		p := filepath.Join(t.TempDir(), "cut.bundle")
		os.WriteFile(p, data[:n], 0o644)
		return p
	}
	_, foreign, _ := ed25519.GenerateKey(nil)
	for name, c := range map[string]struct {
		path      string
		untrusted bool
		says      string
	}{
		"cut in an image":  {path: cut(len(data) - 30000), says: "truncated"},
		"cut in the index": {path: cut(700), says: "truncated"},
		"empty":            {path: cut(0), says: "truncated"},
		"foreign-signed":   {path: writeTestBundle(t, r, foreign, false), untrusted: true, says: "does not verify"},
		"not a tar": {path: func() string {
			p := filepath.Join(t.TempDir(), "x")
			os.WriteFile(p, bytes.Repeat([]byte("x"), 2000), 0o644)
			return p
		}(), says: "not a tar"},
		"an image swapped": {path: rewrite(t, good, func(h *tar.Header, b []byte) (*tar.Header, []byte) {
			if h.Name == "images/api.tar" {
				b = bytes.ToUpper(b)
			}
			return h, b
		}), untrusted: true, says: "images/api.tar has digest"},
		"an image resized": {path: rewrite(t, good, func(h *tar.Header, b []byte) (*tar.Header, []byte) {
			if h.Name == "images/api.tar" {
				b = b[:100]
			}
			return h, b
		}), says: "images/api.tar is 100 bytes"},
		"an image missing": {path: rewrite(t, good, func(h *tar.Header, b []byte) (*tar.Header, []byte) {
			if h.Name == "images/router.tar" {
				return nil, nil
			}
			return h, b
		}), says: "images/router.tar"},
		"unsigned": {path: rewrite(t, good, func(h *tar.Header, b []byte) (*tar.Header, []byte) {
			if h.Name == "bundle.json.sig" {
				return nil, nil
			}
			return h, b
		}), says: "not a bundle"},
		"an extra file": {path: rewrite(t, good, func(h *tar.Header, b []byte) (*tar.Header, []byte) {
			if h.Name == "images/router.tar" {
				h.Name = "images/evil.tar"
			}
			return h, b
		}), says: "images/evil.tar is not listed"},
		"a release changed": {path: rewrite(t, good, func(h *tar.Header, b []byte) (*tar.Header, []byte) {
			if h.Name == "release/env.tpl" {
				b = append(b, "EVIL=1\n"...)
			}
			return h, b
		}), untrusted: true, says: "the release in it"},
		"a path outside": {path: rewrite(t, good, func(h *tar.Header, b []byte) (*tar.Header, []byte) {
			if h.Name == "images/router.tar" {
				h.Name = "../router.tar"
			}
			return h, b
		}), says: "not a plain file"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := OpenBundle(context.Background(), c.path)
			if err == nil || !errors.Is(err, ErrBadBundle) || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), c.path) {
				t.Fatalf("got %v, want ErrBadBundle naming %s and saying %q", err, c.path, c.says)
			}
			if c.untrusted && !errors.Is(err, ErrUntrusted) {
				t.Errorf("not ErrUntrusted: %v", err)
			}
		})
	}
}

// A file changed between the check and the load is caught as it streams.
func TestEachImageCatchesAFileChangedSinceTheCheck(t *testing.T) {
	t.Parallel()
	r := testRelease(t, "2026.1.0", "2025.11.3")
	p := writeTestBundle(t, r, releasetest.Key, false)
	b, err := OpenBundle(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	swapped := rewrite(t, p, func(h *tar.Header, body []byte) (*tar.Header, []byte) {
		if h.Name == "images/api.tar" {
			body = bytes.ToUpper(body)
		}
		return h, body
	})
	if err := os.Rename(swapped, p); err != nil {
		t.Fatal(err)
	}
	var loaded []string
	err = b.EachImage(t.Context(), func(img BundleImage, rd io.Reader) error {
		loaded = append(loaded, img.Name)
		_, err := io.Copy(io.Discard, rd)
		return err
	})
	if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "images/api.tar") || strings.Join(loaded, ",") != "router,api" {
		t.Errorf("EachImage over a swapped file: %v (loaded %v)", err, loaded)
	}
}

func FuzzParseBundleIndex(f *testing.F) {
	d := "sha256:" + strings.Repeat("a", 64)
	f.Add([]byte(`{"format_version":1,"version":"2026.1.0","release_digest":"` + d + `","images":[{"name":"api","id":"` + d + `","size":3,"digest":"` + d + `"}],"appliances":[{"version":"1.2.0","platform":"linux_amd64","size":5,"digest":"` + d + `"}]}`))
	f.Add([]byte(`{"format_version":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		idx, err := ParseBundleIndex(data)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, img := range idx.Images {
			if !imageName.MatchString(img.Name) || seen[img.file()] || img.Size <= 0 || strings.Contains(img.file(), "..") {
				t.Fatalf("accepted image %+v", img)
			}
			seen[img.file()] = true
		}
	})
}
