package proxytest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
)

// StartTinyproxy starts tinyproxy as an HTTP proxy (plain HTTP to the
// proxy; CONNECT tunnels for https:// destinations) on a free port of
// listenAddr, with its configuration and log in dir. Every client and every
// CONNECT port is allowed: the listen address is what limits who can use
// it. It runs until Stop or until ctx ends.
func StartTinyproxy(ctx context.Context, dir, listenAddr string) (*Proxy, error) {
	return StartTinyproxyOnPort(ctx, dir, listenAddr, 0)
}

// StartTinyproxyOnPort is StartTinyproxy on a given port (0: a free one),
// for a proxy on a well-known port such as 80.
func StartTinyproxyOnPort(ctx context.Context, dir, listenAddr string, fixedPort int) (*Proxy, error) {
	bin, err := binary("tinyproxy")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	p := &Proxy{Kind: "tinyproxy", Dir: dir, scheme: "http", accessLog: filepath.Join(dir, "tinyproxy.log")}
	start := func(port int) error {
		p.Addr = net.JoinHostPort(listenAddr, strconv.Itoa(port))
		conf := filepath.Join(dir, "tinyproxy.conf")
		if err := os.WriteFile(conf, []byte(tinyproxyConf(listenAddr, port, dir)), 0o644); err != nil {
			return err
		}
		// -d: stay in the foreground, so that the process is ours to stop.
		return launch(ctx, p, filepath.Join(dir, "tinyproxy.out"), bin, "-d", "-c", conf)
	}
	if fixedPort != 0 {
		err = start(fixedPort)
	} else {
		err = startOnFreePort(listenAddr, start)
	}
	if err != nil {
		return nil, fmt.Errorf("starting tinyproxy on %s: %w", listenAddr, err)
	}
	return p, nil
}

// tinyproxyConf is the configuration verified with tinyproxy 1.11.1: no
// Allow lines (every client), no ConnectPort lines (CONNECT to any port),
// LogLevel Info (a "Connect" line with the client's address and a
// "Request" line per request, and the reason when it cannot connect).
// Running as root, it stays root ("You SHOULD set a UserName" warning).
func tinyproxyConf(listenAddr string, port int, dir string) string {
	return fmt.Sprintf(`# proxytest: tinyproxy as the corporate HTTP proxy
Port %d
Listen %s
Timeout 60
MaxClients 100
LogLevel Info
LogFile %q
PidFile %q
`, port, listenAddr, filepath.Join(dir, "tinyproxy.log"), filepath.Join(dir, "tinyproxy.pid"))
}
