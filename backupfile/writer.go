package backupfile

import (
	"archive/tar"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"time"
)

// Writer writes a backup file. It is not safe for concurrent use. After
// an error from Add or Close that broke the stream, every later call
// returns that error and the output must be discarded.
type Writer struct {
	dst   io.Writer   // the backup file
	sum   hash.Hash   // plain: SHA-256 of all written so far; nil when encrypted
	seal  *sealWriter // encrypted: seals the payload; nil when plain
	gz    *gzip.Writer
	tw    *tar.Writer
	hdr   Header
	names nameSet

	err    error // sticky: the output is broken
	closed bool
}

// NewWriter writes the magic line and clear header of a backup to w and
// returns a Writer for its entries. With a non-empty passphrase the
// payload is encrypted. h's FormatVersion, Encrypted and Entries are set
// by the writer. Close must be called to finish the file; it does not
// close w.
func NewWriter(w io.Writer, h Header, passphrase []byte) (*Writer, error) {
	h.FormatVersion = FormatVersion
	h.Encrypted = len(passphrase) > 0
	h.Entries = []Entry{}
	if h.Created.IsZero() {
		h.Created = time.Now().UTC()
	}
	ch := clearHeader{FormatVersion: FormatVersion, Encrypted: h.Encrypted}
	bw := &Writer{dst: w, hdr: h, names: newNameSet()}
	if !h.Encrypted {
		head, err := headBytes(ch)
		if err != nil {
			return nil, err
		}
		bw.sum = sha256.New()
		payload := io.MultiWriter(w, bw.sum)
		if _, err := payload.Write(head); err != nil {
			return nil, fmt.Errorf("writing backup header: %w", err)
		}
		bw.start(payload)
		return bw, nil
	}

	ch.KDF = &kdfParams{Name: "scrypt", N: scryptN, R: scryptR, P: scryptP, Salt: make([]byte, saltSize)}
	ch.NoncePrefix = make([]byte, noncePrefixSize)
	// crypto/rand.Read never fails (it crashes the program instead).
	rand.Read(ch.KDF.Salt)
	rand.Read(ch.NoncePrefix)
	aead, check, err := deriveKeys(passphrase, ch.KDF)
	if err != nil {
		return nil, err
	}
	ch.KeyCheck = check
	head, err := headBytes(ch)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(head); err != nil {
		return nil, fmt.Errorf("writing backup header: %w", err)
	}
	bw.seal = newSealWriter(w, aead, ch.NoncePrefix, head)
	bw.start(bw.seal)
	return bw, nil
}

// headBytes is the magic line and the clear header line; encrypted
// payloads take it as additional data.
func headBytes(ch clearHeader) ([]byte, error) {
	line, err := json.Marshal(ch)
	if err != nil {
		return nil, fmt.Errorf("encoding backup header: %w", err)
	}
	head := append([]byte(magic), line...)
	return append(head, '\n'), nil
}

func (w *Writer) start(payload io.Writer) {
	w.gz = gzip.NewWriter(payload)
	w.tw = tar.NewWriter(w.gz)
}

// fail makes err sticky: the tar stream is broken past repair.
func (w *Writer) fail(err error) error {
	w.err = err
	return err
}

// Add streams exactly size bytes of r into the backup as the regular file
// name, a relative slash path without "." or ".." elements, unique in the
// backup. Only mode's permission bits are kept: restore writes plain files
// and has no business recreating setuid bits. A reader giving fewer or more
// than size bytes (a file that changed while being backed up) is an error.
func (w *Writer) Add(name string, mode fs.FileMode, size int64, r io.Reader) error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return errors.New("backupfile: Add called after Close")
	}
	if !mode.IsRegular() {
		return fmt.Errorf("backup entry %q: mode %v: only regular files can be backed up", name, mode)
	}
	if size < 0 {
		return fmt.Errorf("backup entry %q: negative size %d", name, size)
	}
	if err := w.names.add(name); err != nil {
		return err
	}
	th := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Mode:     int64(mode.Perm()),
		Size:     size,
		ModTime:  w.hdr.Created,
	}
	if err := w.tw.WriteHeader(th); err != nil {
		return w.fail(fmt.Errorf("writing backup entry %q: %w", name, err))
	}
	sum := sha256.New()
	n, err := io.CopyN(io.MultiWriter(w.tw, sum), r, size)
	if err == io.EOF {
		return w.fail(fmt.Errorf("backup entry %q: its reader ended after %d of %d bytes: did the file change while being backed up?", name, n, size))
	}
	if err != nil {
		return w.fail(fmt.Errorf("copying %q into the backup: %w", name, err))
	}
	var one [1]byte
	if k, err := io.ReadFull(r, one[:]); k > 0 {
		return w.fail(fmt.Errorf("backup entry %q: its reader has more than %d bytes: did the file change while being backed up?", name, size))
	} else if err != io.EOF {
		return w.fail(fmt.Errorf("reading %q: %w", name, err))
	}
	w.hdr.Entries = append(w.hdr.Entries, Entry{
		Name:   name,
		Size:   size,
		SHA256: hex.EncodeToString(sum.Sum(nil)),
		Mode:   uint32(mode.Perm()),
	})
	return nil
}

// Close writes the manifest and the end of the file. It does not close
// the underlying writer.
func (w *Writer) Close() error {
	if w.closed || w.err != nil {
		return w.err
	}
	w.closed = true
	if err := w.finish(); err != nil {
		return w.fail(fmt.Errorf("finishing backup: %w", err))
	}
	return nil
}

// Header is the backup's header as written so far (after Close: the
// manifest, with every entry).
func (w *Writer) Header() Header {
	h := w.hdr
	h.Entries = append([]Entry(nil), w.hdr.Entries...)
	return h
}

func (w *Writer) finish() error {
	m, err := json.MarshalIndent(w.hdr, "", "  ")
	if err != nil {
		return err
	}
	th := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     manifestName,
		Mode:     0o600,
		Size:     int64(len(m)),
		ModTime:  w.hdr.Created,
	}
	if err := w.tw.WriteHeader(th); err != nil {
		return err
	}
	if _, err := w.tw.Write(m); err != nil {
		return err
	}
	if err := w.tw.Close(); err != nil {
		return err
	}
	if err := w.gz.Close(); err != nil {
		return err
	}
	if w.seal != nil {
		return w.seal.Close()
	}
	_, err = w.dst.Write(w.sum.Sum(nil))
	return err
}
