package proxytest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// TestServer is a scenario's outbound destination: the stand-in for
// api.carto.com and the like. It serves HTTPS (a certificate from its own
// CA) and plain HTTP on two free ports of one address, answers every
// request with 200 and Marker, and records who asked.
type TestServer struct {
	// CA signed the HTTPS certificate (for the listen address, localhost
	// and 127.0.0.1). Sign a TLS-inspecting proxy's certificate with it too
	// when one CA file should cover both.
	CA *CA
	// Marker is the body of every answer: random, so that a body that
	// arrives proves which server sent it.
	Marker string
	// HTTPSAddr and HTTPAddr are host:port.
	HTTPSAddr, HTTPAddr string

	servers []*http.Server
	mu      sync.Mutex
	reqs    []Request
}

// Request is one request the test server answered.
type Request struct {
	Time       time.Time
	RemoteAddr string // ip:port of the peer: a proxy, or the client itself
	TLS        bool
	Method     string
	Host       string
	Path       string // with the query
}

// RemoteIP is RemoteAddr without its port.
func (r Request) RemoteIP() string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}

// StartTestServer starts a test server on listenAddr (an IP address: the
// Docker network's gateway, 127.0.0.1, 0.0.0.0). It runs until Close.
func StartTestServer(ctx context.Context, listenAddr string) (*TestServer, error) {
	return StartTestServerOnPorts(ctx, listenAddr, 0, 0)
}

// StartTestServerOnPorts is StartTestServer on given ports (0: a free
// one), for tests about what reaches a well-known port such as 443.
func StartTestServerOnPorts(ctx context.Context, listenAddr string, httpsPort, httpPort int) (*TestServer, error) {
	ca, err := NewCA("proxytest destination CA")
	if err != nil {
		return nil, err
	}
	names := []string{listenAddr, "localhost", "127.0.0.1"}
	if ip := net.ParseIP(listenAddr); ip != nil && ip.IsUnspecified() {
		names = names[1:]
	}
	cert, err := ca.TLSCertificate(names...)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 8)
	rand.Read(b)
	s := &TestServer{CA: ca, Marker: "proxytest marker " + hex.EncodeToString(b)}

	var lc net.ListenConfig
	tlsLn, err := lc.Listen(ctx, "tcp", net.JoinHostPort(listenAddr, strconv.Itoa(httpsPort)))
	if err != nil {
		return nil, fmt.Errorf("test server: listening on %s: %w", listenAddr, err)
	}
	plainLn, err := lc.Listen(ctx, "tcp", net.JoinHostPort(listenAddr, strconv.Itoa(httpPort)))
	if err != nil {
		tlsLn.Close()
		return nil, fmt.Errorf("test server: listening on %s: %w", listenAddr, err)
	}
	s.HTTPSAddr, s.HTTPAddr = tlsLn.Addr().String(), plainLn.Addr().String()
	for _, ln := range []net.Listener{tls.NewListener(tlsLn, &tls.Config{Certificates: []tls.Certificate{cert}}), plainLn} {
		srv := &http.Server{
			Handler:           http.HandlerFunc(s.serve),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          log.New(io.Discard, "", 0), // refused handshakes are part of the tests
		}
		s.servers = append(s.servers, srv)
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Printf("proxytest: test server: %v", err)
			}
		}()
	}
	return s, nil
}

func (s *TestServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.reqs = append(s.reqs, Request{Time: time.Now(), RemoteAddr: r.RemoteAddr, TLS: r.TLS != nil, Method: r.Method, Host: r.Host, Path: r.URL.RequestURI()})
	s.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, s.Marker)
}

// HTTPSURL is https://<HTTPSAddr><path>.
func (s *TestServer) HTTPSURL(path string) string { return "https://" + s.HTTPSAddr + path }

// HTTPURL is http://<HTTPAddr><path>.
func (s *TestServer) HTTPURL(path string) string { return "http://" + s.HTTPAddr + path }

// Requests returns the requests answered so far, oldest first.
func (s *TestServer) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// Close stops the server; it waits at most 5 s for requests in flight.
func (s *TestServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, srv := range s.servers {
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
	}
}
