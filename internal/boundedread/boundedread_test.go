package boundedread

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readSoon is ReadFile that fails the test instead of hanging.
func readSoon(t *testing.T, path string, limit int64) ([]byte, error) {
	t.Helper()
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := ReadFile(path, limit)
		done <- result{b, err}
	}()
	select {
	case r := <-done:
		return r.b, r.err
	case <-time.After(5 * time.Second):
		t.Fatalf("reading %s did not return", path)
		return nil, nil
	}
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "key.json")
	os.WriteFile(regular, []byte(`{"type":"service_account"}`), 0o600)
	link := filepath.Join(dir, "link.json")
	os.Symlink(regular, link)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, 2049), 0o600)
	exact := filepath.Join(dir, "exact")
	os.WriteFile(exact, make([]byte, 2048), 0o600)
	zeroLink := filepath.Join(dir, "zero.json")
	os.Symlink("/dev/zero", zeroLink)

	for _, tc := range []struct {
		name, path string
		wantErr    error
		wantMsg    string
	}{
		{"a regular file", regular, nil, ""},
		{"a symlink to a regular file", link, nil, ""},
		{"a file of exactly the limit", exact, nil, ""},
		{"/dev/zero", "/dev/zero", ErrNotRegular, "/dev/zero is a character device, not a regular file: give the path of the file itself"},
		{"a symlink to /dev/zero", zeroLink, ErrNotRegular, "is a character device"},
		{"a FIFO", fifo, ErrNotRegular, fifo + " is a FIFO, not a regular file"},
		{"a directory", dir, ErrNotRegular, "is a directory"},
		{"a file over the limit", big, ErrTooLarge, big + " is too large: over 2 KiB"},
		{"a missing file", filepath.Join(dir, "missing"), fs.ErrNotExist, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := readSoon(t, tc.path, 2048)
			if tc.wantErr == nil {
				if err != nil || len(b) == 0 {
					t.Fatalf("got %d bytes, %v", len(b), err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("got %v, want %v saying %q", err, tc.wantErr, tc.wantMsg)
			}
		})
	}
}

// A file that grows past the limit after the size check is still refused:
// the read stops one byte past the limit.
func TestReadFileStopsAtTheLimit(t *testing.T) {
	// /proc files report a size of 0 whatever they hold.
	b, err := readSoon(t, "/proc/self/status", 16)
	if !errors.Is(err, ErrTooLarge) || b != nil {
		t.Fatalf("got %d bytes, %v", len(b), err)
	}
}

// A secret is the first line of its file, CR dropped; an empty first line
// is an error, never an empty secret.
func TestSecret(t *testing.T) {
	dir := t.TempDir()
	for content, want := range map[string]string{
		"pass word\n":           "pass word",
		"pass word\r\nsecond\n": "pass word",
		"no newline":            "no newline",
		"\nsecond line":         "",
		"":                      "",
	} {
		path := filepath.Join(dir, "secret")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := Secret(path)
		if want == "" {
			if !errors.Is(err, ErrEmptySecret) {
				t.Errorf("%q: got %q, %v; want ErrEmptySecret", content, got, err)
			}
			continue
		}
		if err != nil || string(got) != want {
			t.Errorf("%q: got %q, %v; want %q", content, got, err, want)
		}
	}
	if _, err := Secret(dir); !errors.Is(err, ErrNotRegular) {
		t.Errorf("a directory: %v", err)
	}
}
