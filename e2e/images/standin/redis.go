package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"time"
)

// redisPing sends a RESP PING (after AUTH when password is set) to addr and
// returns the server's answer line without its CRLF, e.g. "+PONG".
func redisPing(ctx context.Context, addr, password string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("connecting to redis at %s: %w", addr, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(5 * time.Second))
	}
	r := bufio.NewReader(conn)
	if password != "" {
		fmt.Fprintf(conn, "*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n", len(password), password)
		if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "+OK") {
			return "", fmt.Errorf("redis AUTH at %s: %q %v", addr, strings.TrimSpace(line), err)
		}
	}
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return "", fmt.Errorf("sending PING to %s: %w", addr, err)
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading PING answer from %s: %w", addr, err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}
