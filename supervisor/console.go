package supervisor

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/console"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/stack"
)

// consoleBackend is what the admin console shows and does, through the
// agent's own ops (the ones the CLI's requests run): no second path.
type consoleBackend struct {
	ops serverOps
}

var _ console.Backend = consoleBackend{}

func (b consoleBackend) Status(ctx context.Context) (*console.StatusView, error) {
	st, err := b.ops.wf.Status(ctx, b.ops.paths)
	if err != nil {
		return nil, err
	}
	v := &console.StatusView{Version: st.Version, URL: st.URL, Layout: st.Layout, Role: st.Role, Healthy: st.Healthy, Notes: st.Notes}
	for _, s := range st.Services {
		v.Services = append(v.Services, console.ServiceView{Name: s.Name, State: s.State, Health: s.Health, Image: s.Image,
			Restarts: s.Restarts + s.AgentRestarts, CrashLoop: s.CrashLoop, Held: s.Held})
	}
	if l := st.License; l != nil {
		lv := &console.LicenseView{State: string(l.State), Reason: l.Reason, Customer: l.Customer, DaysLeft: l.DaysLeft}
		if l.ExpiresAt != nil {
			lv.ExpiresAt = *l.ExpiresAt
		}
		v.License = lv
	}
	if c := st.Certificate; c != nil {
		cv := &console.CertificateView{Mode: c.Mode, Warning: c.Warning, Note: c.Note}
		if c.Info != nil {
			cv.Issuer, cv.Subject, cv.NotAfter, cv.DaysLeft = c.Issuer, c.Subject, c.NotAfter, c.DaysLeft
		}
		v.Certificate = cv
	}
	if u := st.Upgrade; u != nil {
		v.Upgrade = &console.UpgradeRunView{What: u.What, StartedAt: u.StartedAt, EndedAt: u.EndedAt, Outcome: u.Outcome, Step: u.Step, Error: u.Error, Interrupted: u.Interrupted, RollbackCut: u.RollbackCut}
	}
	return v, nil
}

// Changes are the loop's notices: the page's status is sent at once after
// a container event.
func (b consoleBackend) Changes(ctx context.Context) <-chan struct{} {
	return b.ops.notices.Subscribe(ctx)
}

var _ console.ChangeNotifier = consoleBackend{}

func (b consoleBackend) Logs(ctx context.Context, service string, lines int, follow bool, w io.Writer) error {
	return b.ops.wf.Logs(ctx, b.ops.paths, w, stack.LogsOptions{Services: []string{service}, Tail: strconv.Itoa(lines), Follow: follow})
}

func (b consoleBackend) Settings(ctx context.Context) ([]console.SettingView, error) {
	all, err := installer.ShowConfig(b.ops.paths)
	if err != nil {
		return nil, err
	}
	out := make([]console.SettingView, len(all))
	for i, s := range all {
		out[i] = console.SettingView{Name: s.Name, Value: s.Value, Set: s.Set, Secret: s.Secret}
	}
	return out, nil
}

func (b consoleBackend) SetSettings(ctx context.Context, pairs []string, apply bool) (string, error) {
	res, err := installer.SetConfig(ctx, b.ops.paths, pairs)
	if err != nil {
		return "", err
	}
	var text strings.Builder
	for _, c := range res.Changes {
		fmt.Fprintf(&text, "%s: %s -> %s\n", c.Name, c.Old.Value, c.New.Value)
	}
	waiting := res.AwaitingApply()
	switch {
	case !res.Changed:
		text.WriteString("nothing changed\n")
	case len(waiting) == 0:
		text.WriteString("the agent takes it by itself (no apply needed)\n")
	case !apply:
		// Saving the same values again changes nothing and applies
		// nothing: the console has no apply of its own to point to.
		text.WriteString("saved; run `carto-appliance config apply` to put " + strings.Join(waiting, ", ") + " to use\n")
	}
	if apply && len(waiting) > 0 {
		if _, err := b.runOp(ctx, ApplyOp{}, nil); err != nil {
			return text.String(), fmt.Errorf("the settings are saved, but applying them failed: %w", err)
		}
		text.WriteString("applied\n")
	}
	return text.String(), nil
}

func (b consoleBackend) SupportBundle(ctx context.Context, w io.Writer) error {
	_, err := installer.SupportBundle(ctx, w, installer.SupportBundleOptions{Paths: b.ops.paths})
	return err
}

func (b consoleBackend) UpgradeCheck(ctx context.Context) (*console.UpgradeView, error) {
	chk, err := installer.CheckUpgrade(ctx, b.ops.paths, "")
	if err != nil {
		return nil, err
	}
	v := &console.UpgradeView{Current: chk.Installed, Latest: chk.Latest, Available: len(chk.Path) > 0}
	if len(chk.Path) > 1 {
		v.Notes = append(v.Notes, "goes through "+strings.Join(chk.Path, " -> "))
	}
	return v, nil
}

func (b consoleBackend) Upgrade(ctx context.Context, to string, progress func(step, state string)) error {
	_, err := b.runOp(ctx, UpgradeOp{Upgrade: installer.UpgradeOptions{To: to}}, func(ev stack.Event) {
		if ev.Action == stack.ActionStep {
			step, state, _ := strings.Cut(ev.Detail, " ")
			progress(step, state)
		}
	})
	return err
}

func (b consoleBackend) RenewCertificate(ctx context.Context) error {
	_, err := b.runOp(ctx, CertsOp{Action: CertsRenew}, nil)
	return err
}

// runOp runs op as the agent's API does for the CLI: logged, tracked for
// the drain, the loop told, a self-update followed by the restart.
func (b consoleBackend) runOp(_ context.Context, op Op, onEvent func(stack.Event)) (*installer.Result, error) {
	name, _, _ := strings.Cut(op.event(), " ")
	end := b.ops.start(name, "console-"+op.event())
	rep := stack.ReporterFunc(func(ev stack.Event) {
		if onEvent != nil {
			onEvent(ev)
		}
	})
	res, err := b.ops.run(op, installer.Options{Reporter: rep})
	end()
	b.ops.selfUpdated(res)
	return res, err
}

// consoleRecheck is how often the agent looks at appliance.yaml's console
// section: a password set, or the port changed, takes effect by itself.
const consoleRecheck = 10 * time.Second

// serveConsole serves the admin console while appliance.yaml's console
// section enables it (a password hash set), on its address, over HTTPS
// with the router's certificate (read at each handshake: a renewal is
// served at once); on loopback without a certificate (TLS offloaded),
// over HTTP. It starts again when the section changes.
func serveConsole(ctx context.Context, ops serverOps) {
	var running *http.Server
	var done chan struct{}
	var serving config.ConsoleConfig
	stop := func() {
		if running == nil {
			return
		}
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		running.Shutdown(shutdown)
		cancel()
		<-done
		running = nil
	}
	defer stop()
	logged := ""
	for {
		cfg, found, err := config.Load(ops.paths.File(config.ConfigFileName))
		want := cfg.Console
		if err != nil || !found {
			want = config.ConsoleConfig{}
		}
		if want != serving || (running == nil && want.PasswordHash != "") {
			stop()
			serving = want
			if want.PasswordHash != "" {
				srv, ln, err := newConsoleServer(ops, want)
				if err != nil {
					if msg := err.Error(); msg != logged {
						ops.logf("event=console-unavailable err=%q action=retry", msg)
						logged = msg
					}
					serving = config.ConsoleConfig{} // try again at the next look
				} else {
					logged = ""
					running, done = srv, make(chan struct{})
					ops.logf("event=console-listening addr=%s", ln.Addr())
					go func(ch chan struct{}) {
						defer close(ch)
						if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
							ops.logf("event=console-stopped err=%q", err)
						}
					}(done)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(consoleRecheck):
		}
	}
}

func newConsoleServer(ops serverOps, c config.ConsoleConfig) (*http.Server, net.Listener, error) {
	end := c.Endpoint(ops.paths)
	addr, certFile, keyFile := end.Addr, end.CertFile, end.KeyFile
	if ip := net.ParseIP(c.Address()); !end.TLS && (ip == nil || !ip.IsLoopback()) {
		return nil, nil, fmt.Errorf("no certificate at %s to serve the console on %s with: set console.bind_address to 127.0.0.1 (reach it through an SSH tunnel)", certFile, addr)
	}
	// Plain HTTP only on loopback without a certificate (TLS offloaded):
	// its cookies then cannot be Secure.
	h, err := console.New(console.Options{Password: []byte(c.PasswordHash), Backend: consoleBackend{ops: ops}, Logf: ops.logf, Secure: end.TLS,
		// Logins outlive the agent (a self-update during an upgrade run
		// from the console restarts it).
		SessionsFile: filepath.Join(ops.paths.StateDir, config.ConsoleSessionsFileName)})
	if err != nil {
		return nil, nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listening on %s for the console: %w", addr, err)
	}
	if !end.TLS {
		return srv, ln, nil
	}
	var mu sync.Mutex
	var cached *tls.Certificate
	var cachedAt time.Time
	srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		fi, err := os.Stat(certFile)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		if cached == nil || fi.ModTime() != cachedAt {
			c, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				return nil, err
			}
			cached, cachedAt = &c, fi.ModTime()
		}
		return cached, nil
	}}
	return srv, tls.NewListener(ln, srv.TLSConfig), nil
}
