package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/supervisor"
)

// runSupervisor is the supervisor's loop; a seam so that the agent's
// systemd plumbing does not depend on how the loop is built.
var runSupervisor func(context.Context, supervisor.Options) error = supervisor.Run

func newAgentCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "agent",
		Short: "Run the supervisor daemon that keeps the stack up (what the systemd unit runs)",
		Long: `Runs the supervisor in the foreground until SIGTERM or SIGINT: it converges
the stack at start, follows the Docker events and brings back services that
die or turn unhealthy. Under systemd (carto-appliance.service, installed by
'service install') it reports READY after the first converge and pings the
watchdog while its loop is healthy. Logs go to stderr, one key=value line
per event (journalctl -u carto-appliance). Stopping the agent leaves the
stack running.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			paths, err := agentPaths(pathsFrom(cmd))
			if err != nil {
				return err
			}
			unlock, err := lockAgent(paths.StateDir)
			if err != nil {
				return err
			}
			defer unlock()
			return runAgent(cmd.Context(), paths, newAgentLog(os.Stderr))
		},
	}
}

// agentPaths fills in the default dirs and makes them absolute, so that
// the log says exactly what is supervised.
func agentPaths(p config.Paths) (config.Paths, error) {
	p = p.WithDefaults()
	var err error
	if p.ConfigDir, err = filepath.Abs(p.ConfigDir); err != nil {
		return p, usageError{fmt.Errorf("--config-dir: %w", err)}
	}
	if p.StateDir, err = filepath.Abs(p.StateDir); err != nil {
		return p, usageError{fmt.Errorf("--state-dir: %w", err)}
	}
	return p, nil
}

// lockAgent makes sure one agent supervises a state dir: two would fight
// over the same containers. The lock dies with the process, so a killed
// agent's successor takes it at once.
func lockAgent(stateDir string) (unlock func(), err error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the state dir: %w", err)
	}
	path := filepath.Join(stateDir, "agent.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the agent's lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := io.ReadAll(f)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another agent (pid %s) already supervises %s (lock %s): stop it first (systemctl stop carto-appliance)",
				strings.TrimSpace(string(holder)), stateDir, path)
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { f.Close() }, nil
}

// runAgent runs the supervisor until ctx ends or a signal arrives, and
// speaks systemd's notify protocol around it. Cancellation is not an
// error: systemd's stop must end with a clean exit.
func runAgent(ctx context.Context, paths config.Paths, log *agentLog) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// Ends the watchdog and the API when the supervisor ends by itself,
	// or to restart on a new binary (errAgentRestart).
	ctx, cancelCause := context.WithCancelCause(ctx)
	cancel := func() { cancelCause(nil) }
	defer cancel()

	// false: keep NOTIFY_SOCKET and WATCHDOG_USEC set. true would unset
	// them, after which every later notification silently goes nowhere and
	// systemd kills the agent when the watchdog expires.
	wd, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Logf("event=watchdog-config-invalid err=%q", err)
	}
	log.Logf("event=agent-starting version=%s pid=%d config_dir=%q state_dir=%q systemd_notify=%t watchdog=%s",
		version, os.Getpid(), paths.ConfigDir, paths.StateDir, os.Getenv("NOTIFY_SOCKET") != "", wd)

	// A self-update stopped before its rename left its download.
	if removed, err := installer.CleanSelfUpdate(); err != nil {
		log.Logf("event=self-update-cleanup-failed err=%q", err)
	} else if len(removed) > 0 {
		log.Logf("event=self-update-cleanup removed=%q", removed)
	}

	var lastHealthy atomic.Int64 // unix nanoseconds of the last Healthy call; 0 before the first
	var ready sync.Once
	// The API's changes reach the loop at once (one pending is enough:
	// the loop then looks at everything).
	changed := make(chan struct{}, 1)
	// The HTTP port's front in acme mode: the loop keeps it in line with
	// the settings, the operations the API runs release it at once.
	front := supervisor.NewFront(paths, log.Logf)
	// The loop's container events reach the console's live status.
	notices := supervisor.NewNotices()
	opts := supervisor.Options{
		Paths:   paths,
		Logf:    log.Logf,
		Changed: changed,
		Front:   front,
		Notices: notices,
		Ready: func() {
			ready.Do(func() {
				notify(log, daemon.SdNotifyReady+"\nSTATUS=supervising the stack")
				log.Logf("event=ready")
			})
		},
		Healthy: func() { lastHealthy.Store(time.Now().UnixNano()) },
	}

	var wg sync.WaitGroup
	if wd > 0 {
		wg.Go(func() { watchdog(ctx, wd, &lastHealthy, log) })
	}
	// Without its socket the agent still supervises; the CLI then works
	// on the engine directly.
	if ln, err := supervisor.Listen(paths); err != nil {
		log.Logf("event=api-unavailable err=%q", err)
	} else {
		log.Logf("event=api-listening socket=%q", ln.Addr())
		wg.Go(func() {
			err := supervisor.Serve(ctx, ln, supervisor.ServeOptions{
				Paths:   paths,
				Version: version,
				Logf:    log.Logf,
				Front:   front,
				Notices: notices,
				// The binary was replaced: exit, and systemd starts the
				// new one (RestartForceExitStatus in the unit).
				Restart: func(reason string) { cancelCause(fmt.Errorf("%w: %s", errAgentRestart, reason)) },
				Changed: func() {
					select {
					case changed <- struct{}{}:
					default:
					}
				},
			})
			if err != nil {
				log.Logf("event=api-failed err=%q", err)
			}
		})
	}
	done := make(chan error, 1)
	go func() { done <- runSupervisor(ctx, opts) }()

	select {
	case err = <-done:
		// The loop ended by itself: exit, and systemd starts a new agent.
		if err == nil {
			err = errors.New("the supervisor stopped without being asked to")
		}
		notify(log, daemon.SdNotifyStopping)
		log.Logf("event=agent-failed err=%q", err)
	case <-ctx.Done():
		// A second signal kills at once.
		stop()
		notify(log, daemon.SdNotifyStopping)
		log.Logf("event=stopping reason=%q", context.Cause(ctx))
		if err = <-done; err != nil {
			log.Logf("event=stop-failed err=%q", err)
		} else {
			log.Logf("event=stopped")
		}
		// Stopped on request: not an error (the stack keeps running).
		err = nil
		if cause := context.Cause(ctx); errors.Is(cause, errAgentRestart) {
			err = cause
		}
	}
	cancel()
	wg.Wait()
	if errors.Is(err, errAgentRestart) {
		log.Logf("event=restarting reason=%q", err)
		return err
	}
	if err != nil {
		return fmt.Errorf("agent: %w (see journalctl -u carto-appliance)", err)
	}
	return nil
}

// errAgentRestart ends an agent that must be started again: its binary
// was replaced by a self-update. It exits with exitRestart, which the
// unit restarts whatever its Restart= says.
var errAgentRestart = errors.New("restarting on the updated binary")

// watchdog pings systemd every half of its timeout while the supervisor
// has reported healthy within the timeout. A loop stuck longer gets no
// pings, and systemd restarts the agent (WatchdogSec in the unit).
func watchdog(ctx context.Context, timeout time.Duration, lastHealthy *atomic.Int64, log *agentLog) {
	tick := time.NewTicker(timeout / 2)
	defer tick.Stop()
	withheld := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		last := lastHealthy.Load()
		if last == 0 {
			continue // still starting: systemd arms the watchdog at READY
		}
		if since := time.Since(time.Unix(0, last)); since > timeout {
			if !withheld {
				log.Logf("event=watchdog-withheld reason=%q last_healthy_ago=%s", "the supervisor has not reported healthy", since.Round(time.Second))
				withheld = true
			}
			continue
		}
		if withheld {
			log.Logf("event=watchdog-resumed")
			withheld = false
		}
		notify(log, daemon.SdNotifyWatchdog)
	}
}

// notify sends state to systemd; outside systemd (no NOTIFY_SOCKET) it
// does nothing.
func notify(log *agentLog, state string) {
	// false: see runAgent.
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Logf("event=notify-failed state=%q err=%q", state, err)
	}
}

// agentLog writes one key=value line per event to stderr. Under journald
// (JOURNAL_STREAM names stderr) lines carry a syslog priority prefix and
// no timestamp, which the journal adds; elsewhere they start with time=.
type agentLog struct {
	mu      sync.Mutex
	w       io.Writer
	journal bool
}

func newAgentLog(f *os.File) *agentLog {
	return &agentLog{w: f, journal: isJournalStream(f)}
}

// Logf logs one event; format is "event=NAME key=value ...". A line with
// an err= key is a warning.
func (l *agentLog) Logf(format string, args ...any) {
	msg := strings.ReplaceAll(strings.TrimRight(fmt.Sprintf(format, args...), "\n"), "\n", " | ")
	level, prio := "info", "<6>"
	if strings.HasPrefix(msg, "err=") || strings.Contains(msg, " err=") {
		level, prio = "warn", "<4>"
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.journal {
		fmt.Fprintf(l.w, "%slevel=%s %s\n", prio, level, msg)
		return
	}
	fmt.Fprintf(l.w, "time=%s level=%s %s\n", time.Now().UTC().Format(time.RFC3339Nano), level, msg)
}

// isJournalStream reports whether f is the journal stream systemd
// connected (JOURNAL_STREAM is "device:inode" of it).
func isJournalStream(f *os.File) bool {
	dev, ino, ok := strings.Cut(os.Getenv("JOURNAL_STREAM"), ":")
	if !ok {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return fmt.Sprint(st.Dev) == dev && fmt.Sprint(st.Ino) == ino
}
