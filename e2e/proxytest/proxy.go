// Package proxytest runs the test's internet: real forward proxies from
// Debian packages (tinyproxy as an HTTP proxy, squid as an HTTPS proxy)
// and Pebble as an ACME CA, as child processes, each with its own
// configuration in a temporary directory, on a free port of a given
// address, with a log the test reads; and a destination server with its
// own CA. The proxy scenarios (SPEC §5.2, issue 3) route the stack's
// outbound traffic through them; the ACME scenario gets certificates from
// Pebble.
//
// Packages: tinyproxy (1.11), squid (5.7; Debian's GnuTLS build serves
// https_port) and pebble (2.4, with pebble-challtestsrv as its DNS).
// scripts/testbed-deps.sh installs them with their system services stopped
// and disabled.
package proxytest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// How long a proxy may take to listen, and to stop after SIGTERM.
const (
	readyTimeout = 20 * time.Second
	stopTimeout  = 10 * time.Second
)

// Proxy is a running proxy.
type Proxy struct {
	// Kind is "tinyproxy" or "squid".
	Kind string
	// Addr is the host:port it listens on.
	Addr string
	// Dir holds its configuration and logs.
	Dir string

	scheme    string
	accessLog string
	env       []string // added to the process's environment
	cmd       *exec.Cmd
	done      chan struct{} // closed when the process has exited
	stopOnce  sync.Once
	onStop    func() // kind-specific cleanup, after the process is gone
}

// URL is the proxy URL for HTTP_PROXY: http://addr or https://addr.
func (p *Proxy) URL() string { return p.scheme + "://" + p.Addr }

// AccessLog returns the proxy's log of requests so far: squid's access.log
// (one line per finished request or tunnel) or tinyproxy's log (a
// "Connect" and a "Request" line per request, written when it arrives).
func (p *Proxy) AccessLog() (string, error) {
	b, err := os.ReadFile(p.accessLog)
	if err != nil {
		return "", fmt.Errorf("reading the %s access log: %w", p.Kind, err)
	}
	return string(b), nil
}

// LogEntry is one request in a proxy's access log.
type LogEntry struct {
	Client string // the client's IP address
	Method string // CONNECT, GET, …
	Target string // host:port for CONNECT, the URL otherwise
	Status int    // squid: the status it answered (200 for a tunnel); tinyproxy: 0
}

var (
	tinyConnect = regexp.MustCompile(`Connect \(file descriptor (\d+)\): (\S+)`)
	tinyRequest = regexp.MustCompile(`Request \(file descriptor (\d+)\): (\S+) (\S+) HTTP/`)
)

// Entries parses AccessLog into requests, oldest first.
func (p *Proxy) Entries() ([]LogEntry, error) {
	text, err := p.AccessLog()
	if err != nil {
		return nil, err
	}
	return parseLog(p.Kind, text), nil
}

func parseLog(kind, text string) []LogEntry {
	var out []LogEntry
	clients := map[string]string{} // tinyproxy: file descriptor → client
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		switch kind {
		case "squid":
			// time elapsed client code/status bytes method URL user hierarchy type
			f := strings.Fields(line)
			if len(f) < 7 {
				continue
			}
			status := 0
			if _, s, ok := strings.Cut(f[3], "/"); ok {
				status, _ = strconv.Atoi(s)
			}
			out = append(out, LogEntry{Client: f[2], Method: f[5], Target: f[6], Status: status})
		case "tinyproxy":
			if m := tinyConnect.FindStringSubmatch(line); m != nil {
				clients[m[1]] = m[2]
			} else if m := tinyRequest.FindStringSubmatch(line); m != nil {
				out = append(out, LogEntry{Client: clients[m[1]], Method: m[2], Target: m[3]})
			}
		}
	}
	return out
}

// Stop ends the proxy (SIGTERM, then SIGKILL after 10 s) and waits for
// it. The logs stay readable. Stop may be called more than once.
func (p *Proxy) Stop() {
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(stopTimeout):
				p.cmd.Process.Kill()
				<-p.done
			}
		}
		if p.onStop != nil {
			p.onStop()
		}
	})
}

// launch starts argv with its output in dir/<kind>.out and waits until addr
// accepts connections, the process exits, or readyTimeout passes. The
// process gets SIGTERM when ctx ends.
func launch(ctx context.Context, p *Proxy, outPath string, argv ...string) error {
	out, err := os.Create(outPath)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	if len(p.env) > 0 {
		cmd.Env = append(os.Environ(), p.env...)
	}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = stopTimeout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", argv[0], err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(p.done)
	}()

	deadline := time.Now().Add(readyTimeout)
	for {
		c, err := net.DialTimeout("tcp", p.Addr, 500*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.done:
			b, _ := os.ReadFile(outPath)
			return fmt.Errorf("%s exited before listening on %s (%v):\n%s", p.Kind, p.Addr, waitErr, tail(string(b), 20))
		case <-ctx.Done():
			p.Stop()
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Stop()
			b, _ := os.ReadFile(outPath)
			return fmt.Errorf("%s not listening on %s after %s:\n%s", p.Kind, p.Addr, readyTimeout, tail(string(b), 20))
		}
	}
}

// startOnFreePort runs start with a free port of listenAddr, trying
// another port (up to 3 in all) when the chosen one was taken meanwhile.
func startOnFreePort(listenAddr string, start func(port int) error) error {
	var err error
	for range 3 {
		var port int
		if port, err = freePort(listenAddr); err != nil {
			return err
		}
		if err = start(port); err == nil || !strings.Contains(err.Error(), "in use") {
			return err
		}
	}
	return err
}

func freePort(listenAddr string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(listenAddr, "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a free port on %s: %w", listenAddr, err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// binary finds a proxy's program in PATH or sbin (squid is in /usr/sbin,
// which a non-root PATH may lack).
func binary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/sbin"} {
		p := dir + "/" + name
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not installed: run scripts/testbed-deps.sh (Debian package %s)", name, name)
}

// Available reports whether tinyproxy and squid are installed.
func Available() error {
	var errs []error
	for _, name := range []string{"tinyproxy", "squid"} {
		if _, err := binary(name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
