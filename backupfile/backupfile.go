// Package backupfile owns the file format of the appliance's backups: what
// `carto-appliance backup -o FILE` writes and `carto-appliance restore FILE`
// reads. It carries named regular files and knows nothing of what they are.
// Open checks a whole file while extracting it into a scratch directory, so
// that restore can refuse, before anything else on the machine changes, a
// file that is damaged, truncated, modified, of a newer format or opened
// with the wrong passphrase.
//
// # Format (version 1)
//
// A backup file is, in order:
//
//  1. the magic line "CARTO-APPLIANCE-BACKUP\n";
//  2. the clear header: one line of JSON, at most 64 KiB with its newline:
//     {"format_version": 1, "encrypted": bool} and, when encrypted,
//     "kdf": {"name": "scrypt", "n", "r", "p", "salt": B64(32 bytes)},
//     "nonce_prefix": B64(7 bytes) and "key_check": B64(32 bytes). It holds
//     no secret and no entry list;
//  3. the payload: a gzip stream (one member) of a tar archive of regular
//     files whose last entry, MANIFEST.json, is the full Header with every
//     entry's size, mode and SHA-256. The manifest lives in the payload so
//     the checksum or the encryption covers it;
//  4. plain files only: a trailer, the 32-byte SHA-256 of everything before
//     it, so damage anywhere, even to the last bytes, is detected.
//
// In an encrypted file the payload is cut into 64 KiB chunks, each sealed
// with AES-256-GCM (the last chunk holds 1 to 64 KiB) and written as its
// ciphertext and tag, so a chunk takes 64 KiB + 16 bytes on disk. A
// chunk's 96-bit nonce is nonce_prefix || its index (4 bytes, big-endian,
// from 0) || 1 for the last chunk, else 0; its additional data is the magic
// line and clear header as written. Reordered, dropped, truncated or
// altered chunks, and an altered header, all fail to open; the last-chunk
// flag takes the place of the trailer. scrypt(passphrase, salt, n, r, p)
// gives 64 bytes: the first 32 are the AES key, the last 32 the key of
// key_check = HMAC-SHA256("carto-backup-key-check"), which tells a wrong
// passphrase from a damaged file before any payload is read.
//
// A plain file's trailer detects damage and edits by anyone who does not
// recompute it; only an encrypted file is authenticated against a forger.
package backupfile

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"time"
)

// FormatVersion is the format this package writes, and the newest it reads.
const FormatVersion = 1

const (
	magic        = "CARTO-APPLIANCE-BACKUP\n"
	manifestName = "MANIFEST.json"
	// maxHeaderLine bounds what Open reads before it knows the file is one
	// of ours; the header holds a few hundred bytes.
	maxHeaderLine = 64 << 10
	// maxManifest bounds the manifest Open holds in memory: about 100,000
	// entries, far beyond what an appliance backs up.
	maxManifest = 16 << 20
	chunkSize   = 64 << 10
	trailerSize = sha256.Size
)

// Header describes a backup. It is stored as MANIFEST.json inside the
// payload, where the checksum or the encryption covers it.
type Header struct {
	FormatVersion    int       `json:"format_version"`    // set by the writer to FormatVersion
	ApplianceVersion string    `json:"appliance_version"` // carto-appliance that wrote it
	CartoVersion     string    `json:"carto_version"`     // the CARTO release installed
	Created          time.Time `json:"created"`           // zero: the writer uses the current time
	Host             string    `json:"host"`
	Encrypted        bool      `json:"encrypted"` // set by the writer: a passphrase was given
	Entries          []Entry   `json:"entries"`   // filled by the writer
}

// Entry is one file in a backup.
type Entry struct {
	Name   string `json:"name"`   // slash path, relative to the restore directory
	Size   int64  `json:"size"`   // bytes
	SHA256 string `json:"sha256"` // lower-case hex of the content's SHA-256
	Mode   uint32 `json:"mode"`   // permission bits (fs.FileMode.Perm)
}

// clearHeader is the JSON line after the magic line. Unknown fields are
// ignored rather than refused: the line is authenticated all the same, and
// a change old readers must not skip comes with a new format_version.
type clearHeader struct {
	FormatVersion int        `json:"format_version"`
	Encrypted     bool       `json:"encrypted"`
	KDF           *kdfParams `json:"kdf,omitempty"`
	NoncePrefix   []byte     `json:"nonce_prefix,omitempty"`
	KeyCheck      []byte     `json:"key_check,omitempty"`
}

// The errors Open returns for a backup it refuses; test with errors.Is.
// Each is wrapped with what was found and what to do.
var (
	// ErrNotBackup: the file does not start with the magic line.
	ErrNotBackup = errors.New("not a carto-appliance backup")
	// ErrNewerFormat: the file's format_version is above FormatVersion.
	ErrNewerFormat = errors.New("backup made by a newer carto-appliance")
	// ErrCorrupt: the file is truncated, damaged or modified, or does not
	// follow the format.
	ErrCorrupt = errors.New("backup file is damaged, truncated or modified")
	// ErrPassphrase: the file is encrypted and the passphrase is missing
	// or not the one it was made with.
	ErrPassphrase = errors.New("wrong or missing passphrase")
)

// corrupt wraps ErrCorrupt with what was found and the way out.
func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w ("+format+"); use another copy of the backup", append([]any{ErrCorrupt}, args...)...)
}

// asCorrupt reports err, met while doing what, as corruption, unless it
// already is: errors from the decryption travel up through gzip and tar.
func asCorrupt(what string, err error) error {
	if errors.Is(err, ErrCorrupt) {
		return err
	}
	if err == io.EOF {
		// Inside the payload an end of file is always one too early.
		err = io.ErrUnexpectedEOF
	}
	return corrupt("%s: %w", what, err)
}

// checkName refuses entry names that could land outside the restore
// directory or collide with the manifest.
func checkName(name string) error {
	switch {
	case name == manifestName:
		return fmt.Errorf("backup entry %q: the name is reserved for the manifest", name)
	case name == "." || !fs.ValidPath(name) || strings.ContainsRune(name, 0):
		return fmt.Errorf(`backup entry %q: want a relative slash path without "." or ".." elements`, name)
	}
	return nil
}

// nameSet holds the names of a backup's entries and the directories they
// imply, so a name cannot be both a file and a directory, nor repeat.
type nameSet struct {
	files, dirs map[string]bool
}

func newNameSet() nameSet {
	return nameSet{files: map[string]bool{}, dirs: map[string]bool{}}
}

func (s nameSet) add(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if s.files[name] {
		return fmt.Errorf("backup entry %q: duplicate name", name)
	}
	if s.dirs[name] {
		return fmt.Errorf("backup entry %q: already a directory holding other entries", name)
	}
	for d := path.Dir(name); d != "."; d = path.Dir(d) {
		if s.files[d] {
			return fmt.Errorf("backup entry %q: %q is a file in this backup, so it cannot be a directory", name, d)
		}
	}
	s.files[name] = true
	for d := path.Dir(name); d != "."; d = path.Dir(d) {
		s.dirs[d] = true
	}
	return nil
}
