package backupfile

import (
	"bufio"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"golang.org/x/crypto/scrypt"
)

// The cost of the key derivation. Writers use N=32768, r=8, p=1: about
// 32 MiB and a tenth of a second, paid once per backup and per restore.
// scryptN is a variable so that tests can make it cheap.
var scryptN = 1 << 15

const (
	scryptR         = 8
	scryptP         = 1
	saltSize        = 32
	noncePrefixSize = 7
	keyCheckLabel   = "carto-backup-key-check"
)

// Open refuses key derivations costlier than this, so a crafted header
// cannot make restore exhaust the machine's memory or time. They are
// variables so that the fuzz target stays fast.
var (
	maxScryptMem int64 = 256 << 20 // 128·N·r bytes
	maxScryptP         = 4
)

type kdfParams struct {
	Name string `json:"name"` // "scrypt"
	N    int    `json:"n"`
	R    int    `json:"r"`
	P    int    `json:"p"`
	Salt []byte `json:"salt"`
}

func (k *kdfParams) check() error {
	switch {
	case k.Name != "scrypt":
		return fmt.Errorf("unknown key derivation %q", k.Name)
	case len(k.Salt) != saltSize:
		return fmt.Errorf("salt of %d bytes, want %d", len(k.Salt), saltSize)
	case k.N < 2 || k.N&(k.N-1) != 0:
		return fmt.Errorf("scrypt N=%d is not a power of two above 1", k.N)
	case k.R < 1 || k.P < 1 || k.P > maxScryptP:
		return fmt.Errorf("scrypt r=%d p=%d out of range", k.R, k.P)
	case int64(k.N) > maxScryptMem/128/int64(k.R):
		return fmt.Errorf("scrypt N=%d r=%d needs more than %d MiB", k.N, k.R, maxScryptMem>>20)
	}
	return nil
}

// deriveKeys returns the payload's cipher and the key check value for a
// passphrase.
func deriveKeys(passphrase []byte, k *kdfParams) (cipher.AEAD, []byte, error) {
	key, err := scrypt.Key(passphrase, k.Salt, k.N, k.R, k.P, 64)
	if err != nil {
		return nil, nil, fmt.Errorf("deriving the backup key: %w", err)
	}
	block, err := aes.NewCipher(key[:32])
	if err != nil {
		return nil, nil, fmt.Errorf("deriving the backup key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, nil, fmt.Errorf("deriving the backup key: %w", err)
	}
	mac := hmac.New(sha256.New, key[32:])
	mac.Write([]byte(keyCheckLabel))
	return aead, mac.Sum(nil), nil
}

// chunkNonce is nonce_prefix || index (4 bytes, big-endian) || last flag.
func chunkNonce(prefix []byte, index uint64, last bool) []byte {
	n := make([]byte, 0, 12)
	n = append(n, prefix...)
	n = binary.BigEndian.AppendUint32(n, uint32(index))
	if last {
		return append(n, 1)
	}
	return append(n, 0)
}

// sealWriter cuts what is written into chunks and seals each. A full chunk
// is sealed only when more data follows, so that Close can seal the last
// one, full or not, with the last flag.
type sealWriter struct {
	w      io.Writer
	aead   cipher.AEAD
	prefix []byte
	aad    []byte
	index  uint64
	buf    []byte // plaintext of the chunk being filled
	out    []byte // ciphertext scratch
}

func newSealWriter(w io.Writer, aead cipher.AEAD, prefix, aad []byte) *sealWriter {
	return &sealWriter{w: w, aead: aead, prefix: prefix, aad: aad, buf: make([]byte, 0, chunkSize)}
}

func (s *sealWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if len(s.buf) == chunkSize {
			if err := s.seal(false); err != nil {
				return written, err
			}
		}
		n := min(len(p), chunkSize-len(s.buf))
		s.buf = append(s.buf, p[:n]...)
		p = p[n:]
		written += n
	}
	return written, nil
}

// Close seals the last chunk; it does not close the underlying writer.
func (s *sealWriter) Close() error { return s.seal(true) }

func (s *sealWriter) seal(last bool) error {
	// A 4-byte index must never repeat under one key: 2^32 chunks is
	// 256 TiB, far beyond any appliance.
	if s.index > math.MaxUint32 {
		return errors.New("backup too large: more than 2^32 chunks")
	}
	s.out = s.aead.Seal(s.out[:0], chunkNonce(s.prefix, s.index, last), s.buf, s.aad)
	s.index++
	s.buf = s.buf[:0]
	_, err := s.w.Write(s.out)
	return err
}

// openReader reads the chunks sealWriter wrote and returns their
// plaintext; it returns io.EOF only after the chunk flagged last opened
// and nothing follows it.
type openReader struct {
	r      *bufio.Reader
	aead   cipher.AEAD
	prefix []byte
	aad    []byte
	index  uint64
	last   bool   // the last chunk has been opened
	ct     []byte // ciphertext scratch, one chunk and its tag
	ptBuf  []byte // plaintext scratch
	pt     []byte // plaintext not yet returned
}

func newOpenReader(r *bufio.Reader, aead cipher.AEAD, prefix, aad []byte) *openReader {
	return &openReader{
		r: r, aead: aead, prefix: prefix, aad: aad,
		ct:    make([]byte, chunkSize+aead.Overhead()),
		ptBuf: make([]byte, 0, chunkSize),
	}
}

func (o *openReader) Read(p []byte) (int, error) {
	for len(o.pt) == 0 {
		if o.last {
			return 0, io.EOF
		}
		if err := o.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, o.pt)
	o.pt = o.pt[n:]
	return n, nil
}

func (o *openReader) next() error {
	n, err := io.ReadFull(o.r, o.ct)
	last := false
	switch {
	case err == io.EOF:
		return corrupt("the file ends before the last chunk, at chunk %d", o.index)
	case err == io.ErrUnexpectedEOF:
		last = true // a short chunk can only be the last
	case err != nil:
		return err
	default:
		// A full chunk is the last one only if nothing follows it.
		if _, err := o.r.Peek(1); err == io.EOF {
			last = true
		} else if err != nil {
			return err
		}
	}
	if o.index > math.MaxUint32 {
		return corrupt("more than 2^32 chunks")
	}
	pt, err := o.aead.Open(o.ptBuf[:0], chunkNonce(o.prefix, o.index, last), o.ct[:n], o.aad)
	if err != nil {
		return corrupt("chunk %d fails authentication: it was damaged, cut short, moved or altered", o.index)
	}
	o.pt = pt
	o.index++
	o.last = last
	return nil
}
