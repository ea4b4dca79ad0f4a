package release

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/release/releasetest"
)

// testChannel publishes releases (version, min_upgrade_from pairs) into
// channel stable of a fresh directory, with the code carto-release publish
// runs, and serves it over https under /carto/.
type testChannel struct {
	root string
	srv  *httptest.Server
	base *url.URL
}

func newTestChannel(t *testing.T, releases ...[2]string) *testChannel {
	t.Helper()
	root := t.TempDir()
	for _, v := range releases {
		if _, err := Publish(root, "stable", testRelease(t, v[0], v[1]), releasetest.KeyName, releasetest.Key, now); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewTLSServer(http.StripPrefix("/carto", http.FileServer(http.Dir(root))))
	t.Cleanup(srv.Close)
	base, _ := url.Parse(srv.URL + "/carto")
	return &testChannel{root: root, srv: srv, base: base}
}

func (c *testChannel) url(path string) string { return c.srv.URL + "/carto/" + path }

func (c *testChannel) write(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(c.root, path), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

var twoReleases = [][2]string{{"2025.11.3", "2025.6.2"}, {"2025.12.1", "2025.11.3"}}

func TestFetchIndexAndRelease(t *testing.T) {
	t.Parallel()
	c := newTestChannel(t, twoReleases[1], twoReleases[0])
	ctx := context.Background()
	idx, err := FetchIndex(ctx, c.srv.Client(), c.base, "stable")
	if err != nil {
		t.Fatal(err)
	}
	if idx.Channel != "stable" || len(idx.Releases) != 2 || idx.Releases[0].Version != "2025.11.3" || idx.Releases[1].MinUpgradeFrom != "2025.11.3" || idx.Releases[1].MinApplianceVersion != "1.2.0" {
		t.Fatalf("index %+v", idx)
	}
	r, err := FetchRelease(ctx, c.srv.Client(), c.base, "stable", "2025.12.1")
	if err != nil {
		t.Fatal(err)
	}
	if want := testRelease(t, "2025.12.1", "2025.11.3").Digest(); r.Digest() != want || r.Manifest.Version != "2025.12.1" {
		t.Errorf("fetched %s %s, want %s", r.Manifest.Version, r.Digest(), want)
	}
}

// Every way a channel can be wrong is refused, naming the URL at fault.
func TestFetchRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		break_  func(t *testing.T, c *testChannel)
		version string // "" fetches the index only
		url     string // what the error names, under the base
		says    string
		is      error
	}{
		{name: "index not JSON", url: "stable/index.json", says: "not a channel index (not its JSON",
			break_: func(t *testing.T, c *testChannel) {
				c.write(t, "stable/index.json", []byte("<html>captive portal</html>"))
			}},
		{name: "index altered after signing", url: "stable/index.json", says: "not the one signed", is: ErrUntrusted,
			break_: func(t *testing.T, c *testChannel) {
				b, _ := os.ReadFile(filepath.Join(c.root, "stable/index.json"))
				var idx Index
				json.Unmarshal(b, &idx)
				idx.Releases = idx.Releases[:1] // hide the newest
				b, _ = json.Marshal(idx)
				c.write(t, "stable/index.json", b)
			}},
		{name: "index signature altered", url: "stable/index.json.sig", says: "does not verify", is: ErrUntrusted,
			break_: func(t *testing.T, c *testChannel) {
				b, _ := os.ReadFile(filepath.Join(c.root, "stable/index.json.sig"))
				var s sigFile
				json.Unmarshal(b, &s)
				s.Signature = strings.Repeat("A", len(s.Signature)-2) + "=="
				b, _ = json.Marshal(s)
				c.write(t, "stable/index.json.sig", b)
			}},
		{name: "index signature missing", url: "stable/index.json.sig", says: "the channel's index is unsigned", is: ErrUntrusted,
			break_: func(t *testing.T, c *testChannel) { os.Remove(filepath.Join(c.root, "stable/index.json.sig")) }},
		{name: "another channel's index", url: "stable/index.json", says: `index of channel "beta"`,
			break_: func(t *testing.T, c *testChannel) {
				if _, err := Publish(c.root, "beta", testRelease(t, "2026.1.1", "2025.1.1"), releasetest.KeyName, releasetest.Key, now); err != nil {
					t.Fatal(err)
				}
				for _, f := range []string{IndexFile, IndexSigFile} {
					b, _ := os.ReadFile(filepath.Join(c.root, "beta", f))
					c.write(t, "stable/"+f, b)
				}
			}},
		{name: "version not in the channel", version: "2026.1.1", url: "stable/index.json", says: "lists 2025.11.3, 2025.12.1", is: ErrNotInChannel},
		{name: "release file changed", version: "2025.12.1", url: "stable/2025.12.1/", says: "not the ones signed", is: ErrUntrusted,
			break_: func(t *testing.T, c *testChannel) { c.write(t, "stable/2025.12.1/env.tpl", []byte("EVIL=1\n")) }},
		{name: "release signature missing", version: "2025.12.1", url: "stable/2025.12.1/release.sig", says: "the release is unsigned", is: ErrUntrusted,
			break_: func(t *testing.T, c *testChannel) { os.Remove(filepath.Join(c.root, "stable/2025.12.1/release.sig")) }},
		// Signed, but not the release the index lists for this version.
		{name: "release digest not the index's", version: "2025.12.1", url: "stable/2025.12.1/", says: "not the one the channel's index lists",
			break_: func(t *testing.T, c *testChannel) {
				other := testRelease(t, "2025.12.1", "2025.11.3")
				other.Compose = append(other.Compose, "# rebuilt\n"...)
				c.write(t, "stable/2025.12.1/docker-compose.yml", other.Compose)
				c.write(t, "stable/2025.12.1/release.sig", mustSign(t, other))
			}},
		{name: "a file far too large", url: "stable/index.json", says: "larger than",
			break_: func(t *testing.T, c *testChannel) { c.write(t, "stable/index.json", make([]byte, maxIndex+1)) }},
		{name: "a file missing", version: "2025.12.1", url: "stable/2025.12.1/env.tpl", says: "404 Not Found",
			break_: func(t *testing.T, c *testChannel) { os.Remove(filepath.Join(c.root, "stable/2025.12.1/env.tpl")) }},
		{name: "server down", url: "stable/index.json", says: "connect",
			break_: func(t *testing.T, c *testChannel) { c.srv.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newTestChannel(t, twoReleases...)
			if tc.break_ != nil {
				tc.break_(t, c)
			}
			var err error
			if tc.version == "" {
				_, err = FetchIndex(ctx, c.srv.Client(), c.base, "stable")
			} else {
				_, err = FetchRelease(ctx, c.srv.Client(), c.base, "stable", tc.version)
			}
			if err == nil || !strings.Contains(err.Error(), c.url(tc.url)) || !strings.Contains(err.Error(), tc.says) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Errorf("%v\nwant an error naming %s and saying %q", err, c.url(tc.url), tc.says)
			}
		})
	}
}

// An unreachable channel through a proxy names the proxy; a channel is
// https only.
func TestFetchNamesProxyAndRefusesHTTP(t *testing.T) {
	t.Parallel()
	c := newTestChannel(t, twoReleases...)
	client := c.srv.Client()
	tr := client.Transport.(*http.Transport).Clone()
	proxyURL, _ := url.Parse("http://user:secret@127.0.0.1:1")
	tr.Proxy = http.ProxyURL(proxyURL)
	client.Transport = tr
	_, err := FetchIndex(context.Background(), client, c.base, "stable")
	if err == nil || !strings.Contains(err.Error(), "through the proxy http://127.0.0.1:1") || !strings.Contains(err.Error(), c.url("stable/index.json")) || strings.Contains(err.Error(), "secret") {
		t.Errorf("through a dead proxy: %v", err)
	}

	// Redirects stay on https.
	redirect := httptest.NewTLSServer(http.RedirectHandler("http://example.invalid/carto/stable/index.json", http.StatusFound))
	defer redirect.Close()
	rbase, _ := url.Parse(redirect.URL + "/carto")
	if _, err := FetchIndex(context.Background(), redirect.Client(), rbase, "stable"); err == nil || !strings.Contains(err.Error(), "redirected to http://example.invalid/carto/stable/index.json: a release channel must stay on https") {
		t.Errorf("a redirect to http: %v", err)
	}

	plain, _ := url.Parse(strings.Replace(c.base.String(), "https:", "http:", 1))
	if _, err := FetchIndex(context.Background(), c.srv.Client(), plain, "stable"); err == nil || !strings.Contains(err.Error(), "https only") {
		t.Errorf("an http channel: %v", err)
	}
	if _, err := FetchIndex(context.Background(), c.srv.Client(), c.base, "../etc"); err == nil {
		t.Error("a channel name with a path was fetched")
	}
}

func TestPublish(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	r := testRelease(t, "2025.11.3", "2025.6.2")
	e, err := Publish(root, "stable", r, releasetest.KeyName, releasetest.Key, now)
	if err != nil {
		t.Fatal(err)
	}
	// Again, the same content, later: only re-signed, first date kept.
	again, err := Publish(root, "stable", r, releasetest.KeyName, releasetest.Key, now.AddDate(0, 0, 1))
	if err != nil || again != e {
		t.Fatalf("republishing: %v, %+v want %+v", err, again, e)
	}
	for _, f := range []string{"stable/index.json", "stable/index.json.sig", "stable/2025.11.3/manifest.yaml", "stable/2025.11.3/release.sig"} {
		fi, err := os.Stat(filepath.Join(root, f))
		if err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: %v %v, want a world-readable file", f, err, fi)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "stable/index.json.prev")); err == nil {
		t.Error("a previous index was left for the web server to serve")
	}
	// A published version never changes.
	changed := testRelease(t, "2025.11.3", "2025.6.2")
	changed.EnvTemplate = []byte("CHANGED=1\n")
	if _, err := Publish(root, "stable", changed, releasetest.KeyName, releasetest.Key, now); err == nil || !strings.Contains(err.Error(), "never changes") {
		t.Errorf("republishing other content: %v", err)
	}
	// A channel's release pins its images.
	unpinned := testRelease(t, "2025.12.1", "2025.6.2")
	delete(unpinned.Manifest.ImageDigests, "api")
	if _, err := Publish(root, "stable", unpinned, releasetest.KeyName, releasetest.Key, now); err == nil || !strings.Contains(err.Error(), "[api]") {
		t.Errorf("publishing an unpinned image: %v", err)
	}
	if _, err := Publish(root, "Stable!", r, releasetest.KeyName, releasetest.Key, now); err == nil {
		t.Error("published into a channel named Stable!")
	}
}

// FuzzParseIndex: any input is refused or gives an index whose entries
// are valid, distinct and sorted, and that reads back the same.
func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(`{"format_version":1,"channel":"stable","releases":[{"version":"2025.12.1","digest":"sha256:` + strings.Repeat("0", 64) + `","min_upgrade_from":"2025.11.3"},{"version":"2025.11.3","digest":"sha256:` + strings.Repeat("a", 64) + `","min_upgrade_from":"2025.6.2","min_appliance_version":"1.2"}]}`))
	f.Add([]byte(`{"format_version":1,"channel":"stable","releases":[],"appliances":[{"version":"1.3.0","binaries":{"linux_amd64":{"digest":"sha256:` + strings.Repeat("b", 64) + `","size":7}}},{"version":"1.2.0","binaries":{"linux_arm64":{"digest":"sha256:` + strings.Repeat("c", 64) + `","size":9}}}]}`))
	f.Add([]byte(`{"format_version":2}`))
	f.Add([]byte(`<html>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		idx, err := ParseIndex(data)
		if err != nil {
			return
		}
		for i, e := range idx.Releases {
			if e.check() != nil || (i > 0 && mustVersion(idx.Releases[i-1].Version).Compare(mustVersion(e.Version)) >= 0) {
				t.Fatalf("accepted an invalid, repeated or unsorted entry %d: %+v", i, idx.Releases)
			}
		}
		for i, e := range idx.Appliances {
			if e.check() != nil || (i > 0 && mustVersion(idx.Appliances[i-1].Version).Compare(mustVersion(e.Version)) >= 0) {
				t.Fatalf("accepted an invalid, repeated or unsorted appliance %d: %+v", i, idx.Appliances)
			}
		}
		b, _ := json.Marshal(idx)
		back, err := ParseIndex(b)
		if err != nil || len(back.Releases) != len(idx.Releases) || len(back.Appliances) != len(idx.Appliances) {
			t.Fatalf("%s does not read back: %v", b, err)
		}
	})
}
