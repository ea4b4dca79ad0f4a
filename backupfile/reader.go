package backupfile

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
)

// Open reads a whole backup from r, checking everything, and extracts
// its entries, with their modes, into dir: an existing empty directory
// the caller made. Nothing is written outside dir. It returns the
// manifest only once every check passed; on any error the caller must
// remove dir, whose content cannot be trusted. A passphrase given for a
// plain backup is ignored.
//
// A refused backup gives ErrNotBackup, ErrNewerFormat, ErrCorrupt or
// ErrPassphrase; errors reading r, writing dir or from ctx are returned
// wrapped as they are.
func Open(ctx context.Context, r io.Reader, passphrase []byte, dir string) (*Header, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening the restore directory: %w", err)
	}
	defer root.Close()
	src := &source{ctx: ctx, r: r}
	h, err := open(ctx, src, passphrase, root)
	// A failing disk or a cancelled restore also looks like a cut-short
	// file further up: say what really happened.
	if src.err != nil {
		return nil, fmt.Errorf("reading backup: %w", src.err)
	}
	if err != nil {
		return nil, err
	}
	return h, nil
}

func open(ctx context.Context, src io.Reader, passphrase []byte, root *os.Root) (*Header, error) {
	br := bufio.NewReaderSize(src, maxHeaderLine)
	head, ch, err := readHead(br)
	if err != nil {
		return nil, err
	}

	var payload io.Reader
	var end func() error // checks what follows the archive
	if ch.Encrypted {
		if len(passphrase) == 0 {
			return nil, fmt.Errorf("%w: this backup is encrypted and no passphrase was given; give the one it was made with", ErrPassphrase)
		}
		aead, check, err := deriveKeys(passphrase, ch.KDF)
		if err != nil {
			return nil, asCorrupt("deriving the key", err)
		}
		if !hmac.Equal(check, ch.KeyCheck) {
			return nil, fmt.Errorf("%w: the passphrase given is not the one this backup was made with; check it and try again", ErrPassphrase)
		}
		or := newOpenReader(br, aead, ch.NoncePrefix, head)
		payload = or
		end = func() error {
			if n, err := io.Copy(io.Discard, or); err != nil {
				return asCorrupt("reading the end of the payload", err)
			} else if n > 0 {
				return corrupt("%d bytes after the archive", n)
			}
			return nil
		}
	} else {
		sum := sha256.New()
		sum.Write(head)
		tr := &trailerReader{r: br, sum: sum, store: make([]byte, 32<<10)}
		payload = tr
		end = func() error {
			if n, err := io.Copy(io.Discard, tr); err != nil {
				return asCorrupt("reading the end of the payload", err)
			} else if n > 0 {
				return corrupt("%d bytes after the archive", n)
			}
			if !bytes.Equal(tr.trailer(), sum.Sum(nil)) {
				return corrupt("the SHA-256 trailer is missing or does not match the file")
			}
			return nil
		}
	}

	// gzip reads ahead through pb: what it buffered past its end must be
	// nothing.
	pb := bufio.NewReader(payload)
	gz, err := gzip.NewReader(pb)
	if err != nil {
		return nil, asCorrupt("opening the compressed payload", err)
	}
	gz.Multistream(false)
	m, seen, err := readArchive(ctx, gz, root)
	if err != nil {
		return nil, err
	}
	if n, err := io.Copy(io.Discard, gz); err != nil {
		return nil, asCorrupt("reading the end of the compressed payload", err)
	} else if n > 0 {
		return nil, corrupt("%d bytes after the archive", n)
	}
	if pb.Buffered() > 0 {
		return nil, corrupt("data after the compressed payload")
	}
	if err := end(); err != nil {
		return nil, err
	}
	if err := checkManifest(m, seen, ch); err != nil {
		return nil, err
	}
	return m, nil
}

// readHead reads the magic line and the clear header; head is both, as
// written.
func readHead(br *bufio.Reader) (head []byte, ch clearHeader, err error) {
	got := make([]byte, len(magic))
	n, err := io.ReadFull(br, got)
	if n == 0 || string(got[:n]) != magic[:n] {
		return nil, ch, fmt.Errorf("%w: it does not start with %q; check the file is one written by 'carto-appliance backup'", ErrNotBackup, magic[:len(magic)-1])
	}
	if err != nil {
		return nil, ch, asCorrupt("reading the magic line", err)
	}
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return nil, ch, corrupt("the header line is longer than %d KiB", maxHeaderLine>>10)
	}
	if err != nil {
		return nil, ch, asCorrupt("reading the header line", err)
	}
	head = append([]byte(magic), line...)

	// The version first, alone: a newer format may change the rest.
	var probe struct {
		V *int `json:"format_version"`
	}
	if err := json.Unmarshal(line, &probe); err != nil {
		return nil, ch, corrupt("the header line is not JSON: %w", err)
	}
	switch {
	case probe.V == nil:
		return nil, ch, corrupt("the header has no format_version")
	case *probe.V > FormatVersion:
		return nil, ch, fmt.Errorf("%w (format %d; this one reads format %d and older): restore it with that version or newer", ErrNewerFormat, *probe.V, FormatVersion)
	case *probe.V < 1:
		return nil, ch, corrupt("format_version %d", *probe.V)
	}
	if err := json.Unmarshal(line, &ch); err != nil {
		return nil, ch, corrupt("the header line does not decode: %w", err)
	}
	if !ch.Encrypted {
		if ch.KDF != nil || ch.NoncePrefix != nil || ch.KeyCheck != nil {
			return nil, ch, corrupt("a plain backup's header has encryption parameters")
		}
		return head, ch, nil
	}
	switch {
	case ch.KDF == nil:
		return nil, ch, corrupt("an encrypted backup's header has no kdf")
	case len(ch.NoncePrefix) != noncePrefixSize:
		return nil, ch, corrupt("nonce_prefix of %d bytes, want %d", len(ch.NoncePrefix), noncePrefixSize)
	case len(ch.KeyCheck) != sha256.Size:
		return nil, ch, corrupt("key_check of %d bytes, want %d", len(ch.KeyCheck), sha256.Size)
	}
	if err := ch.KDF.check(); err != nil {
		return nil, ch, corrupt("kdf: %w", err)
	}
	return head, ch, nil
}

// readArchive extracts the tar entries into root up to the manifest,
// which must be the last, and returns the manifest and the entries seen.
func readArchive(ctx context.Context, r io.Reader, root *os.Root) (*Header, []Entry, error) {
	tr := tar.NewReader(r)
	names := newNameSet()
	var seen []Entry
	buf := make([]byte, 32<<10)
	for {
		if err := ctx.Err(); err != nil {
			return nil, nil, fmt.Errorf("restoring: %w", err)
		}
		th, err := tr.Next()
		if err == io.EOF {
			return nil, nil, corrupt("the archive ends without a manifest")
		}
		if err != nil {
			return nil, nil, asCorrupt("reading the archive", err)
		}
		if th.Name == manifestName {
			m, err := readManifest(tr, th)
			if err != nil {
				return nil, nil, err
			}
			if th, err := tr.Next(); err == nil {
				return nil, nil, corrupt("entry %q after the manifest", th.Name)
			} else if err != io.EOF {
				return nil, nil, asCorrupt("reading the end of the archive", err)
			}
			return m, seen, nil
		}
		e, err := extract(ctx, tr, th, names, root, buf)
		if err != nil {
			return nil, nil, err
		}
		seen = append(seen, e)
	}
}

// extract writes one entry into root and returns it as seen.
func extract(ctx context.Context, tr io.Reader, th *tar.Header, names nameSet, root *os.Root, buf []byte) (Entry, error) {
	name := th.Name
	if th.Typeflag != tar.TypeReg {
		return Entry{}, corrupt("entry %q is not a regular file (tar type %q)", name, th.Typeflag)
	}
	if err := names.add(name); err != nil {
		return Entry{}, corrupt("%w", err)
	}
	if th.Mode&^0o777 != 0 {
		return Entry{}, corrupt("entry %q: mode %#o is more than permission bits", name, th.Mode)
	}
	if d := path.Dir(name); d != "." {
		if err := root.MkdirAll(d, 0o700); err != nil {
			return Entry{}, fmt.Errorf("restoring %q: %w", name, err)
		}
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return Entry{}, fmt.Errorf("restoring %q: %w", name, err)
	}
	sum := sha256.New()
	size, err := copyEntry(ctx, f, sum, tr, buf, name)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("restoring %q: %w", name, cerr)
	}
	if err != nil {
		return Entry{}, err
	}
	mode := fs.FileMode(th.Mode)
	if err := root.Chmod(name, mode); err != nil {
		return Entry{}, fmt.Errorf("restoring %q: %w", name, err)
	}
	return Entry{Name: name, Size: size, SHA256: hex.EncodeToString(sum.Sum(nil)), Mode: uint32(mode)}, nil
}

// copyEntry copies an entry's content to f, hashing it. It tells the
// archive's errors (corruption) from the disk's.
func copyEntry(ctx context.Context, f io.Writer, sum hash.Hash, tr io.Reader, buf []byte, name string) (int64, error) {
	var size int64
	for {
		// gzip can expand a little input into much output: check here too.
		if err := ctx.Err(); err != nil {
			return size, fmt.Errorf("restoring %q: %w", name, err)
		}
		n, rerr := tr.Read(buf)
		if n > 0 {
			sum.Write(buf[:n])
			if _, err := f.Write(buf[:n]); err != nil {
				return size, fmt.Errorf("restoring %q: %w", name, err)
			}
			size += int64(n)
		}
		if rerr == io.EOF {
			return size, nil
		}
		if rerr != nil {
			return size, asCorrupt(fmt.Sprintf("reading entry %q", name), rerr)
		}
	}
}

func readManifest(tr io.Reader, th *tar.Header) (*Header, error) {
	if th.Typeflag != tar.TypeReg || th.Size > maxManifest {
		return nil, corrupt("the manifest is not a regular file of at most %d MiB", maxManifest>>20)
	}
	b, err := io.ReadAll(tr)
	if err != nil {
		return nil, asCorrupt("reading the manifest", err)
	}
	var m Header
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, corrupt("the manifest does not decode: %w", err)
	}
	return &m, nil
}

// checkManifest holds the manifest to the clear header and to the entries
// extracted, which must be exactly those it lists.
func checkManifest(m *Header, seen []Entry, ch clearHeader) error {
	if m.FormatVersion != ch.FormatVersion || m.Encrypted != ch.Encrypted {
		return corrupt("the manifest (format %d, encrypted %t) contradicts the header (format %d, encrypted %t)",
			m.FormatVersion, m.Encrypted, ch.FormatVersion, ch.Encrypted)
	}
	listed := make(map[string]Entry, len(m.Entries))
	for _, e := range m.Entries {
		if _, dup := listed[e.Name]; dup {
			return corrupt("the manifest lists %q twice", e.Name)
		}
		listed[e.Name] = e
	}
	for _, s := range seen {
		e, ok := listed[s.Name]
		switch {
		case !ok:
			return corrupt("entry %q is not in the manifest", s.Name)
		case e.Size != s.Size:
			return corrupt("entry %q has %d bytes, the manifest says %d", s.Name, s.Size, e.Size)
		case e.SHA256 != s.SHA256:
			return corrupt("entry %q: its SHA-256 differs from the manifest's", s.Name)
		case e.Mode != s.Mode:
			return corrupt("entry %q has mode %#o, the manifest says %#o", s.Name, s.Mode, e.Mode)
		}
		delete(listed, s.Name)
	}
	for _, e := range m.Entries {
		if _, missing := listed[e.Name]; missing {
			return corrupt("entry %q, listed in the manifest, is missing", e.Name)
		}
	}
	return nil
}

// source is the backup being read. It keeps the first error of r (or of
// ctx, checked before every read) so Open can report it rather than the
// corruption it looks like further up.
type source struct {
	ctx context.Context
	r   io.Reader
	err error
}

func (s *source) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if err := s.ctx.Err(); err != nil {
		s.err = err
		return 0, err
	}
	n, err := s.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		s.err = err
	}
	return n, err
}

// trailerReader returns a plain backup's payload: all but the last
// trailerSize bytes of r, which it keeps back as the trailer. It hashes
// what it returns into sum.
type trailerReader struct {
	r     io.Reader
	sum   hash.Hash
	store []byte // backing array of buf
	buf   []byte // read, not yet returned; the last trailerSize may be the trailer
	eof   bool
}

func (t *trailerReader) Read(p []byte) (int, error) {
	for len(t.buf) <= trailerSize && !t.eof {
		// Move the few bytes kept to the front and fill up behind them.
		k := copy(t.store, t.buf)
		n, err := t.r.Read(t.store[k:])
		t.buf = t.store[:k+n]
		if err == io.EOF {
			t.eof = true
		} else if err != nil {
			return 0, err
		}
	}
	avail := len(t.buf) - trailerSize
	if avail <= 0 {
		return 0, io.EOF
	}
	n := copy(p, t.buf[:avail])
	t.sum.Write(p[:n])
	t.buf = t.buf[n:]
	return n, nil
}

// trailer is what was kept back at the end of the file; it is shorter than
// trailerSize when the file is.
func (t *trailerReader) trailer() []byte { return t.buf }
