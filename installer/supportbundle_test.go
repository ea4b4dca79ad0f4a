package installer

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/cartodb/carto-appliance/config"
)

// bundleEntries reads a support bundle's entries by name (without its
// top directory).
func bundleEntries(t *testing.T, data []byte) map[string]string {
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
		_, name, _ := strings.Cut(h.Name, "/")
		out[name] = string(b)
	}
}

// A bundle of a running node holds its settings, state, status, the
// containers and the host's facts, and none of the customer package's
// secrets, even where a container's environment or a file holds them.
func TestSupportBundle(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("console password 1234"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	paths, f := applied(t, config.Config{Domain: "carto.example.com", Console: config.ConsoleConfig{PasswordHash: string(hash)}})
	f.DiagnoseEnv = []string{"POSTGRES_ADMIN_PASSWORD=admin-pass", "LOG_LEVEL=info", "DSN=postgres://u:ws-pass@db/x"}
	var buf bytes.Buffer
	sum, err := SupportBundle(t.Context(), &buf, SupportBundleOptions{Paths: paths, LogLines: 10})
	if err != nil {
		t.Fatal(err)
	}
	got := bundleEntries(t, buf.Bytes())
	for _, name := range []string{"config/appliance.yaml", "config/.env", "config/customer.env", "state/state.json", "status.json", "engine/containers.json", "host/facts.json", "host/df.txt", "REDACTIONS", "MANIFEST"} {
		if _, ok := got[name]; !ok {
			t.Errorf("no %s in the bundle (has %d entries)", name, len(got))
		}
	}
	for name, text := range got {
		for _, secret := range []string{"admin-pass", "ws-pass", "0a1b2c3d4e", string(hash)} {
			if strings.Contains(text, secret) {
				t.Errorf("%s holds %q", name, secret)
			}
		}
	}
	if !strings.Contains(got["engine/containers.json"], "LOG_LEVEL=info") || !strings.Contains(got["REDACTIONS"], "config/.env: POSTGRES_ADMIN_PASSWORD") {
		t.Errorf("containers:\n%s\nREDACTIONS:\n%s", got["engine/containers.json"], got["REDACTIONS"])
	}
	if sum.Redactions == 0 || sum.Entries < 10 {
		t.Errorf("summary %+v", sum)
	}
}

// With the engine down, the bundle still has the host's facts and the
// settings, and says what it could not collect.
func TestSupportBundleWithTheEngineDown(t *testing.T) {
	paths, f := applied(t, config.Config{})
	f.Fail["connect"] = errors.New("Cannot connect to the Docker daemon at unix:///var/run/docker.sock")
	var buf bytes.Buffer
	sum, err := SupportBundle(t.Context(), &buf, SupportBundleOptions{Paths: paths})
	if err != nil {
		t.Fatal(err)
	}
	got := bundleEntries(t, buf.Bytes())
	if _, ok := got["host/facts.json"]; !ok || got["config/appliance.yaml"] == "" {
		t.Errorf("host facts or settings missing: %v", sum)
	}
	if !strings.Contains(got["MANIFEST"], "engine/containers.json: Cannot connect to the Docker daemon") || !strings.Contains(got["MANIFEST"], "status.json:") {
		t.Errorf("MANIFEST:\n%s", got["MANIFEST"])
	}
	if len(sum.Missing) == 0 {
		t.Error("the summary names nothing missing")
	}
}
