package vm

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ForwardHostPort makes 127.0.0.1:port in the VM lead to 127.0.0.1:port on
// the host, for a server that listens only on the host's loopback: the test
// registry, whose certificate names 127.0.0.1, so that the VM's engine
// pulls 127.0.0.1:PORT/name:tag just as the host's does (once the VM
// trusts the registry's CA in /etc/docker/certs.d/127.0.0.1:PORT/ca.crt).
//
// In the VM, an enabled systemd socket on 127.0.0.1:port hands connections
// to systemd-socket-proxyd, which relays them to a port this process
// listens on at the host's address on the VM's network; that relays them
// to 127.0.0.1:port. So it lasts across Reboot, until Remove (or the end of
// this process). Only the VM's own processes, its engine among them, see
// it: inner containers have a loopback of their own.
func (v *VM) ForwardHostPort(ctx context.Context, port int) error {
	v.mu.Lock()
	gateway := v.gateway
	v.mu.Unlock()
	target := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	f, err := forward(net.JoinHostPort(gateway, "0"), target)
	if err != nil {
		return fmt.Errorf("forwarding %s to VM %q: %w", target, v.Name, err)
	}
	unit := fmt.Sprintf("cartovm-hostport-%d", port)
	socket := fmt.Sprintf(`[Unit]
Description=127.0.0.1:%[1]d, forwarded to the test host's 127.0.0.1:%[1]d

[Socket]
ListenStream=127.0.0.1:%[1]d

[Install]
WantedBy=sockets.target
`, port)
	service := fmt.Sprintf(`[Unit]
Description=Relay to the test host's 127.0.0.1:%d (through %s)
Requires=%s.socket
After=%[3]s.socket

[Service]
ExecStart=/lib/systemd/systemd-socket-proxyd %[2]s
`, port, f.Addr(), unit)
	steps := []func() error{
		func() error { return v.WriteFile(ctx, "/etc/systemd/system/"+unit+".socket", []byte(socket), 0o644) },
		func() error { return v.WriteFile(ctx, "/etc/systemd/system/"+unit+".service", []byte(service), 0o644) },
		func() error { return v.execOK(ctx, "systemctl", "daemon-reload") },
		func() error { return v.execOK(ctx, "systemctl", "enable", "--now", unit+".socket") },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			f.Close()
			return fmt.Errorf("forwarding %s to VM %q: %w", target, v.Name, err)
		}
	}
	v.mu.Lock()
	v.forwards = append(v.forwards, f)
	v.mu.Unlock()
	return nil
}

// execOK runs cmd in the VM, turning a non-zero exit into an error.
func (v *VM) execOK(ctx context.Context, cmd ...string) error {
	out, errOut, code, err := v.Exec(ctx, cmd...)
	if err == nil && code != 0 {
		err = fmt.Errorf("%s: exit %d: %s", strings.Join(cmd, " "), code, strings.TrimSpace(out+errOut))
	}
	return err
}

// forwarder relays each TCP connection it accepts to target.
type forwarder struct {
	l      net.Listener
	target string
	wg     sync.WaitGroup // the accept loop and each relay

	mu     sync.Mutex
	conns  map[net.Conn]struct{} // guarded by mu: open connections, both sides
	closed bool                  // guarded by mu
}

func forward(listen, target string) (*forwarder, error) {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	f := &forwarder{l: l, target: target, conns: map[net.Conn]struct{}{}}
	f.wg.Add(1)
	go f.serve()
	return f, nil
}

// Addr is where the forwarder listens.
func (f *forwarder) Addr() string { return f.l.Addr().String() }

// Close stops accepting, cuts the open connections and waits for the
// relays to end.
func (f *forwarder) Close() {
	f.l.Close()
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

func (f *forwarder) serve() {
	defer f.wg.Done()
	for {
		c, err := f.l.Accept()
		if err != nil {
			return // closed
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.relay(c)
		}()
	}
}

func (f *forwarder) relay(in net.Conn) {
	out, err := net.DialTimeout("tcp", f.target, 5*time.Second)
	if err != nil {
		in.Close()
		return
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		in.Close()
		out.Close()
		return
	}
	f.conns[in], f.conns[out] = struct{}{}, struct{}{}
	f.mu.Unlock()

	done := make(chan struct{})
	// Each direction ends with a half-close, so that a client that closes
	// its side after the request still gets the whole answer.
	go func() {
		io.Copy(out, in)
		out.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(in, out)
	in.(*net.TCPConn).CloseWrite()
	<-done

	f.mu.Lock()
	delete(f.conns, in)
	delete(f.conns, out)
	f.mu.Unlock()
	in.Close()
	out.Close()
}
