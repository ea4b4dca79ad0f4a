// Package boundedread reads the files an operator names on the command line
// (customer.env, key.json, licences, certificates, keys, CA files) without
// letting a wrong path hurt: a device, FIFO, socket or directory is refused
// before it is read, so /dev/zero cannot exhaust memory and a FIFO cannot
// block the process beyond the reach of SIGTERM and Ctrl-C, and a file over
// its kind's limit is refused.
package boundedread

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
)

// Limits per kind of file: far above any real one, far below what would
// hurt the host.
const (
	// EnvFile bounds customer.env and appliance.yaml (tens of lines).
	EnvFile = 1 << 20
	// KeyJSON bounds a GCP service-account key.json (about 2.3 KB).
	KeyJSON = 64 << 10
	// License bounds a licence (about 1 KB).
	License = 256 << 10
	// PEM bounds certificates, chains, CA bundles and keys (a whole system
	// trust store is about 200 KB).
	PEM = 4 << 20
	// Release bounds a release's manifest and templates (a few KiB each).
	Release = 4 << 20
	// SecretFile bounds a passphrase or password file (one line).
	SecretFile = 4 << 10
)

// ErrEmptySecret is returned by Secret for a file whose first line is
// empty.
var ErrEmptySecret = errors.New("its first line is empty")

// Secret reads a passphrase or password from the first line of the file at
// path (a trailing CR dropped): a file rather than a flag's value, which ps
// and the shell's history would show. An empty first line is
// ErrEmptySecret, never an empty secret: a backup asked to be encrypted
// must not be written in clear.
func Secret(path string) ([]byte, error) {
	b, err := ReadFile(path, SecretFile)
	if err != nil {
		return nil, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	if line = strings.TrimRight(line, "\r"); line == "" {
		return nil, fmt.Errorf("%s: %w", path, ErrEmptySecret)
	}
	return []byte(line), nil
}

// ErrNotRegular is returned for a path that is not a regular file (after
// symlinks): a device, FIFO, socket or directory.
var ErrNotRegular = errors.New("not a regular file")

// ErrTooLarge is returned for a file over its limit.
var ErrTooLarge = errors.New("too large")

// ReadFile reads the regular file at path, at most limit bytes. Its errors
// name path; callers add the flag or file it came from. A missing file is
// fs.ErrNotExist, as os.ReadFile's.
func ReadFile(path string, limit int64) ([]byte, error) {
	// Refused before opening: opening a FIFO blocks until a writer comes.
	fi, err := os.Stat(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			// To the operator the file was being opened, as os.ReadFile says.
			pe.Op = "open"
		}
		return nil, err
	}
	if err := check(path, fi, limit); err != nil {
		return nil, err
	}
	// O_NONBLOCK: should path become a FIFO between the Stat and the open,
	// the open returns at once and the check of the opened file refuses it.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, err
	}
	if err := check(path, fi, limit); err != nil {
		return nil, err
	}
	// The size can change while reading (a file still being written, or
	// one in /proc that reports 0): read one byte past the limit to know.
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, tooLarge(path, limit)
	}
	return b, nil
}

func check(path string, fi fs.FileInfo, limit int64) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is %s, %w: give the path of the file itself", path, describe(fi.Mode()), ErrNotRegular)
	}
	if fi.Size() > limit {
		return tooLarge(path, limit)
	}
	return nil
}

func tooLarge(path string, limit int64) error {
	return fmt.Errorf("%s is %w: over %s, which no such file reaches; check the path", path, ErrTooLarge, size(limit))
}

func describe(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	default:
		return "a special file"
	}
}

func size(n int64) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}
