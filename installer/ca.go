package installer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/cartodb/carto-appliance/certs"
	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/internal/atomicfile"
)

// The appliance's CA in the state dir's tls/: the CA serving the router,
// and during a rotation the one replacing it. Their keys never go where
// containers can read them.
const (
	caCertFile       = "ca.crt"
	caKeyFile        = "ca.key"
	nextCACertFile   = "next-ca.crt"
	nextCAKeyFile    = "next-ca.key"
	caRotationFile   = "rotation.json"
	caRotationReason = "the appliance's CA must be replaced (%s)"
)

// caRotation is the last rotation of the appliance's CA (rotation.json).
// A rotation has two steps: the next CA is made and published in
// carto-ca.crt beside the current one (Started); at SwitchAt it becomes
// the CA that serves the router (Rotated), the old one's key is deleted
// and carto-ca.crt holds the new CA only. Clients that trust the old CA
// keep working until SwitchAt, time to give them the new file.
type caRotation struct {
	Reason   string     `json:"reason"`
	Started  time.Time  `json:"started"`
	SwitchAt time.Time  `json:"switch_at"`
	Rotated  *time.Time `json:"rotated,omitempty"`
}

// caPlan is the appliance's CA as a run leaves it, and what it writes.
type caPlan struct {
	cur      *certs.CA // serves the router
	next     *certs.CA // published beside cur until rotation.SwitchAt; nil when no rotation is under way
	rotation *caRotation
	// What changed: a new current CA (first install or a switch), a new
	// next one; why, for the run's warnings and the agent's log.
	newCur, newNext bool
	why             string
}

// planCA reads the CA and decides what changes: a first CA, the start of
// a rotation (certs.CA.NeedsRotation), or its switch once due. Nothing is
// written.
func planCA(paths config.Paths, domain string, now time.Time) (*caPlan, error) {
	dir := paths.CADir()
	cur, err := readCA(dir, caCertFile, caKeyFile)
	if err != nil {
		return nil, err
	}
	if cur == nil {
		ca, err := certs.NewCA(domain, now)
		if err != nil {
			return nil, err
		}
		return &caPlan{cur: ca, newCur: true, why: "there was no CA"}, nil
	}
	p := &caPlan{cur: cur, rotation: readRotation(dir)}
	// A next CA half written by a crash, or made for another domain, is
	// made again.
	if next, err := readCA(dir, nextCACertFile, nextCAKeyFile); err == nil && next != nil && p.rotation != nil && p.rotation.Rotated == nil {
		if again, _ := next.NeedsRotation(domain, now); !again {
			p.next = next
		}
	}
	if p.next == nil {
		rotate, why := cur.NeedsRotation(domain, now)
		if !rotate {
			return p, nil
		}
		next, err := certs.NewCA(domain, now)
		if err != nil {
			return nil, err
		}
		p.next, p.newNext, p.why = next, true, fmt.Sprintf(caRotationReason, why)
		p.rotation = &caRotation{Reason: why, Started: now.UTC(), SwitchAt: cur.HandOver(domain, now).UTC()}
	}
	if now.Before(p.rotation.SwitchAt) {
		return p, nil
	}
	rotated := now.UTC()
	if p.newNext {
		rotated = p.rotation.Started // one run started and finished it
	}
	p.rotation.Rotated = &rotated
	p.cur, p.next, p.newCur, p.newNext = p.next, nil, true, false
	if p.why == "" {
		p.why = fmt.Sprintf("the new CA takes over from the old one (%s)", p.rotation.Reason)
	}
	return p, nil
}

// bundle is carto-ca.crt: the CA clients trust, and during a rotation
// the next one too, so that clients given the file keep working when the
// router switches.
func (p *caPlan) bundle() []byte {
	if p.next == nil {
		return p.cur.CertPEM
	}
	return joinPEM(p.cur.CertPEM, p.next.CertPEM)
}

// changed says whether the run must write the CA's files.
func (p *caPlan) changed() bool { return p.newCur || p.newNext }

// save writes what the plan changed into the state dir. At a switch the
// new key is written before its certificate and the old key goes last: a
// crash in between leaves files readCA still makes sense of.
func (p *caPlan) save(paths config.Paths) error {
	if !p.changed() {
		return nil
	}
	dir := paths.CADir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	write := func(name string, data []byte, perm os.FileMode) error {
		return atomicfile.Write(filepath.Join(dir, name), data, perm)
	}
	if p.newNext {
		if err := write(nextCAKeyFile, p.next.KeyPEM, 0o600); err != nil {
			return err
		}
		if err := write(nextCACertFile, p.next.CertPEM, 0o644); err != nil {
			return err
		}
	}
	if p.newCur {
		if err := write(caKeyFile, p.cur.KeyPEM, 0o600); err != nil {
			return err
		}
		if err := write(caCertFile, p.cur.CertPEM, 0o644); err != nil {
			return err
		}
		// The replaced CA's key is of no use any more; a copy is a risk.
		for _, name := range []string{caKeyFile + atomicfile.PrevSuffix, nextCAKeyFile, nextCACertFile, nextCAKeyFile + atomicfile.PrevSuffix, nextCACertFile + atomicfile.PrevSuffix} {
			if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("removing the replaced CA's %s: %w", name, err)
			}
		}
	}
	if p.rotation == nil {
		return nil
	}
	b, _ := json.MarshalIndent(p.rotation, "", "  ")
	return write(caRotationFile, append(b, '\n'), 0o600)
}

// readCA reads a CA's certificate and key from dir; nil when neither file
// exists. A key that does not belong to the certificate is looked for in
// the key's previous version (a crash while a rotation switched: the new
// key written, not yet its certificate).
func readCA(dir, certName, keyName string) (*certs.CA, error) {
	certPEM, errC := os.ReadFile(filepath.Join(dir, certName))
	keyPEM, errK := os.ReadFile(filepath.Join(dir, keyName))
	if errors.Is(errC, fs.ErrNotExist) && errors.Is(errK, fs.ErrNotExist) {
		return nil, nil
	}
	if err := errors.Join(errC, errK); err != nil {
		return nil, fmt.Errorf("reading the appliance's CA in %s: %w", dir, err)
	}
	ca, err := certs.LoadCA(certPEM, keyPEM)
	if err != nil {
		if k, rerr := os.ReadFile(filepath.Join(dir, keyName+atomicfile.PrevSuffix)); rerr == nil {
			if c, lerr := certs.LoadCA(certPEM, k); lerr == nil {
				ca, err = c, nil
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("the appliance's CA in %s: %w; move the directory away to start with a new CA (clients must then trust the new one)", dir, err)
	}
	return ca, nil
}

func readRotation(dir string) *caRotation {
	b, err := os.ReadFile(filepath.Join(dir, caRotationFile))
	if err != nil {
		return nil
	}
	var r caRotation
	if json.Unmarshal(b, &r) != nil || r.SwitchAt.IsZero() {
		return nil
	}
	return &r
}

// CAStatus is the self-signed mode's CA as status shows it.
type CAStatus struct {
	// Names are the names its certificates may carry (its name
	// constraints); empty for a CA made before they existed.
	Names    []string  `json:"names"`
	NotAfter time.Time `json:"not_after"`
	// Rotating is set while the next CA is published beside it.
	Rotating *CARotationStatus `json:"rotating,omitempty"`
	// Rotated is when the last rotation switched the router to this CA.
	Rotated *time.Time `json:"rotated,omitempty"`
	// Reason is why the CA is being, or was last, replaced.
	Reason string `json:"reason,omitempty"`
	// Warning says the CA must be replaced and nothing has started it.
	Warning string `json:"warning,omitempty"`
}

// CARotationStatus is a rotation under way.
type CARotationStatus struct {
	Started  time.Time `json:"started"`
	SwitchAt time.Time `json:"switch_at"`
	NotAfter time.Time `json:"next_not_after"`
}

func caStatus(paths config.Paths, domain string, now time.Time) (*CAStatus, error) {
	dir := paths.CADir()
	cur, err := readCA(dir, caCertFile, caKeyFile)
	if err != nil || cur == nil {
		return nil, err
	}
	st := &CAStatus{Names: caNames(cur), NotAfter: cur.Cert.NotAfter.UTC()}
	rot := readRotation(dir)
	next, _ := readCA(dir, nextCACertFile, nextCAKeyFile)
	switch {
	case rot != nil && rot.Rotated == nil && next != nil:
		st.Rotating = &CARotationStatus{Started: rot.Started, SwitchAt: rot.SwitchAt, NotAfter: next.Cert.NotAfter.UTC()}
		st.Reason = rot.Reason
	case rot != nil && rot.Rotated != nil:
		st.Rotated, st.Reason = rot.Rotated, rot.Reason
	}
	if st.Rotating == nil {
		if rotate, why := cur.NeedsRotation(domain, now); rotate {
			st.Warning = fmt.Sprintf(caRotationReason+": the agent starts it within the hour, or run `carto-appliance config apply`", why)
		}
	}
	return st, nil
}

// caNames are the names a CA's constraints permit.
func caNames(ca *certs.CA) []string {
	var out []string
	out = append(out, ca.Cert.PermittedDNSDomains...)
	for _, n := range ca.Cert.PermittedIPRanges {
		out = append(out, n.IP.String())
	}
	return out
}

// note is what a run that changed the CA tells the operator; "" for a
// first CA.
func (p *caPlan) note(paths config.Paths) string {
	switch {
	case p.rotation == nil:
		return ""
	case p.next != nil:
		return fmt.Sprintf("%s: %s now holds the new CA beside the current one; have clients trust that file again before %s, when the router switches to the new CA", p.why, paths.CAPath(), p.rotation.SwitchAt.Format(time.DateOnly))
	case p.rotation.Started.Equal(*p.rotation.Rotated):
		return fmt.Sprintf("%s: the old CA cannot serve the domain, so the router switched to the new one at once; have clients trust %s again", p.why, paths.CAPath())
	default:
		return fmt.Sprintf("%s: the router now serves a certificate from the new CA, and %s holds it alone", p.why, paths.CAPath())
	}
}
