package support

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/envfile"
)

// read returns the bundle's entries by name.
func read(t *testing.T, data []byte) map[string]string {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	out := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		if h.Mode != 0o600 {
			t.Errorf("%s: mode %o", h.Name, h.Mode)
		}
		out[h.Name] = string(b)
	}
}

// Every entry is redacted, counted in REDACTIONS by what held the secret;
// what does not fit is cut (a log keeps its end) or left out; what could
// not be collected is in the MANIFEST, its error redacted too.
func TestBundle(t *testing.T) {
	r := envfile.NewRedaction(envfile.NewEnv("POSTGRES_ADMIN_PASSWORD", "s3cr3t-admin"), nil)
	var buf bytes.Buffer
	b := New(&buf, "carto-support", r.Redact, 60, time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC))
	b.Add("config/.env", []byte("POSTGRES_ADMIN_PASSWORD=s3cr3t-admin\n"))
	b.Add("logs/maps-api.log", []byte("0123456789 first line\nlast line with s3cr3t-admin\n"))
	b.Add("engine/info.json", []byte("{}"))
	b.Missing("agent/journal.txt", errors.New("journalctl: password=s3cr3t-admin refused"))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	got := read(t, buf.Bytes())
	all := ""
	for _, v := range got {
		all += v
	}
	if strings.Contains(all, "s3cr3t-admin") {
		t.Errorf("the secret is in the bundle:\n%v", got)
	}
	if env := got["carto-support/config/.env"]; env != "POSTGRES_ADMIN_PASSWORD=********\n" {
		t.Errorf(".env: %q", env)
	}
	if log := got["carto-support/logs/maps-api.log"]; !strings.HasSuffix(log, "last line with ********\n") || strings.Contains(log, "first line") {
		t.Errorf("the log was not cut to its end: %q", log)
	}
	if _, ok := got["carto-support/engine/info.json"]; ok {
		t.Error("an entry past the limit was written")
	}
	if red := got["carto-support/REDACTIONS"]; !strings.Contains(red, "config/.env: POSTGRES_ADMIN_PASSWORD, 1 time(s)") || !strings.Contains(red, "logs/maps-api.log: POSTGRES_ADMIN_PASSWORD, 1 time(s)") {
		t.Errorf("REDACTIONS:\n%s", red)
	}
	m := got["carto-support/MANIFEST"]
	for _, want := range []string{"logs/maps-api.log", "cut from", "engine/info.json  0 bytes (left out", "agent/journal.txt: journalctl: password=********"} {
		if !strings.Contains(m, want) {
			t.Errorf("MANIFEST lacks %q:\n%s", want, m)
		}
	}
	if s := b.Summary(); s.Entries != 2 || s.Redactions != 2 || len(s.Missing) != 1 || len(s.Cut) != 2 {
		t.Errorf("summary %+v", s)
	}
}
