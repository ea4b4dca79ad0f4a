// Package online is the licence's online check: the client that asks the
// licence server whether a licence is revoked (a signed answer to a fresh
// nonce, license.VerifyAnswer), and the record of its last answer or of
// since when it fails, which license.Evaluate turns into a grace period.
// It knows no appliance.yaml: the caller gives the server, the HTTP client
// (through the proxy) and the record's path.
package online

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/internal/urls"
	"github.com/cartodb/carto-appliance/license"
)

// maxAnswer bounds what is read of the server's answer.
const maxAnswer = 1 << 16

// Client asks one licence server.
type Client struct {
	// Server is the check URL: https, no credentials (the caller checked).
	Server string
	// HTTP goes out through the configured proxy; nil is
	// http.DefaultClient.
	HTTP *http.Client
}

// Ask posts the licence's id and tenant with a fresh nonce to the server
// and says whether it is revoked. An error is a server that gave no
// trusted answer: unreachable, refused by the proxy, not a licence server,
// or an answer that is unsigned, badly signed, replayed or stale
// (license.ErrUntrustedAnswer). Errors never show the URL whole: it may
// hold a secret.
func (c Client) Ask(ctx context.Context, l *license.License) (bool, error) {
	server := "the licence server"
	if u, err := url.Parse(c.Server); err == nil {
		server = urls.Redact(u)
	}
	base := c.HTTP
	if base == nil {
		base = http.DefaultClient
	}
	client := *base
	client.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if r.URL.Scheme != "https" || len(via) >= 5 {
			return fmt.Errorf("redirected to %s: the licence server must stay on https", urls.Redact(r.URL))
		}
		return nil
	}
	lreq, err := license.NewRequest(l)
	if err != nil {
		return false, err
	}
	body, _ := json.Marshal(lreq)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Server, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("asking %s: %w", server, urls.Cause(err))
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return false, fmt.Errorf("asking %s: %w", server, urls.Cause(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("%s answered %s", server, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return false, fmt.Errorf("reading %s's answer: %w", server, err)
	}
	a, err := license.VerifyAnswer(data, lreq, time.Now())
	if err != nil {
		return false, fmt.Errorf("%s: %w", server, err)
	}
	return a.Status == license.AnswerRevoked, nil
}

// Record is o after asking about licence id at now: an answer resets the
// failure, a failure starts (or keeps) the count of the grace period. A
// record of another licence is forgotten.
func Record(o license.Online, id string, revoked bool, err error, now time.Time) license.Online {
	if o.ID != id {
		o = license.Online{ID: id}
	}
	if err != nil {
		if o.FailingSince.IsZero() {
			o.FailingSince = now
		}
		o.Error = err.Error()
		return o
	}
	o.Checked, o.Revoked, o.FailingSince, o.Error = now, revoked, time.Time{}, ""
	return o
}

// Load reads the record at path; a missing or unreadable one is empty
// (no answer yet).
func Load(path string) license.Online {
	var o license.Online
	if b, err := os.ReadFile(path); err == nil {
		json.Unmarshal(b, &o)
	}
	// Older versions recorded a failure with the server's URL whole.
	o.Error = urlUserinfo.ReplaceAllString(o.Error, "$1")
	return o
}

var urlUserinfo = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s@]*@`)

// Save writes the record at path (mode 0600), creating its directory.
func Save(path string, o license.Online) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(o, "", "  ")
	return atomicfile.Write(path, append(b, '\n'), 0o600)
}
