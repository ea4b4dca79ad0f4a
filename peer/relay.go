package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Relay accepts TCP connections on listen and relays each to to, both
// ways, until ctx ends: the tier2 web node's stand-in for a service of the
// app node, so that its router reaches that service under its own name
// and port. It is plain TCP: what it relays (HTTP, WebSocket) is the
// router's and the service's business.
func Relay(ctx context.Context, listen, to string) error {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", listen)
	if err != nil {
		return fmt.Errorf("relaying %s to %s: %w", listen, to, err)
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("relaying %s to %s: %w", listen, to, err)
		}
		wg.Go(func() { relayConn(ctx, c, to) })
	}
}

// relayDialTimeout bounds reaching the other node: a client waits no
// longer than that for a node that is down.
const relayDialTimeout = 5 * time.Second

func relayConn(ctx context.Context, c net.Conn, to string) {
	defer c.Close()
	up, err := (&net.Dialer{Timeout: relayDialTimeout}).DialContext(ctx, "tcp", to)
	if err != nil {
		return // the client sees the connection closed: a 502 at the router
	}
	defer up.Close()
	stop := context.AfterFunc(ctx, func() { c.Close(); up.Close() })
	defer stop()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		// Half-close: the other side learns the request (or answer) is
		// whole, and the other direction goes on.
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
}

// CheckRelay says whether to accepts connections: a forwarder's
// healthcheck.
func CheckRelay(ctx context.Context, to string) error {
	ctx, cancel := context.WithTimeout(ctx, relayDialTimeout)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", to)
	if err != nil {
		return fmt.Errorf("reaching %s: %w", to, err)
	}
	return c.Close()
}
