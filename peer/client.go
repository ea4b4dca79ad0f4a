package peer

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Errors of the Client's methods, for errors.Is.
var (
	// ErrUnreachable: no answer came from the node (refused, no route,
	// timeout).
	ErrUnreachable = errors.New("node unreachable")
	// ErrNotPeer: something answered, but not a node holding this
	// layout's join secret.
	ErrNotPeer = errors.New("not a node of this layout")
)

// Client asks the other nodes of a layout for their status and has them
// back up and restore their database.
type Client struct {
	Secret []byte // the join secret
	Port   int    // the peers' API port; 0: DefaultPort
	// HTTP sends Status requests; nil: a client with a 3 s timeout that
	// never uses a proxy and does not follow redirects.
	HTTP *http.Client
	// OpsHTTP sends Backup and Restore requests, which may run for
	// minutes; nil: HTTP's default without its timeout, so that only the
	// caller's ctx bounds them.
	OpsHTTP *http.Client
}

// transport is shared so that repeated requests reuse connections.
var transport = &http.Transport{
	// Peers are reached directly, never through a corporate proxy that
	// HTTP_PROXY may name for the internet.
	Proxy:               nil,
	DialContext:         (&net.Dialer{Timeout: 3 * time.Second}).DialContext,
	MaxIdleConnsPerHost: 2,
	IdleConnTimeout:     90 * time.Second,
}

// A peer never redirects; an unsigned 3xx then counts as not a peer.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// defaultHTTP's Timeout is a last resort: callers bound each question
// with their ctx (a status shown waits less than an install deciding).
var defaultHTTP = &http.Client{Timeout: 30 * time.Second, Transport: transport, CheckRedirect: noRedirect}

// defaultOpsHTTP has no Timeout: http.Client.Timeout would cut a dump
// that takes minutes whatever deadline the caller's ctx allows.
var defaultOpsHTTP = &http.Client{Transport: transport, CheckRedirect: noRedirect}

// Status asks the node at addr (an IP address or host name, IPv6 with or
// without brackets) for its status. The answer is used only once its MAC
// proves it comes from a node holding the same secret and answers this
// very request.
func (c *Client) Status(ctx context.Context, addr string) (*Status, error) {
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	var st Status
	if err := c.do(ctx, hc, addr, "for its status", http.MethodGet, StatusPath, nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Backup has the node at addr back up its database and returns which
// backup it made; the backup stays on that node. A dump may take minutes
// and nothing but ctx bounds the wait: give it a deadline. When ctx ends
// the request is dropped and the node's backup is cancelled.
func (c *Client) Backup(ctx context.Context, addr string, r BackupRequest) (*Backup, error) {
	var b Backup
	if err := c.do(ctx, c.opsHTTP(), addr, "to back up its database", http.MethodPost, BackupPath, r, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// Restore has the node at addr restore its database from its backup
// r.Name. As with Backup, nothing but ctx bounds the wait.
func (c *Client) Restore(ctx context.Context, addr string, r RestoreRequest) error {
	// The answer is an empty JSON object: decoding it is what tells a
	// success from a signed error whose status code was changed.
	var ok struct{}
	return c.do(ctx, c.opsHTTP(), addr, fmt.Sprintf("to restore its backup %q", r.Name), http.MethodPost, RestorePath, r, &ok)
}

// Rehearse has the node at addr rehearse an upgrade on a copy of its
// database and returns its findings (a JSON object). As with Backup,
// nothing but ctx bounds the wait.
func (c *Client) Rehearse(ctx context.Context, addr string, r RehearseRequest) (json.RawMessage, error) {
	var found json.RawMessage
	if err := c.do(ctx, c.opsHTTP(), addr, fmt.Sprintf("to rehearse the upgrade %s -> %s", r.From, r.To), http.MethodPost, RehearsePath, r, &found); err != nil {
		return nil, err
	}
	return found, nil
}

func (c *Client) opsHTTP() *http.Client {
	if c.OpsHTTP != nil {
		return c.OpsHTTP
	}
	return defaultOpsHTTP
}

// do sends method path to the node at addr through hc, with in as its
// JSON body unless in is nil, and decodes the answer into out once its MAC
// proves it comes from a node holding the same secret and answers this
// very request. doing completes "asking <node> " in errors.
func (c *Client) do(ctx context.Context, hc *http.Client, addr, doing, method, path string, in, out any) error {
	hostport, err := c.hostport(addr)
	if err != nil {
		return fmt.Errorf("asking %q %s: %w", addr, doing, err)
	}
	what := "asking " + hostport + " " + doing
	if len(c.Secret) < secretSize {
		return fmt.Errorf("%s: no join secret (%d bytes, want %d)", what, len(c.Secret), secretSize)
	}
	var body []byte
	if in != nil {
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("%s: encoding the request: %w", what, err)
		}
		// Refused here rather than by the node, whose unsigned 413 would
		// read as "not a peer".
		if len(body) > maxBody {
			return fmt.Errorf("%s: the request is larger than 1 MiB", what)
		}
	}
	var n [nonceLen / 2]byte
	if _, err := rand.Read(n[:]); err != nil {
		return fmt.Errorf("%s: making a nonce: %w", what, err)
	}
	nonce := hex.EncodeToString(n[:])

	u := url.URL{Scheme: "http", Host: hostport, Path: path}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	req.Header.Set("User-Agent", "carto-appliance-peer")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	signRequest(req, c.Secret, time.Now(), nonce, body)

	resp, err := hc.Do(req)
	if err != nil {
		return transportError(ctx, what, hostport, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return transportError(ctx, what, hostport, err)
	}

	// A 401 carries no MAC (the node could not tell who asked); any other
	// answer is believed only once its MAC checks.
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return notPeer(hostport, "it refused our request")
	case len(answer) > maxBody:
		return notPeer(hostport, "its answer is larger than 1 MiB")
	}
	mac, err := hex.DecodeString(resp.Header.Get(headerMAC))
	if err != nil || !hmac.Equal(mac, responseMAC(c.Secret, nonce, answer)) {
		return notPeer(hostport, fmt.Sprintf("HTTP %d without a valid signature", resp.StatusCode))
	}

	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: it answered %s: %s", what, resp.Status, printable(answer))
	}
	// Unknown fields are ignored: a newer node may report more.
	if err := json.Unmarshal(answer, out); err != nil {
		return fmt.Errorf("%s: decoding its answer: %w", what, err)
	}
	return nil
}

// hostport returns addr joined with the client's port.
func (c *Client) hostport(addr string) (string, error) {
	port := c.Port
	if port == 0 {
		port = DefaultPort
	}
	if port < 0 || port > 65535 {
		return "", fmt.Errorf("port %d is out of range", port)
	}
	host := addr
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if host == "" {
		return "", errors.New("no address given")
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// transportError classifies an error getting an answer to what. The
// caller cancelling is not the node's fault; anything else, timeouts
// included, means the node did not answer.
func transportError(ctx context.Context, what, hostport string, err error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("%s: %w", what, ctx.Err())
	}
	// url.Error repeats the method and URL; the host is in our message.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return &peerError{kind: ErrUnreachable, msg: "node at " + hostport + " is unreachable: " + err.Error(), cause: err}
}

func notPeer(hostport, why string) error {
	return &peerError{
		kind: ErrNotPeer,
		msg: "the node at " + hostport + " answered but not as a node of this layout: " +
			"it was installed with another join token, or it is not a carto-appliance node (" + why + ")",
	}
}

// peerError is an error of one of the sentinel kinds, with a message of
// its own and, possibly, the cause behind it.
type peerError struct {
	kind  error // ErrUnreachable or ErrNotPeer
	msg   string
	cause error // may be nil
}

func (e *peerError) Error() string { return e.msg }

func (e *peerError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

// printable returns a peer's message fit for a terminal: trimmed, capped,
// control characters replaced.
func printable(b []byte) string {
	s := strings.TrimSpace(truncate(string(b), maxMessage+64))
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return '?'
		}
		return r
	}, s)
}
