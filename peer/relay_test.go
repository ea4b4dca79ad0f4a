package peer

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A relay carries HTTP requests both ways to the service behind it, and
// its check tells a reachable service from a closed port.
func TestRelay(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		io.WriteString(w, "echo "+r.URL.Path+" "+string(body))
	}))
	defer backend.Close()
	to := strings.TrimPrefix(backend.URL, "http://")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Relay(ctx, listen, to) }()

	client := &http.Client{Timeout: 5 * time.Second}
	var resp *http.Response
	for range 50 { // the relay listens within moments
		if resp, err = client.Post("http://"+listen+"/maps", "text/plain", strings.NewReader("payload")); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != "echo /maps payload" {
		t.Errorf("through the relay: %q", got)
	}
	if err := CheckRelay(t.Context(), to); err != nil {
		t.Errorf("check of a reachable service: %v", err)
	}
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := closed.Addr().String()
	closed.Close()
	if err := CheckRelay(t.Context(), addr); err == nil {
		t.Error("check of a closed port passed")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("relay ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the relay did not stop with its context")
	}
}
