package release

// An air-gap bundle carries a release into a site with no internet: one
// tar file (gzip-compressed or not) holding, in this order,
//
//	bundle.json              BundleIndex: the release's version and
//	                         digest, each file that follows with its size
//	                         and sha256, each image's ID
//	bundle.json.sig          its signature (BundleContext), by a release key
//	release/manifest.yaml    the signed release (release.sig)
//	release/docker-compose.yml
//	release/env.tpl
//	release/release.sig
//	images/<name>.tar        each image of the release, as `docker save`
//	                         writes one (loaded through the Engine API)
//	appliance/carto-appliance_<os>_<arch>   optionally, the binaries
//
// The index comes first so that an unsigned or foreign bundle is refused
// before gigabytes are read; OpenBundle then reads every file once,
// checking each against the signed index, before anything uses the
// bundle. Images read again to be loaded are checked again as they
// stream (Bundle.EachImage): a file changed between the two reads is
// refused too.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/cartodb/carto-appliance/internal/boundedread"
)

const (
	// BundleContext separates a bundle index's signature from the
	// others (sign.go).
	BundleContext = "carto-appliance bundle v1\x00"
	// BundleFormat is the bundle.json format_version this package writes
	// and reads.
	BundleFormat = 1

	bundleIndexName = "bundle.json"
	bundleSigName   = "bundle.json.sig"
	bundleRelease   = "release/"
	bundleImages    = "images/"
	bundleAppliance = "appliance/"
	// maxBundleIndex bounds bundle.json (a few hundred bytes an image).
	maxBundleIndex = 4 << 20
)

// BundleIndex is a bundle's table of contents, signed.
type BundleIndex struct {
	FormatVersion int       `json:"format_version"`
	Version       string    `json:"version"`
	ReleaseDigest string    `json:"release_digest"`
	Created       time.Time `json:"created"`
	// Images are the release's images, in the manifest's order.
	Images []BundleImage `json:"images"`
	// Appliances are carto-appliance binaries, by platform.
	Appliances []BundleAppliance `json:"appliances,omitempty"`
}

// BundleImage is one image file of a bundle.
type BundleImage struct {
	// Name is the manifest's image name; the file is images/<Name>.tar.
	Name string `json:"name"`
	// ID is the image's ID (its config's digest) once loaded: what the
	// engine must report after loading the file.
	ID     string `json:"id"`
	Size   int64  `json:"size"`
	Digest string `json:"digest"` // sha256 of the file
}

// BundleAppliance is one carto-appliance binary of a bundle.
type BundleAppliance struct {
	Version  string `json:"version"`
	Platform string `json:"platform"`
	Size     int64  `json:"size"`
	Digest   string `json:"digest"`
}

func (img BundleImage) file() string { return bundleImages + img.Name + ".tar" }

func (a BundleAppliance) file() string { return bundleAppliance + "carto-appliance_" + a.Platform }

// imageName is a manifest's image name: path components of a repository
// (consumers/cdn-invalidator-sub), each starting with a letter or digit,
// so that images/<name>.tar never climbs out of images/.
var imageName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}(/[a-z0-9][a-z0-9._-]{0,127}){0,4}$`)

// UnpackedSize is the bytes the bundle's files hold: what loading it
// needs on disk, at most (layers the engine has are not stored again).
func (idx *BundleIndex) UnpackedSize() int64 {
	var n int64
	for _, img := range idx.Images {
		n += img.Size
	}
	return n
}

// ParseBundleIndex decodes and checks bundle.json.
func ParseBundleIndex(data []byte) (*BundleIndex, error) {
	var idx BundleIndex
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&idx); err != nil {
		return nil, fmt.Errorf("not a bundle index (not its JSON: %v)", err)
	}
	switch {
	case idx.FormatVersion == 0:
		return nil, errors.New("not a bundle index: no format_version")
	case idx.FormatVersion > BundleFormat:
		return nil, fmt.Errorf("a bundle of format_version %d, for a newer carto-appliance (this one reads %d): update carto-appliance first", idx.FormatVersion, BundleFormat)
	case idx.FormatVersion < 0:
		return nil, fmt.Errorf("not a bundle index: format_version %d", idx.FormatVersion)
	}
	if err := canonicalVersion(idx.Version); err != nil {
		return nil, fmt.Errorf("bundle index: %w", err)
	}
	if !ValidDigest(idx.ReleaseDigest) {
		return nil, fmt.Errorf("bundle index: release_digest %q is not sha256: and 64 hex digits", idx.ReleaseDigest)
	}
	if len(idx.Images) == 0 {
		return nil, errors.New("bundle index: no image")
	}
	seen := map[string]bool{}
	for i, img := range idx.Images {
		switch {
		case !imageName.MatchString(img.Name):
			return nil, fmt.Errorf("bundle index, image %d: name %q is not an image name", i+1, img.Name)
		case seen[img.file()]:
			return nil, fmt.Errorf("bundle index: image %s is listed twice", img.Name)
		case !ValidDigest(img.ID) || !ValidDigest(img.Digest):
			return nil, fmt.Errorf("bundle index, image %s: id and digest are sha256: and 64 hex digits", img.Name)
		case img.Size <= 0:
			return nil, fmt.Errorf("bundle index, image %s: size %d", img.Name, img.Size)
		}
		seen[img.file()] = true
	}
	for i, a := range idx.Appliances {
		e := ApplianceEntry{Version: a.Version, Binaries: map[string]ApplianceBinary{a.Platform: {Digest: a.Digest, Size: a.Size}}}
		if err := e.check(); err != nil {
			return nil, fmt.Errorf("bundle index, appliance %d: %w", i+1, err)
		}
		if seen[a.file()] {
			return nil, fmt.Errorf("bundle index: carto-appliance for %s is listed twice", a.Platform)
		}
		seen[a.file()] = true
	}
	return &idx, nil
}

// Image is the index's image name, if listed.
func (idx *BundleIndex) Image(name string) (BundleImage, bool) {
	i := slices.IndexFunc(idx.Images, func(img BundleImage) bool { return img.Name == name })
	if i < 0 {
		return BundleImage{}, false
	}
	return idx.Images[i], true
}

// BundleImageFile is an image to write into a bundle: the file `docker
// save` wrote for it, and the ID the engine gave it.
type BundleImageFile struct {
	Name, ID, Path string
}

// WriteBundle writes the bundle of r (its manifest pins every image),
// the image files and, optionally, carto-appliance binaries (by platform,
// all of version applianceVersion) to w, gzip-compressed when compress,
// the index signed with key (release team tooling: cmd/carto-release).
func WriteBundle(w io.Writer, r *Release, images []BundleImageFile, applianceVersion string, appliances map[string][]byte, keyName string, key ed25519.PrivateKey, compress bool, now time.Time) error {
	sig, err := Sign(r, keyName, key)
	if err != nil {
		return fmt.Errorf("writing the bundle: %w", err)
	}
	idx := BundleIndex{FormatVersion: BundleFormat, Version: r.Manifest.Version, ReleaseDigest: r.Digest(), Created: now.UTC()}
	for _, name := range r.Manifest.Images {
		i := slices.IndexFunc(images, func(f BundleImageFile) bool { return f.Name == name })
		if i < 0 {
			return fmt.Errorf("writing the bundle: no image file for %s, which CARTO %s runs", name, r.Manifest.Version)
		}
		size, digest, err := fileDigest(images[i].Path)
		if err != nil {
			return fmt.Errorf("writing the bundle: image %s: %w", name, err)
		}
		idx.Images = append(idx.Images, BundleImage{Name: name, ID: images[i].ID, Size: size, Digest: digest})
	}
	if len(images) != len(idx.Images) {
		return fmt.Errorf("writing the bundle: %d image files for the %d images CARTO %s runs", len(images), len(idx.Images), r.Manifest.Version)
	}
	platforms := make([]string, 0, len(appliances))
	for p := range appliances {
		platforms = append(platforms, p)
	}
	slices.Sort(platforms)
	for _, p := range platforms {
		b := appliances[p]
		idx.Appliances = append(idx.Appliances, BundleAppliance{Version: applianceVersion, Platform: p, Size: int64(len(b)), Digest: bytesDigest(b)})
	}
	data, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if _, err := ParseBundleIndex(data); err != nil {
		return fmt.Errorf("writing the bundle: the index would be refused: %w", err)
	}
	isig, err := sign(BundleContext, bytesDigest(data), keyName, key)
	if err != nil {
		return err
	}

	out := w
	var zw *gzip.Writer
	if compress {
		zw = gzip.NewWriter(w)
		out = zw
	}
	tw := tar.NewWriter(out)
	add := func(name string, size int64, body io.Reader) error {
		hdr := &tar.Header{Name: name, Mode: 0o644, Size: size, ModTime: now.UTC(), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		n, err := io.Copy(tw, body)
		if err == nil && n != size {
			err = fmt.Errorf("%s: %d bytes written, %d expected (the file changed while the bundle was written)", name, n, size)
		}
		return err
	}
	addBytes := func(name string, b []byte) error { return add(name, int64(len(b)), bytes.NewReader(b)) }
	if err := errors.Join(addBytes(bundleIndexName, data), addBytes(bundleSigName, isig)); err != nil {
		return fmt.Errorf("writing the bundle: %w", err)
	}
	for i, b := range [][]byte{r.RawManifest, r.Compose, r.EnvTemplate, sig} {
		name := SigFile
		if i < len(fileNames) {
			name = fileNames[i]
		}
		if err := addBytes(bundleRelease+name, b); err != nil {
			return fmt.Errorf("writing the bundle: %w", err)
		}
	}
	for _, img := range idx.Images {
		i := slices.IndexFunc(images, func(f BundleImageFile) bool { return f.Name == img.Name })
		f, err := os.Open(images[i].Path)
		if err != nil {
			return fmt.Errorf("writing the bundle: %w", err)
		}
		err = add(img.file(), img.Size, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("writing the bundle: image %s: %w", img.Name, err)
		}
	}
	for _, a := range idx.Appliances {
		if err := addBytes(a.file(), appliances[a.Platform]); err != nil {
			return fmt.Errorf("writing the bundle: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("writing the bundle: %w", err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return fmt.Errorf("writing the bundle: %w", err)
		}
	}
	return nil
}

func fileDigest(p string) (int64, string, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", err
	}
	return n, "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// Bundle is a bundle file OpenBundle checked whole.
type Bundle struct {
	Path    string
	Index   *BundleIndex
	Release *Release
	// Appliances holds the carto-appliance binary the bundle carries for
	// this machine, by platform (binaries for others are checked, not
	// kept).
	Appliances map[string][]byte
}

// ErrBadBundle is wrapped by every refusal of a bundle's content (its
// signature refusals wrap ErrUntrusted as well).
var ErrBadBundle = errors.New("not a whole, signed bundle")

// OpenBundle reads the bundle at path once, whole: its index must be
// signed by a trusted release key, the release in it signed and the one
// the index names, and every file listed, of the size and sha256 listed,
// nothing more. ctx cancels the read (gigabytes).
func OpenBundle(ctx context.Context, path string) (*Bundle, error) {
	return OpenBundleReporting(ctx, path, nil)
}

// OpenBundleReporting is OpenBundle telling checked each file it starts
// checking (a bundle is gigabytes: minutes on a slow disk).
func OpenBundleReporting(ctx context.Context, path string, checking func(name string, size int64)) (*Bundle, error) {
	b := &Bundle{Path: path, Appliances: map[string][]byte{}}
	release := map[string][]byte{}
	err := b.walk(ctx, func(name string, size int64, r io.Reader) error {
		if checking != nil {
			checking(name, size)
		}
		switch {
		case strings.HasPrefix(name, bundleRelease):
			if size > boundedread.Release {
				return fmt.Errorf("%w: %s: %s is %d bytes, far more than a release file", ErrBadBundle, path, name, size)
			}
			data, err := io.ReadAll(r)
			if err != nil {
				return err
			}
			release[strings.TrimPrefix(name, bundleRelease)] = data
		case name == bundleAppliance+"carto-appliance_"+runtime.GOOS+"_"+runtime.GOARCH:
			// This machine's binary is kept (the index bounds its size);
			// the others are checked and dropped.
			data, err := io.ReadAll(r)
			if err != nil {
				return err
			}
			b.Appliances[strings.TrimPrefix(name, bundleAppliance+"carto-appliance_")] = data
		default:
			if _, err := io.Copy(io.Discard, r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	rel, err := load(func(name string) ([]byte, error) {
		if data, ok := release[name]; ok {
			return data, nil
		}
		return nil, fmt.Errorf("%s is missing", bundleRelease+name)
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: the release in it: %v", ErrBadBundle, path, err)
	}
	if err := Verify(rel, release[SigFile]); err != nil {
		return nil, fmt.Errorf("%w: %s: the release in it: %w", ErrBadBundle, path, err)
	}
	if rel.Digest() != b.Index.ReleaseDigest || rel.Manifest.Version != b.Index.Version {
		return nil, fmt.Errorf("%w: %s: the release in it (CARTO %s, digest %s) is not the one its index names (%s, %s)", ErrBadBundle, path, rel.Manifest.Version, rel.Digest(), b.Index.Version, b.Index.ReleaseDigest)
	}
	for _, name := range rel.Manifest.Images {
		if _, ok := b.Index.Image(name); !ok {
			return nil, fmt.Errorf("%w: %s: CARTO %s runs image %s, which the bundle does not carry", ErrBadBundle, path, rel.Manifest.Version, name)
		}
	}
	b.Release = rel
	return b, nil
}

// EachImage reads the bundle again and calls load with each image's file
// as it streams, in the index's order. The file is checked against the
// index as it is read: when it differs (it changed since OpenBundle),
// EachImage returns an error after load returned, naming the image, for
// the caller to undo what load did.
func (b *Bundle) EachImage(ctx context.Context, load func(img BundleImage, r io.Reader) error) error {
	return b.walk(ctx, func(name string, size int64, r io.Reader) error {
		img, ok := b.imageOf(name)
		if !ok {
			_, err := io.Copy(io.Discard, r)
			return err
		}
		if err := load(img, r); err != nil {
			return fmt.Errorf("loading image %s from %s: %w", img.Name, b.Path, err)
		}
		// What load left unread is still checked.
		_, err := io.Copy(io.Discard, r)
		return err
	})
}

// Appliance is the carto-appliance binary the bundle carries for
// platform, and its version.
func (b *Bundle) Appliance(platform string) (version string, bin []byte, ok bool) {
	for _, a := range b.Index.Appliances {
		if a.Platform == platform {
			return a.Version, b.Appliances[platform], true
		}
	}
	return "", nil, false
}

func (b *Bundle) imageOf(name string) (BundleImage, bool) {
	n, ok := strings.CutPrefix(name, bundleImages)
	if !ok {
		return BundleImage{}, false
	}
	return b.Index.Image(strings.TrimSuffix(n, ".tar"))
}

// walk reads the bundle's tar (gunzipped when it is gzip): the signed
// index first (kept in b.Index on the first read, compared on the next),
// then each listed file, passed to fn through a reader that checks its
// size and digest at its end.
func (b *Bundle) walk(ctx context.Context, fn func(name string, size int64, r io.Reader) error) error {
	f, err := os.Open(b.Path)
	if err != nil {
		return fmt.Errorf("opening the bundle: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	var in io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("%w: %s: a gzip file, unreadable: %v", ErrBadBundle, b.Path, err)
		}
		defer zr.Close()
		in = zr
	}
	tr := tar.NewReader(in)
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: "+format, append([]any{ErrBadBundle, b.Path}, args...)...)
	}
	next := func(want string) (*tar.Header, error) {
		hdr, err := tr.Next()
		switch {
		case errors.Is(err, io.EOF):
			if want == "" {
				return nil, io.EOF
			}
			return nil, bad("it ends before %s: the file is truncated or not a bundle", want)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, bad("it ends in the middle of a file (after %s): the file is truncated; copy it again", want)
		case err != nil:
			return nil, bad("not a tar file, or a damaged one: %v", err)
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Size < 0 || path.Clean(hdr.Name) != hdr.Name || strings.HasPrefix(hdr.Name, "/") || strings.HasPrefix(hdr.Name, "..") {
			return nil, bad("%q is not a plain file of a bundle", hdr.Name)
		}
		return hdr, nil
	}
	readSmall := func(name string, limit int64) ([]byte, error) {
		hdr, err := next(name)
		if err != nil {
			return nil, err
		}
		if hdr.Name != name {
			return nil, bad("its first files are not %s and %s: not a bundle", bundleIndexName, bundleSigName)
		}
		if hdr.Size > limit {
			return nil, bad("%s is %d bytes, far more than a bundle's", name, hdr.Size)
		}
		data, err := io.ReadAll(tr)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, bad("it ends in the middle of %s: the file is truncated; copy it again", name)
		}
		if err != nil {
			return nil, bad("reading %s: %v", name, err)
		}
		return data, nil
	}
	data, err := readSmall(bundleIndexName, maxBundleIndex)
	if err != nil {
		return err
	}
	sig, err := readSmall(bundleSigName, maxSig)
	if err != nil {
		return err
	}
	if err := verify(BundleContext, bytesDigest(data), sig, trustedKeys()); err != nil {
		return fmt.Errorf("%w: %s: its index: %w", ErrBadBundle, b.Path, err)
	}
	idx, err := ParseBundleIndex(data)
	if err != nil {
		return bad("%v", err)
	}
	if b.Index == nil {
		b.Index = idx
	} else if idx.ReleaseDigest != b.Index.ReleaseDigest || !slices.Equal(idx.Images, b.Index.Images) {
		return bad("its index changed since it was checked")
	}
	want := map[string]listed{}
	for _, name := range fileNames {
		want[bundleRelease+name] = listed{size: -1}
	}
	want[bundleRelease+SigFile] = listed{size: -1}
	for _, img := range idx.Images {
		want[img.file()] = listed{img.Size, img.Digest}
	}
	for _, a := range idx.Appliances {
		want[a.file()] = listed{a.Size, a.Digest}
	}
	for len(want) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := next(firstMissing(want))
		if err != nil {
			return err
		}
		l, ok := want[hdr.Name]
		if !ok {
			return bad("%s is not listed in its signed index (or is there twice)", hdr.Name)
		}
		delete(want, hdr.Name)
		if l.size >= 0 && hdr.Size != l.size {
			return bad("%s is %d bytes, its signed index says %d: the bundle was altered or damaged", hdr.Name, hdr.Size, l.size)
		}
		cr := &checkedReader{r: tr, h: sha256.New(), ctx: ctx}
		if err := fn(hdr.Name, hdr.Size, cr); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return bad("it ends in the middle of %s: the file is truncated; copy it again", hdr.Name)
			}
			return err
		}
		if cr.n != hdr.Size {
			return bad("%s: %d of its %d bytes read: the file is truncated", hdr.Name, cr.n, hdr.Size)
		}
		if got := "sha256:" + hex.EncodeToString(cr.h.Sum(nil)); l.digest != "" && got != l.digest {
			return fmt.Errorf("%w: %s: %w: %s has digest %s, its signed index says %s: the file was swapped or damaged", ErrBadBundle, b.Path, ErrUntrusted, hdr.Name, got, l.digest)
		}
	}
	if _, err := next(""); !errors.Is(err, io.EOF) {
		if err == nil {
			return bad("it holds files after the last one its index lists")
		}
		return err
	}
	return nil
}

type listed struct {
	size   int64 // -1: a release file (checked by its signature)
	digest string
}

func firstMissing(want map[string]listed) string {
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	slices.Sort(names)
	return names[0]
}

// checkedReader hashes and counts what is read through it.
type checkedReader struct {
	r   io.Reader
	h   hash.Hash
	n   int64
	ctx context.Context
}

func (c *checkedReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}
