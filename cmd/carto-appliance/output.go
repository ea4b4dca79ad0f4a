package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/moby/moby/client/pkg/jsonmessage"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/stack"
)

func pathsFrom(cmd *cobra.Command) config.Paths {
	cfg, _ := cmd.Flags().GetString("config-dir")
	state, _ := cmd.Flags().GetString("state-dir")
	return config.Paths{ConfigDir: cfg, StateDir: state}
}

// progress renders the core's events as lines and the image pulls' JSON
// stream with Docker's own renderer: bars on a terminal, plain lines
// otherwise. Close waits for the pull renderer to finish.
type progress struct {
	out  io.Writer
	mu   sync.Mutex
	pw   *io.PipeWriter
	done chan struct{}
}

func newProgress(out *os.File) *progress {
	pr, pw := io.Pipe()
	p := &progress{out: out, pw: pw, done: make(chan struct{})}
	isTTY := term.IsTerminal(int(out.Fd()))
	go func() {
		defer close(p.done)
		// The stream carries no error the core has not already returned;
		// drain it whatever happens so that writers never block.
		if err := jsonmessage.DisplayJSONMessagesStream(pr, lockedWriter{p}, out.Fd(), isTTY, nil); err != nil {
			io.Copy(io.Discard, pr)
		}
	}()
	return p
}

type lockedWriter struct{ p *progress }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

// Pulls is the writer for the pull stream.
func (p *progress) Pulls() io.Writer { return p.pw }

// Report prints one event.
func (p *progress) Report(ev stack.Event) {
	if ev.Action == stack.ActionPulling || ev.Action == stack.ActionPulled {
		return // the pull stream shows these
	}
	line := fmt.Sprintf(" %-22s %s", ev.Service, ev.Action)
	if ev.Detail != "" && ev.Action != stack.ActionFailed {
		line += " " + ev.Detail
	}
	lockedWriter{p}.Write([]byte(line + "\n"))
}

func (p *progress) Close() {
	p.pw.Close()
	<-p.done
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printStatus(w io.Writer, st *installer.Status) {
	health := "healthy"
	if !st.Healthy {
		health = "NOT healthy"
	}
	fmt.Fprintf(w, "CARTO %s (%s layout) at %s: %s\n", orDash(st.Version), st.Layout, st.URL, health)
	if len(st.Nodes) > 0 {
		printNodes(w, st)
	}
	if p := st.Proxy; p != nil {
		ca := ""
		if p.CACert {
			ca = ", proxy CA trusted"
		}
		fmt.Fprintf(w, "Proxy: %s%s\n", p.URL, ca)
	}
	if st.Certificate != nil {
		printCertificate(w, st.Certificate)
	}
	if st.License != nil {
		printLicense(w, st.License)
	}
	if u := st.Upgrade; u != nil {
		switch {
		case u.Interrupted && u.RollbackCut:
			fmt.Fprintf(w, "Upgrade: %s FAILED, and its rollback was cut at step %s while the Docker engine did not answer: the agent rolls it back once the engine answers (or run carto-appliance config apply)%s\n", u.What, orDash(u.Step), orEmpty("; last try: ", u.Error))
		case u.Interrupted:
			fmt.Fprintf(w, "Upgrade: %s STOPPED during step %s (its process ended): the agent finishes or rolls it back at its next converge (systemctl restart carto-appliance, or carto-appliance config apply)%s\n", u.What, orDash(u.Step), orEmpty("; last try: ", u.Error))
		case u.Outcome == "":
			fmt.Fprintf(w, "Upgrade: %s under way since %s, at step %s\n", u.What, u.StartedAt.Local().Format(time.DateTime), orDash(u.Step))
		case u.Step != "":
			fmt.Fprintf(w, "Last upgrade: %s %s at %s (failed at step %s: %s)\n", u.What, u.Outcome, u.EndedAt.Local().Format(time.DateTime), u.Step, u.Error)
		default:
			fmt.Fprintf(w, "Last upgrade: %s %s at %s\n", u.What, u.Outcome, u.EndedAt.Local().Format(time.DateTime))
		}
	}
	if len(st.AllowedSources) > 0 {
		fmt.Fprintf(w, "Reachable from: %s only (network.allowed_sources)\n", strings.Join(st.AllowedSources, ", "))
	}
	if st.Console != "" {
		fmt.Fprintf(w, "Admin console: %s\n", st.Console)
	} else {
		fmt.Fprintln(w, "Admin console: off (`carto-appliance console set-password` turns it on)")
	}
	if st.AgentPID != 0 {
		fmt.Fprintf(w, "Agent: supervising (pid %d, carto-appliance %s)\n", st.AgentPID, st.AgentVersion)
		if st.AgentVersion != version {
			// The binary was replaced (a package, install.sh) and the
			// agent not restarted: it still runs the old one.
			fmt.Fprintf(w, "Agent: runs carto-appliance %s and this binary is %s: restart it (systemctl restart carto-appliance)\n", st.AgentVersion, version)
		}
	} else {
		fmt.Fprintln(w, "Agent: not running, nothing restarts failed services (systemctl start carto-appliance)")
	}
	if len(st.Held) > 0 {
		fmt.Fprintf(w, "Stopped by the operator: %s (carto-appliance start)\n", strings.Join(st.Held, ", "))
	}
	for _, n := range st.Notes {
		fmt.Fprintf(w, "Note: %s\n", n)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tSTATE\tHEALTH\tRESTARTS\tIMAGE")
	for _, s := range st.Services {
		state := s.State
		switch {
		case s.Held:
			state += " (held)"
		case s.CrashLoop:
			state += " (crash loop)"
		}
		health := s.Health
		if s.HealthProbed {
			health += " (agent's check)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", s.Name, state, health, s.Restarts+s.AgentRestarts, s.Image)
	}
	tw.Flush()
}

func printCertificate(w io.Writer, c *installer.CertificateStatus) {
	line := "TLS: " + c.Mode
	if c.Info != nil {
		line += fmt.Sprintf(" certificate for %s, issued by %s, valid until %s (%d days)", strings.Join(c.Names, ", "), c.Issuer, c.NotAfter.Format(time.DateOnly), c.DaysLeft)
	}
	if c.CA != "" {
		line += "; clients trust the CA in " + c.CA
	}
	if c.Note != "" {
		line += ": " + c.Note
	}
	fmt.Fprintln(w, line)
	if ca := c.CAInfo; ca != nil {
		line := "CA: "
		if len(ca.Names) > 0 {
			line += "for " + strings.Join(ca.Names, ", ") + " only, "
		} else {
			line += "for any name (no name constraints), "
		}
		line += "valid until " + ca.NotAfter.Format(time.DateOnly)
		switch {
		case ca.Rotating != nil:
			line += fmt.Sprintf("; being replaced since %s (%s): %s holds the new CA too, the router switches to it on %s", ca.Rotating.Started.Format(time.DateOnly), ca.Reason, c.CA, ca.Rotating.SwitchAt.Format(time.DateOnly))
		case ca.Rotated != nil:
			line += fmt.Sprintf("; rotated on %s (%s)", ca.Rotated.Format(time.DateOnly), ca.Reason)
		}
		fmt.Fprintln(w, line)
	}
	if c.Warning != "" {
		fmt.Fprintln(w, "Warning: "+c.Warning)
	}
}

// printLicense shows the licence; anything but valid is loud, with what
// it means for the stack.
func printLicense(w io.Writer, l *license.Status) {
	line := "Licence: " + string(l.State)
	if l.Customer != "" {
		line += fmt.Sprintf(" (%s, %s)", l.Customer, l.ID)
	}
	if l.ExpiresAt != nil {
		line += fmt.Sprintf(", expires %s (%d days)", l.ExpiresAt.Format(time.DateOnly), l.DaysLeft)
	}
	switch {
	case l.AirGap:
		line += ", air-gapped: checked offline only"
	case l.LastChecked != nil:
		line += ", last checked " + l.LastChecked.Local().Format(time.DateTime)
	default:
		line += ", not checked online yet"
	}
	fmt.Fprintln(w, line)
	switch l.State {
	case license.Valid:
	case license.Expired, license.Invalid:
		fmt.Fprintf(w, "LICENCE %s: %s. The stack keeps running; installs and upgrades are refused.\n", strings.ToUpper(string(l.State)), l.Reason)
	default:
		msg := "Warning: licence: " + l.Reason
		if l.GraceEndsAt != nil {
			msg += fmt.Sprintf(" (grace ends %s)", l.GraceEndsAt.Format(time.DateOnly))
		}
		fmt.Fprintln(w, msg)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// orEmpty is prefix and s, or nothing when s is empty.
func orEmpty(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}

// printNodes shows this node's place in a tier layout and each peer as
// this node sees it.
func printNodes(w io.Writer, st *installer.Status) {
	fmt.Fprintf(w, "Node: %s (%s) of the %s layout\n", st.Role, st.Nodes[st.Role], st.Layout)
	for _, p := range st.Peers {
		switch {
		case !p.Reachable:
			fmt.Fprintf(w, "Peer %s (%s): UNREACHABLE (%s)\n", p.Role, p.Address, p.Error)
		default:
			health := "healthy"
			if !p.Healthy {
				health = "NOT healthy"
				if len(p.Unhealthy) > 0 {
					health += ": " + strings.Join(p.Unhealthy, ", ")
				}
			}
			skew := ""
			if p.Skew {
				skew = " (VERSION SKEW: this node runs " + orDash(st.Version) + ")"
			}
			fmt.Fprintf(w, "Peer %s (%s): CARTO %s%s, %s\n", p.Role, p.Address, orDash(p.Version), skew, health)
		}
	}
}
