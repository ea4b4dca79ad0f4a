package peer

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"
)

// The peer API runs over plain HTTP on the private network. Instead of TLS,
// every request and every response is authenticated with HMAC-SHA256 keyed
// by the join secret: the secret never travels, and a host without the
// token gets nothing but 401. A request's MAC covers its body, and an
// answer's MAC binds it to the request's nonce. Nothing is encrypted: what
// travels (a status, a backup's name and size, a rehearsal's findings) is
// no secret, and no more than the app node's own Postgres connection to
// the data node carries on that network. A request that changes something
// (any method but GET and HEAD) is accepted once: a replay of it within
// the clock window is refused, so that an eavesdropper cannot restore a
// database again. A status may be replayed:
// it is read-only and what a replay returns is what the eavesdropper
// already saw.

const (
	// DefaultPort is the TCP port the peer API listens on.
	DefaultPort = 9710
	// StatusPath answers GET with the node's Status.
	StatusPath = "/v1/status"
	// BackupPath takes a POSTed BackupRequest, backs up the node's
	// database and answers a Backup.
	BackupPath = "/v1/database/backup"
	// RestorePath takes a POSTed RestoreRequest and restores the node's
	// database from that backup.
	RestorePath = "/v1/database/restore"
	// RehearsePath takes a POSTed RehearseRequest, rehearses the upgrade
	// on a throwaway copy of the node's database and answers what the
	// rehearsal found (JSON the asking node's carto-appliance reads).
	RehearsePath = "/v1/database/rehearse"
)

const (
	headerTime  = "X-Carto-Peer-Time"  // unix seconds of the request
	headerNonce = "X-Carto-Peer-Nonce" // 32 hex chars, fresh per request
	headerAuth  = "X-Carto-Peer-Auth"  // request MAC
	headerMAC   = "X-Carto-Peer-MAC"   // response MAC

	nonceLen = 32
	// maxSkew is how far a request's time may be from the server's clock.
	// Nodes run NTP; two minutes absorb a slow sync without letting a
	// captured request be replayed for long.
	maxSkew = 2 * time.Minute
	// statusTimeout bounds the status func: a node busy converging may
	// take seconds to inspect its containers, and a peer deciding an
	// install or an upgrade waits that long rather than refuse; no caller
	// waits longer than the client's bound.
	statusTimeout = 25 * time.Second
	// maxBody bounds a request's body and an answer's: both are small JSON
	// documents or messages. A dump never travels over this API; it stays
	// on the node that made it.
	maxBody = 1 << 20
	// bodyTimeout bounds reading a request's body, which happens before
	// authentication: a host that sends its body byte by byte must not
	// hold a connection for ever. A megabyte on a private network takes
	// milliseconds.
	bodyTimeout = 10 * time.Second
	// maxMessage caps the error text a node sends with a 500.
	maxMessage = 300

	textPlain = "text/plain; charset=utf-8"
)

// Status is what a node reports about itself.
type Status struct {
	Role      string    `json:"role"`
	Version   string    `json:"version"` // CARTO version
	Healthy   bool      `json:"healthy"`
	Services  int       `json:"services"`
	Unhealthy []string  `json:"unhealthy,omitempty"` // names of unhealthy services
	Time      time.Time `json:"time"`                // the node's clock when it answered
	// License is the licence's state on the node (valid, grace, ...):
	// the node that checks it online tells the others.
	License string `json:"license,omitempty"`
}

// BackupRequest asks a node to back up its database before an upgrade.
type BackupRequest struct {
	From string `json:"from"` // the CARTO version being upgraded from
	To   string `json:"to"`   // the CARTO version being upgraded to
}

// Backup is a database backup a node made. It stays on that node.
type Backup struct {
	Name  string `json:"name"`  // the backup's name on the node that holds it
	Bytes int64  `json:"bytes"` // the dump's size
}

// RestoreRequest asks a node to restore its database from one of its
// backups.
type RestoreRequest struct {
	Name string `json:"name"` // a Backup.Name the node answered
}

// RehearseRequest asks the data node to rehearse the app node's upgrade
// from From to To on a copy of its database: the copy and the dump stay
// on that node, only the findings travel.
type RehearseRequest struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// Ops are what a node does for its peers. A nil op is not served: its
// path answers 404, to authenticated peers only. Requests are decoded
// strictly (unknown fields are refused) but their values are not judged:
// each op checks its own. The text of an op's error is sent to the peer
// (capped at 300 bytes), so it must not carry secrets.
type Ops struct {
	// Status reports the node's status; its ctx is bounded to 3 s.
	Status func(ctx context.Context) (*Status, error)
	// Backup backs up the node's database and says which backup it made.
	// A dump may take minutes: ctx is the request's, with no deadline of
	// the handler's; it ends when the asking node hangs up, which it does
	// when its own deadline passes.
	Backup func(ctx context.Context, r BackupRequest) (*Backup, error)
	// Restore restores the node's database from the named backup; ctx is
	// as Backup's.
	Restore func(ctx context.Context, r RestoreRequest) error
	// Rehearse rehearses an upgrade on a copy of the node's database and
	// answers its findings as a JSON object; ctx is as Backup's.
	Rehearse func(ctx context.Context, r RehearseRequest) (json.RawMessage, error)
}

// requestMAC authenticates a request: its time, nonce, method, path and
// body.
func requestMAC(secret []byte, ts, nonce, method, path string, body []byte) []byte {
	sum := sha256.Sum256(body)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("carto-peer-req\n" + ts + "\n" + nonce + "\n" + method + " " + path + "\n" + hex.EncodeToString(sum[:])))
	return m.Sum(nil)
}

// responseMAC authenticates a response body and binds it to the request's
// nonce, so that an old answer cannot be passed off as a new one. It does
// not cover the status code: success is told by the body, see reply.
func responseMAC(secret []byte, nonce string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("carto-peer-resp\n" + nonce + "\n"))
	m.Write(body)
	return m.Sum(nil)
}

// signRequest sets the authentication headers of r, whose body is body,
// for time t.
func signRequest(r *http.Request, secret []byte, t time.Time, nonce string, body []byte) {
	ts := strconv.FormatInt(t.Unix(), 10)
	r.Header.Set(headerTime, ts)
	r.Header.Set(headerNonce, nonce)
	r.Header.Set(headerAuth, hex.EncodeToString(requestMAC(secret, ts, nonce, r.Method, r.URL.Path, body)))
}

// Handler serves the peer API with only its status: it is
// Serve(secret, Ops{Status: status}).
func Handler(secret []byte, status func(ctx context.Context) (*Status, error)) http.Handler {
	return Serve(secret, Ops{Status: status})
}

// Serve serves the peer API: GET StatusPath, POST BackupPath, POST
// RestorePath and POST RehearsePath call ops. secret is the join secret;
// with a secret shorter than a join token's, every request is refused.
// Backup, Restore and Rehearse run as long as the asking node waits: the
// http.Server serving them must not set ReadTimeout or WriteTimeout,
// which would cut them.
func Serve(secret []byte, ops Ops) http.Handler {
	return &handler{secret: bytes.Clone(secret), ops: ops, now: time.Now, bodyTimeout: bodyTimeout}
}

type handler struct {
	secret      []byte
	ops         Ops
	now         func() time.Time // the clock; tests set it
	bodyTimeout time.Duration    // 0: none; tests shorten it
	seen        nonces           // of the state-changing requests accepted
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The body is read first because the MAC covers it; its size and
	// the time it may take are bounded since anyone may send one.
	body, err := h.readBody(w, r)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(w, "request too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	// Authentication comes before routing, so that a host without the
	// token learns nothing, not even which paths exist.
	nonce, ok := h.authenticate(r, body)
	if !ok {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}

	var method string
	var op func(ctx context.Context, body []byte) (code int, contentType string, answer []byte)
	switch r.URL.Path {
	case StatusPath:
		if h.ops.Status != nil {
			method, op = http.MethodGet, h.status
		}
	case BackupPath:
		if h.ops.Backup != nil {
			method, op = http.MethodPost, h.backup
		}
	case RestorePath:
		if h.ops.Restore != nil {
			method, op = http.MethodPost, h.restore
		}
	case RehearsePath:
		if h.ops.Rehearse != nil {
			method, op = http.MethodPost, h.rehearse
		}
	}
	switch {
	case op == nil:
		h.reply(w, nonce, http.StatusNotFound, textPlain, []byte("not found\n"))
		return
	case r.Method != method:
		w.Header().Set("Allow", method)
		h.reply(w, nonce, http.StatusMethodNotAllowed, textPlain, []byte("method not allowed\n"))
		return
	}
	code, contentType, answer := op(r.Context(), body)
	h.reply(w, nonce, code, contentType, answer)
}

// readBody reads r's body, at most maxBody bytes within h.bodyTimeout.
func (h *handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > maxBody {
		w.Header().Set("Connection", "close") // rather than read the body
		return nil, &http.MaxBytesError{Limit: maxBody}
	}
	rc := http.NewResponseController(w)
	// An error means the ResponseWriter cannot set deadlines (a test's
	// recorder): there is nothing to lift then.
	deadline := h.bodyTimeout > 0 && rc.SetReadDeadline(time.Now().Add(h.bodyTimeout)) == nil
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		// The connection is dropped after the answer. The deadline stays,
		// so that the server discarding the rest of the body cannot wait
		// for ever either.
		w.Header().Set("Connection", "close")
		return nil, err
	}
	if deadline {
		// Lifted once the body is read: the server keeps reading the
		// connection in the background to notice a hang-up, and that
		// read failing on the deadline would cancel the context of an op
		// that takes minutes. net/http lifts it too when the body ends,
		// but does not document it.
		_ = rc.SetReadDeadline(time.Time{}) // cannot fail: it just worked
	}
	return body, nil
}

// authenticate checks r's authentication headers against its body and
// returns its nonce. It says nothing about why it refuses: the answer goes
// to whoever asked.
func (h *handler) authenticate(r *http.Request, body []byte) (nonce string, ok bool) {
	if len(h.secret) < secretSize {
		return "", false
	}
	ts, nonce, auth := r.Header.Get(headerTime), r.Header.Get(headerNonce), r.Header.Get(headerAuth)
	if len(ts) == 0 || len(ts) > 19 || len(nonce) != nonceLen || len(auth) != 2*sha256.Size {
		return "", false
	}
	if _, err := hex.DecodeString(nonce); err != nil {
		return "", false
	}
	got, err := hex.DecodeString(auth)
	if err != nil {
		return "", false
	}
	if !hmac.Equal(got, requestMAC(h.secret, ts, nonce, r.Method, r.URL.Path, body)) {
		return "", false
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "", false
	}
	// Compared in seconds, which cannot overflow for any clock this side
	// of the year 292 billion.
	now, skew := h.now().Unix(), int64(maxSkew/time.Second)
	if sec < now-skew || sec > now+skew {
		return "", false
	}
	// Last, so that only authenticated requests are remembered.
	if r.Method != http.MethodGet && r.Method != http.MethodHead && !h.seen.add(nonce, sec+skew, now) {
		return "", false
	}
	return nonce, true
}

func (h *handler) status(ctx context.Context, _ []byte) (int, string, []byte) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	st, err := h.ops.Status(ctx)
	if err == nil && st == nil {
		err = errors.New("no status")
	}
	if err != nil {
		return failed("status unavailable", err)
	}
	s := *st
	if s.Time.IsZero() {
		s.Time = h.now().UTC()
	}
	return answerJSON("status unavailable", &s)
}

func (h *handler) backup(ctx context.Context, body []byte) (int, string, []byte) {
	var req BackupRequest
	if err := decodeRequest(body, &req); err != nil {
		return badRequest(err)
	}
	b, err := h.ops.Backup(ctx, req)
	if err == nil && (b == nil || b.Name == "") {
		// A backup the peer cannot name is one it cannot restore.
		err = errors.New("the backup has no name")
	}
	if err != nil {
		return failed("backup failed", err)
	}
	return answerJSON("backup failed", b)
}

func (h *handler) restore(ctx context.Context, body []byte) (int, string, []byte) {
	var req RestoreRequest
	if err := decodeRequest(body, &req); err != nil {
		return badRequest(err)
	}
	if err := h.ops.Restore(ctx, req); err != nil {
		return failed("restore failed", err)
	}
	// A body, not a bare 204: the MAC does not cover the status code, so
	// the peer tells success by this signed JSON, which no error's text
	// can pass for.
	return http.StatusOK, "application/json", []byte("{}\n")
}

func (h *handler) rehearse(ctx context.Context, body []byte) (int, string, []byte) {
	var req RehearseRequest
	if err := decodeRequest(body, &req); err != nil {
		return badRequest(err)
	}
	found, err := h.ops.Rehearse(ctx, req)
	if err == nil && (len(found) == 0 || found[0] != '{' || !json.Valid(found)) {
		// Never a bare error text: see restore.
		err = errors.New("the rehearsal's findings are not a JSON object")
	}
	if err != nil {
		return failed("rehearsal failed", err)
	}
	return http.StatusOK, "application/json", found
}

// decodeRequest decodes an op's request into v. Unknown fields are
// refused: an op that ignored an option a newer node asks for would do
// something else than asked.
func decodeRequest(body []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if _, err := d.Token(); err != io.EOF {
		return errors.New("data after the request")
	}
	return nil
}

// answerJSON is a 200 with v encoded, or a 500 saying what failed.
func answerJSON(what string, v any) (int, string, []byte) {
	b, err := json.Marshal(v)
	if err != nil {
		return http.StatusInternalServerError, textPlain, []byte(what + ": encoding the answer failed\n")
	}
	return http.StatusOK, "application/json", b
}

// failed is a 500 saying what failed and why. Errors answered are text,
// never JSON: see restore.
func failed(what string, err error) (int, string, []byte) {
	return http.StatusInternalServerError, textPlain, []byte(what + ": " + truncate(err.Error(), maxMessage) + "\n")
}

func badRequest(err error) (int, string, []byte) {
	return http.StatusBadRequest, textPlain, []byte("bad request: " + truncate(err.Error(), maxMessage) + "\n")
}

// reply writes a response signed for nonce.
func (h *handler) reply(w http.ResponseWriter, nonce string, code int, contentType string, body []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set(headerMAC, hex.EncodeToString(responseMAC(h.secret, nonce, body)))
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write(body) // the peer hung up: nothing to do
}

// truncate returns s cut to at most n bytes, on a character boundary,
// ending with "…" when it was cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	n -= len("…")
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
