package backupfile

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestMain(m *testing.M) {
	// The default cost is part of the format's promise; check it before
	// making it cheap for the suite.
	if scryptN != 32768 {
		fmt.Fprintf(os.Stderr, "scryptN = %d, want 32768\n", scryptN)
		os.Exit(1)
	}
	scryptN = 16
	maxScryptMem = 128 * 1024 * scryptR
	os.Exit(m.Run())
}

type file struct {
	name string
	mode fs.FileMode
	data []byte
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// sample has an empty entry and one spanning several encryption chunks.
var sample = []file{
	{"config/appliance.yaml", 0o600, []byte("domain: carto.example.com\n")},
	{"empty", 0o644, nil},
	{"db/dump/carto.sql", 0o400, bytes.Repeat([]byte("INSERT INTO t VALUES (1);\n"), 100)},
	{"big.bin", 0o640, random(300 << 10)},
}

var sampleHeader = Header{
	ApplianceVersion: "1.4.0",
	CartoVersion:     "2025.06.01",
	Created:          time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC),
	Host:             "carto-1",
}

func build(t testing.TB, pass string, files []file) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, sampleHeader, []byte(pass))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if err := w.Add(f.name, f.mode, int64(len(f.data)), bytes.NewReader(f.data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// restore opens data into a fresh directory under base and returns it.
func restore(t testing.TB, base string, data []byte, pass []byte) (*Header, string, error) {
	t.Helper()
	dir, err := os.MkdirTemp(base, "restore")
	if err != nil {
		t.Fatal(err)
	}
	h, err := Open(context.Background(), bytes.NewReader(data), pass, dir)
	return h, dir, err
}

func TestRoundTrip(t *testing.T) {
	for _, pass := range []string{"", "correct horse battery staple"} {
		t.Run(fmt.Sprintf("encrypted=%t", pass != ""), func(t *testing.T) {
			t.Parallel()
			data := build(t, pass, sample)
			h, dir, err := restore(t, t.TempDir(), data, []byte(pass))
			if err != nil {
				t.Fatal(err)
			}
			if h.FormatVersion != FormatVersion || h.Encrypted != (pass != "") || h.Host != "carto-1" ||
				h.ApplianceVersion != "1.4.0" || h.CartoVersion != "2025.06.01" || !h.Created.Equal(sampleHeader.Created) {
				t.Errorf("header = %+v", h)
			}
			if len(h.Entries) != len(sample) {
				t.Fatalf("%d entries, want %d", len(h.Entries), len(sample))
			}
			for i, f := range sample {
				sum := sha256.Sum256(f.data)
				want := Entry{Name: f.name, Size: int64(len(f.data)), SHA256: hex.EncodeToString(sum[:]), Mode: uint32(f.mode)}
				if h.Entries[i] != want {
					t.Errorf("entry %d = %+v, want %+v", i, h.Entries[i], want)
				}
				p := filepath.Join(dir, filepath.FromSlash(f.name))
				got, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, f.data) {
					t.Errorf("%s: content differs", f.name)
				}
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode() != f.mode {
					t.Errorf("%s: mode %v, want %v", f.name, fi.Mode(), f.mode)
				}
			}
		})
	}
}

func TestEncryptedSpansChunks(t *testing.T) {
	data := build(t, "p", sample)
	if len(data) < 4*(chunkSize+16) {
		t.Fatalf("encrypted sample is %d bytes: too small to span several chunks", len(data))
	}
}

func TestNoEmptyEntries(t *testing.T) {
	// A backup with no entry at all is still a valid backup.
	for _, pass := range []string{"", "p"} {
		data := build(t, pass, nil)
		h, _, err := restore(t, t.TempDir(), data, []byte(pass))
		if err != nil {
			t.Fatal(err)
		}
		if len(h.Entries) != 0 {
			t.Errorf("entries = %v", h.Entries)
		}
	}
}

func TestPassphrase(t *testing.T) {
	enc := build(t, "right", sample[:2])
	plain := build(t, "", sample[:2])
	tests := []struct {
		name string
		data []byte
		pass []byte
		want error
	}{
		{"wrong", enc, []byte("wrong"), ErrPassphrase},
		{"nil", enc, nil, ErrPassphrase},
		{"empty", enc, []byte{}, ErrPassphrase},
		{"right", enc, []byte("right"), nil},
		{"plain ignores a passphrase", plain, []byte("anything"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := restore(t, t.TempDir(), tt.data, tt.pass)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if errors.Is(err, ErrCorrupt) {
				t.Errorf("a passphrase error is also ErrCorrupt: %v", err)
			}
		})
	}
}

// refused reports whether err is one of the errors a damaged file may give.
func refused(err error) bool {
	return errors.Is(err, ErrCorrupt) || errors.Is(err, ErrPassphrase) || errors.Is(err, ErrNotBackup)
}

func TestFlips(t *testing.T) {
	// 70 KiB of noise: the encrypted file has two chunks.
	files := []file{sample[0], sample[1], {"mid.bin", 0o600, random(70 << 10)}}
	for _, pass := range []string{"", "p"} {
		t.Run(fmt.Sprintf("encrypted=%t", pass != ""), func(t *testing.T) {
			t.Parallel()
			data := build(t, pass, files)
			base := t.TempDir()
			type flip struct {
				at int
				x  byte
			}
			// Every byte of the magic and header line both ways: a low-bit
			// flip keeps JSON digits digits and base64 base64.
			var flips []flip
			head := bytes.IndexByte(data[len(magic):], '\n') + len(magic) + 1
			for i := range head {
				flips = append(flips, flip{i, 0x01}, flip{i, 0xff})
			}
			// Then every 97th byte, alternating the two, and the last.
			for i := head; i < len(data); i += 97 {
				flips = append(flips, flip{i, []byte{0x01, 0xff}[i/97%2]})
			}
			flips = append(flips, flip{len(data) - 1, 0x01})
			for _, f := range flips {
				bad := bytes.Clone(data)
				bad[f.at] ^= f.x
				_, dir, err := restore(t, base, bad, []byte(pass))
				if !refused(err) {
					t.Errorf("byte %d of %d ^ %#x: err = %v", f.at, len(data), f.x, err)
				}
				os.RemoveAll(dir)
			}
		})
	}
}

func TestTruncated(t *testing.T) {
	for _, pass := range []string{"", "p"} {
		t.Run(fmt.Sprintf("encrypted=%t", pass != ""), func(t *testing.T) {
			t.Parallel()
			data := build(t, pass, sample)
			head := bytes.IndexByte(data[len(magic):], '\n') + len(magic) + 1
			lengths := []int{0, 1, len(magic) - 1, len(magic), head - 1, head, len(data) - 1, len(data) - trailerSize, len(data) - trailerSize - 1}
			for n := head + 1; n < len(data); n += 1009 {
				lengths = append(lengths, n)
			}
			for k := 1; head+k*(chunkSize+16) < len(data); k++ {
				lengths = append(lengths, head+k*(chunkSize+16)) // cut at a chunk boundary
			}
			base := t.TempDir()
			for _, n := range lengths {
				_, dir, err := restore(t, base, data[:n], []byte(pass))
				if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotBackup) {
					t.Errorf("cut to %d of %d bytes: err = %v", n, len(data), err)
				}
				os.RemoveAll(dir)
			}
		})
	}
}

func TestChunksMoved(t *testing.T) {
	data := build(t, "p", sample)
	head := bytes.IndexByte(data[len(magic):], '\n') + len(magic) + 1
	const c = chunkSize + 16
	chunk := func(i int) []byte { return data[head+i*c : head+(i+1)*c] }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	rest := data[head+3*c:]
	tests := map[string][]byte{
		"swapped":  cat(data[:head], chunk(0), chunk(2), chunk(1), rest),
		"dropped":  cat(data[:head], chunk(0), chunk(2), rest),
		"repeated": cat(data[:head], chunk(0), chunk(1), chunk(1), chunk(2), rest),
		"appended": cat(data, data[len(data)-40:]),
	}
	for name, bad := range tests {
		t.Run(name, func(t *testing.T) {
			if _, _, err := restore(t, t.TempDir(), bad, []byte("p")); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestAppendedToPlain(t *testing.T) {
	data := build(t, "", sample[:2])
	if _, _, err := restore(t, t.TempDir(), append(bytes.Clone(data), 0), nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
}

func TestNewerFormat(t *testing.T) {
	for _, pass := range []string{"", "p"} {
		data := build(t, pass, sample[:2])
		bad := bytes.Replace(data, []byte(`"format_version":1`), []byte(`"format_version":2`), 1)
		_, _, err := restore(t, t.TempDir(), bad, []byte(pass))
		if !errors.Is(err, ErrNewerFormat) {
			t.Fatalf("encrypted=%t: err = %v, want ErrNewerFormat", pass != "", err)
		}
		if msg := err.Error(); !strings.Contains(msg, "format 2") || !strings.Contains(msg, "restore it with that version or newer") {
			t.Errorf("message %q does not name the format and the fix", msg)
		}
	}
}

func TestNotBackup(t *testing.T) {
	gz := func() []byte {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		w.Write([]byte("hello"))
		w.Close()
		return b.Bytes()
	}()
	for _, data := range [][]byte{nil, []byte("hello\n"), gz, []byte("CARTO-APPLIANCE-BACKUX\n{}\n")} {
		if _, _, err := restore(t, t.TempDir(), data, nil); !errors.Is(err, ErrNotBackup) {
			t.Errorf("%q: err = %v, want ErrNotBackup", data, err)
		}
	}
}

func TestBadHeader(t *testing.T) {
	salt := strings.Repeat("A", 43) + "="
	enc := func(kdf string) string {
		return `{"format_version":1,"encrypted":true,"kdf":` + kdf +
			`,"nonce_prefix":"AAAAAAAAAA==","key_check":"` + salt + `"}`
	}
	tests := map[string]string{
		"too long":     strings.Repeat("x", maxHeaderLine+10),
		"not json":     "format 1",
		"no version":   `{"encrypted":false}`,
		"version 0":    `{"format_version":0,"encrypted":false}`,
		"plain w/ kdf": `{"format_version":1,"encrypted":false,"key_check":"` + salt + `"}`,
		"no kdf":       `{"format_version":1,"encrypted":true}`,
		"N too big":    enc(`{"name":"scrypt","n":1073741824,"r":8,"p":1,"salt":"` + salt + `"}`),
		"N not pow2":   enc(`{"name":"scrypt","n":100,"r":8,"p":1,"salt":"` + salt + `"}`),
		"unknown kdf":  enc(`{"name":"argon2id","n":16,"r":8,"p":1,"salt":"` + salt + `"}`),
	}
	for name, line := range tests {
		t.Run(name, func(t *testing.T) {
			data := []byte(magic + line + "\n" + "payload")
			if _, _, err := restore(t, t.TempDir(), data, []byte("p")); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestCancelled(t *testing.T) {
	data := build(t, "", sample)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Open(ctx, bytes.NewReader(data), nil, t.TempDir())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestReadError(t *testing.T) {
	data := build(t, "", sample)
	boom := errors.New("disk on fire")
	r := io.MultiReader(bytes.NewReader(data[:len(data)/2]), iotest.ErrReader(boom))
	_, err := Open(context.Background(), r, nil, t.TempDir())
	if !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want the read error, not ErrCorrupt", err)
	}
}

func TestAddRefuses(t *testing.T) {
	tests := []struct {
		name string
		mode fs.FileMode
		size int64
		data string
	}{
		{"../x", 0o600, 1, "x"},
		{"/etc/x", 0o600, 1, "x"},
		{"a/../../x", 0o600, 1, "x"},
		{"", 0o600, 1, "x"},
		{".", 0o600, 1, "x"},
		{"a//b", 0o600, 1, "x"},
		{"a/", 0o600, 1, "x"},
		{"x\x00y", 0o600, 1, "x"},
		{manifestName, 0o600, 1, "x"},
		{"dup", 0o600, 1, "x"},           // added below first
		{"dir", 0o600, 1, "x"},           // a directory of "dir/f"
		{"f/g", 0o600, 1, "x"},           // "f" is a file
		{"d", fs.ModeDir | 0o700, 0, ""}, // not a regular file
		{"l", fs.ModeSymlink | 0o777, 0, ""},
		{"neg", 0o600, -1, ""},
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"dup", "dir/f", "f"} {
		if err := w.Add(name, 0o600, 1, strings.NewReader("x")); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range tests {
		if err := w.Add(tt.name, tt.mode, tt.size, strings.NewReader(tt.data)); err == nil {
			t.Errorf("Add(%q, %v) succeeded", tt.name, tt.mode)
		}
	}
	// Refused names leave the writer usable.
	if err := w.Add("ok", 0o600, 2, strings.NewReader("ok")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	h, _, err := restore(t, t.TempDir(), buf.Bytes(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Entries) != 4 {
		t.Errorf("entries = %v", h.Entries)
	}
	if err := w.Add("late", 0o600, 0, strings.NewReader("")); err == nil {
		t.Error("Add after Close succeeded")
	}
}

func TestAddWrongSize(t *testing.T) {
	for _, tt := range []struct {
		size int64
		data string
	}{{10, "short"}, {2, "long"}} {
		w, err := NewWriter(io.Discard, Header{}, []byte("p"))
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Add("f", 0o600, tt.size, strings.NewReader(tt.data)); err == nil {
			t.Errorf("Add of %d bytes as %d succeeded", len(tt.data), tt.size)
		}
		// The stream is broken: nothing more may be written.
		if err := w.Add("g", 0o600, 0, strings.NewReader("")); err == nil {
			t.Error("Add after a failed Add succeeded")
		}
		if err := w.Close(); err == nil {
			t.Error("Close after a failed Add succeeded")
		}
	}
}

// rawEntry is a tar entry written as is, for archives the Writer refuses
// to make.
type rawEntry struct {
	hdr  tar.Header
	data []byte
}

func reg(name string, mode int64, data string) rawEntry {
	return rawEntry{tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}, []byte(data)}
}

func entryOf(name string, mode uint32, data string) Entry {
	sum := sha256.Sum256([]byte(data))
	return Entry{Name: name, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]), Mode: mode}
}

func manifest(t *testing.T, version int, entries ...Entry) rawEntry {
	b, err := json.Marshal(Header{FormatVersion: version, Entries: entries})
	if err != nil {
		t.Fatal(err)
	}
	return reg(manifestName, 0o600, string(b))
}

// craft makes a plain backup with a valid checksum around the given tar
// entries, then extra bytes after the gzip stream.
func craft(t *testing.T, entries []rawEntry, extra []byte) []byte {
	var payload bytes.Buffer
	gz := gzip.NewWriter(&payload)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		if err := tw.WriteHeader(&e.hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	data := []byte(magic + `{"format_version":1,"encrypted":false}` + "\n")
	data = append(data, payload.Bytes()...)
	data = append(data, extra...)
	sum := sha256.Sum256(data)
	return append(data, sum[:]...)
}

func TestCraftedArchives(t *testing.T) {
	a := reg("a", 0o600, "hello")
	ea := entryOf("a", 0o600, "hello")
	symlink := rawEntry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "l", Linkname: "/etc/passwd", Mode: 0o777}}
	dir := rawEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "d/", Mode: 0o700}}
	tests := []struct {
		name    string
		entries []rawEntry
		extra   []byte
		ok      bool
	}{
		{"valid", []rawEntry{a, manifest(t, 1, ea)}, nil, true},
		{"dot-dot", []rawEntry{reg("../x", 0o600, "x"), manifest(t, 1, entryOf("../x", 0o600, "x"))}, nil, false},
		{"absolute", []rawEntry{reg("/etc/x", 0o600, "x"), manifest(t, 1, entryOf("/etc/x", 0o600, "x"))}, nil, false},
		{"dot-dot inside", []rawEntry{reg("a/../../x", 0o600, "x"), manifest(t, 1, entryOf("a/../../x", 0o600, "x"))}, nil, false},
		{"symlink", []rawEntry{symlink, manifest(t, 1)}, nil, false},
		{"directory", []rawEntry{dir, manifest(t, 1)}, nil, false},
		{"setuid", []rawEntry{reg("a", 0o4755, "hello"), manifest(t, 1, entryOf("a", 0o4755, "hello"))}, nil, false},
		{"duplicate", []rawEntry{a, a, manifest(t, 1, ea)}, nil, false},
		{"file then dir", []rawEntry{a, reg("a/b", 0o600, "x"), manifest(t, 1, ea, entryOf("a/b", 0o600, "x"))}, nil, false},
		{"extra entry", []rawEntry{a, reg("b", 0o600, "x"), manifest(t, 1, ea)}, nil, false},
		{"missing entry", []rawEntry{a, manifest(t, 1, ea, entryOf("b", 0o600, "x"))}, nil, false},
		{"size differs", []rawEntry{a, manifest(t, 1, Entry{Name: "a", Size: 4, SHA256: ea.SHA256, Mode: 0o600})}, nil, false},
		{"sha differs", []rawEntry{a, manifest(t, 1, entryOf("a", 0o600, "hellp"))}, nil, false},
		{"mode differs", []rawEntry{a, manifest(t, 1, entryOf("a", 0o644, "hello"))}, nil, false},
		{"listed twice", []rawEntry{a, manifest(t, 1, ea, ea)}, nil, false},
		{"entry after manifest", []rawEntry{manifest(t, 1, ea), a}, nil, false},
		{"no manifest", []rawEntry{a}, nil, false},
		{"manifest format differs", []rawEntry{a, manifest(t, 2, ea)}, nil, false},
		{"data after gzip", []rawEntry{a, manifest(t, 1, ea)}, []byte("more"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			_, _, err := restore(t, base, craft(t, tt.entries, tt.extra), nil)
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
			} else if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
			assertInside(t, base)
		})
	}
}

// assertInside fails unless base holds only restore directories, and
// those only regular files and directories.
func assertInside(t testing.TB, base string) {
	t.Helper()
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(base, p)
		if filepath.Dir(rel) == "." && !d.IsDir() {
			return fmt.Errorf("%s written outside the restore directory", rel)
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return fmt.Errorf("%s is a %v", rel, d.Type())
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

func TestDefaultCost(t *testing.T) {
	if testing.Short() {
		t.Skip("derives keys at the full cost")
	}
	// Top-level and not parallel: no other test runs while the globals
	// are at their defaults.
	n, mem := scryptN, maxScryptMem
	scryptN, maxScryptMem = 32768, 256<<20
	defer func() { scryptN, maxScryptMem = n, mem }()
	data := build(t, "p", sample[:2])
	if !bytes.Contains(data[:512], []byte(`"n":32768,"r":8,"p":1`)) {
		t.Errorf("header %q does not hold the default cost", data[:bytes.IndexByte(data[len(magic):], '\n')+len(magic)])
	}
	if _, _, err := restore(t, t.TempDir(), data, []byte("p")); err != nil {
		t.Fatal(err)
	}
}
