package installer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/internal/steps"
	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/release"
	"github.com/cartodb/carto-appliance/stack"
)

// UpgradeOptions are upgrade's inputs.
type UpgradeOptions struct {
	// Options are how this run reports and asks: they do not cross the
	// agent's socket.
	Options `json:"-"`
	// To is the version to upgrade to; empty means the channel's latest.
	To string `json:"to,omitempty"`
	// SkipDatabaseBackup goes on without a dump of the database when it
	// is external (the appliance cannot dump it): a rollback then puts
	// back settings and images only.
	SkipDatabaseBackup bool `json:"skip_db_backup,omitempty"`
	// NoSelfUpdate refuses an upgrade that needs a newer carto-appliance
	// rather than updating this one: set by a binary that just updated
	// itself, which would otherwise loop if the process running the
	// upgrade (an agent not restarted yet) were still the old one.
	NoSelfUpdate bool `json:"no_self_update,omitempty"`
	// ApplianceOnly updates carto-appliance to the newest the channel
	// offers and stops there: CARTO is not upgraded.
	ApplianceOnly bool `json:"appliance_only,omitempty"`
	// Bundle is an air-gap bundle's path: the release upgraded to and
	// its images come from it; no channel or registry is asked.
	Bundle string `json:"bundle,omitempty"`

	bundle *release.Bundle // Bundle, opened
}

// UpgradeSummary is what an upgrade did, in its Result.
type UpgradeSummary struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Path lists the versions installed one after the other.
	Path []string `json:"path,omitempty"`
	// Backups are the backup directories taken, one per step of the path.
	Backups []string `json:"backups,omitempty"`
	// Removed are the old backups removed (upgrade.keep_backups).
	Removed []string `json:"removed_backups,omitempty"`
}

// upgradeJournalFileName is the last upgrade's journal, in the state dir
// (apart from the converges' journal: an apply after an upgrade must not
// hide how the upgrade ended).
const upgradeJournalFileName = "upgrade-journal.json"

// Upgrade moves the node to a newer CARTO release of its channel (the
// only way its version changes): the path is read and verified first
// (signatures, required stops, the licence), then each release of the
// path is installed in turn by a journaled run that backs up settings and
// the embedded database, pulls and verifies every image while the old
// version serves, converges (the new release's migrations run first, as
// its services depend on them), and verifies the stack healthy and the
// router answering. A step that fails rolls the node back by itself:
// settings, pinned release and images, and the database from the backup
// once the new release's migrations may have run (ErrUpgradeRolledBack,
// or ErrRollbackFailed when that failed too).
func Upgrade(ctx context.Context, in UpgradeOptions) (*Result, error) {
	paths := in.Paths.WithDefaults()
	// An upgrade a stopped process left is finished or rolled back first:
	// the path is read from where the node really is.
	rec, err := RecoverUpgrade(ctx, in.Options)
	if err != nil {
		return nil, err
	}
	// This upgrade supersedes one a self-update left to continue.
	if err := dropUpgradeIntent(paths); err != nil {
		return nil, err
	}
	res, err := upgrade(ctx, in, paths)
	return withRecovered(res, rec), err
}

// withRecovered tells, first, what recovering an interrupted upgrade did.
func withRecovered(res *Result, rec *Recovered) *Result {
	if rec == nil {
		return res
	}
	if res == nil {
		res = &Result{}
	}
	res.Warnings = append([]string{rec.String()}, res.Warnings...)
	return res
}

func upgrade(ctx context.Context, in UpgradeOptions, paths config.Paths) (*Result, error) {
	if in.Bundle != "" {
		return upgradeFromBundle(ctx, in, paths)
	}
	chk, src, err := resolveUpgrade(ctx, paths, in.To)
	if err != nil {
		return nil, err
	}
	// Updating carto-appliance alone changes nothing of CARTO: the
	// licence does not judge it.
	if in.ApplianceOnly {
		return updateApplianceOnly(ctx, in, paths, chk, src)
	}
	if !chk.License.Allowed {
		return nil, fmt.Errorf("%w: upgrading to %s: %s", license.ErrInvalid, chk.Target, chk.License.Reason)
	}
	sum := &UpgradeSummary{From: chk.Installed, To: chk.Installed, Path: chk.Path}
	if len(src.path) == 0 {
		return &Result{Version: chk.Installed, Upgrade: sum, Warnings: []string{fmt.Sprintf("CARTO %s is installed: nothing newer to upgrade to in the %s channel", chk.Installed, chk.Channel)}}, nil
	}
	if a := chk.Appliance; a.Needed != "" {
		switch {
		case a.Reason != "":
			return nil, fmt.Errorf("CARTO %s needs carto-appliance %s or newer, and this is %s: %s (nothing was changed)", chk.Target, a.Needed, a.Installed, a.Reason)
		case in.NoSelfUpdate:
			return nil, notRestarted(chk.Target, a.Needed)
		}
		offer, _ := src.index.Appliance(mustParse(a.Needed), platform())
		return selfUpdate(ctx, in, paths, chk.Installed, chk.Target, fromChannel(src, offer))
	}
	var res *Result
	for i := range src.path {
		next, err := src.fetch(ctx, i)
		if err != nil {
			return res, err
		}
		if res, err = upgradeTo(ctx, in, paths, next, sum); err != nil {
			return res, err
		}
		sum.To = next.Manifest.Version
	}
	res.Upgrade = sum
	return res, nil
}

// upgradeTo installs one release of the path: plan, then the journaled
// run under the converge lock.
func upgradeTo(ctx context.Context, in UpgradeOptions, paths config.Paths, next *release.Release, sum *UpgradeSummary) (*Result, error) {
	if err := checkApplianceVersion(next.Manifest); err != nil {
		return nil, err
	}
	plan := func() (*desired, error) {
		cfg, err := loadInstalledConfig(paths)
		if err != nil {
			return nil, err
		}
		d, err := planRelease(paths, cfg, paths.File(config.CustomerEnvFileName), paths.KeyFile(), TLSInput{}, next)
		if err != nil {
			return nil, fmt.Errorf("planning the upgrade to %s: %w", next.Manifest.Version, err)
		}
		d.bundle = in.bundle
		return d, nil
	}
	d, err := stamped(paths, plan)
	if err != nil {
		return nil, err
	}
	unlock, err := lockConverge(ctx, paths)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Settings changed by a config apply that ran meanwhile are this
	// upgrade's too.
	if d, _, err = fresh(paths, d, plan); err != nil {
		return nil, err
	}
	from, err := currentRelease(paths)
	if err != nil {
		return nil, err
	}
	// Another upgrade (the agent continuing one after a self-update) may
	// have got there while this one waited for the lock.
	if mustParse(from.Manifest.Version).Compare(mustParse(next.Manifest.Version)) >= 0 {
		return &Result{Version: from.Manifest.Version, Warnings: []string{fmt.Sprintf("CARTO %s was installed meanwhile by another upgrade", from.Manifest.Version)}}, nil
	}
	c, err := newConvergeRun(ctx, in.Options, paths, d, "upgrade")
	if err != nil {
		return nil, err
	}
	defer c.close()
	u := &upgradeRun{convergeRun: c, skipDB: in.SkipDatabaseBackup, from: from}
	action := "upgrade " + u.from.Manifest.Version + " -> " + next.Manifest.Version
	j := steps.Journal{Path: filepath.Join(paths.StateDir, upgradeJournalFileName), Redact: d.redactor(), Details: u.details, Observe: observeSteps(in.Reporter, action),
		// An undo the engine's absence cut (past engineBackWait) is the
		// recovery's, once the engine answers.
		UndoLater: stack.Transient}
	err = steps.Run(ctx, j, action, u.steps(), steps.Undo)
	if u.backup != "" {
		sum.Backups = append(sum.Backups, u.backup)
	}
	res := c.res
	if res == nil {
		res = &Result{Version: u.from.Manifest.Version}
	}
	res.Warnings = append(c.warnings(), u.notes...)
	var rb *steps.RollbackError
	switch {
	case errors.As(err, &rb) && rb.Later:
		return res, fmt.Errorf("%w: upgrading %s to %s: %v; the Docker engine did not answer for %s: the rollback to %s goes on once it does (the agent does it, as does the next carto-appliance install, config apply or upgrade); see %s, and the backup in %s",
			ErrRollbackFailed, u.from.Manifest.Version, next.Manifest.Version, rb, engineBackWait, u.from.Manifest.Version, j.Path, u.backupOrNone())
	case errors.As(err, &rb):
		return res, fmt.Errorf("%w: upgrading %s to %s: %v; the node is neither on %s nor on %s: see %s, and the backup in %s",
			ErrRollbackFailed, u.from.Manifest.Version, next.Manifest.Version, rb, u.from.Manifest.Version, next.Manifest.Version, j.Path, u.backupOrNone())
	case err != nil && u.changed:
		res.Version = u.from.Manifest.Version
		return res, fmt.Errorf("%w: upgrading %s to %s: %v; CARTO %s runs again as before (%s): fix the cause and run the upgrade again",
			ErrUpgradeRolledBack, u.from.Manifest.Version, next.Manifest.Version, err, u.from.Manifest.Version, u.restored())
	case err != nil:
		// Refused while preparing: nothing was changed.
		return res, fmt.Errorf("upgrading %s to %s: %w (nothing was changed)", u.from.Manifest.Version, next.Manifest.Version, err)
	}
	// The oldest backups go once this one is whole and the upgrade done.
	removed, perr := pruneBackups(paths.StateDir, d.cfg.Upgrade.Backups())
	if perr != nil {
		res.Warnings = append(res.Warnings, fmt.Sprintf("removing old upgrade backups (upgrade.keep_backups %d): %v; delete them by hand", d.cfg.Upgrade.Backups(), perr))
	}
	if len(removed) > 0 {
		sum.Removed = append(sum.Removed, removed...)
	}
	return res, nil
}

// checkApplianceVersion refuses a release that needs a newer
// carto-appliance than this one (a development build is not judged).
func checkApplianceVersion(m release.Manifest) error {
	if m.MinApplianceVersion == "" {
		return nil
	}
	have, err := release.ParseVersion(ApplianceVersion)
	if err != nil {
		return nil // a development build: no release version to compare
	}
	if have.Compare(mustParse(m.MinApplianceVersion)) < 0 {
		return fmt.Errorf("CARTO %s needs carto-appliance %s or newer, and this is %s: update carto-appliance (re-run install.sh, or your package manager), then run the upgrade again",
			m.Version, m.MinApplianceVersion, ApplianceVersion)
	}
	return nil
}

// ApplianceVersion is this binary's version, set by main.
var ApplianceVersion = "dev"

// upgradeRun is the run of one upgrade step: a converge to the new
// release, with a backup before and a verification after, undone as a
// whole when a step fails.
type upgradeRun struct {
	*convergeRun
	from   *release.Release
	skipDB bool
	// backup is the directory of this run's backup; dumped says it holds
	// the database.
	backup string
	dumped bool
	// remote is the dump the data node took for this app node's
	// upgrade, when the database runs there.
	remote *remoteDump
	// changed is set once a step that changes the node started;
	// converged once the new release's services (and migrations) may
	// have run; dbRestored once the rollback put the database back.
	changed, converged, dbRestored bool
	notes                          []string
}

func (u *upgradeRun) steps() []steps.Step {
	mark := func(s steps.Step) steps.Step {
		do := s.Do
		s.Do = func(ctx context.Context) error {
			if !s.Prepares {
				u.changed = true
			}
			return do(ctx)
		}
		s.Undo = u.engineBack(s.Name, s.Undo)
		return s
	}
	var first []steps.Step
	if u.d.cfg.Distributed() {
		// The layout upgrades data -> app -> web: a node goes to a
		// version only once the nodes it depends on run it.
		first = append(first, mark(steps.Step{Name: "peers", Do: u.checkPeers, Prepares: true}))
	}
	return append(first, []steps.Step{
		mark(steps.Step{Name: "engine-proxy", Do: u.engineProxy, Prepares: true}),
		mark(steps.Step{Name: "stage", Do: u.stage, Prepares: true}),
		mark(steps.Step{Name: "pull", Do: u.pullImages, Prepares: true}),
		mark(steps.Step{Name: "verify-images", Do: u.verifyImages, Prepares: true}),
		mark(steps.Step{Name: "backup", Do: u.takeBackup, Prepares: true}),
		mark(steps.Step{Name: "firewall", Do: u.firewall, Undo: u.undoFirewall}),
		mark(steps.Step{Name: "commit", Do: u.commit, Undo: u.undoCommit}),
		mark(steps.Step{Name: "converge", Do: u.convergeNew, Undo: u.undoUpgradeConverge}),
		mark(steps.Step{Name: "reload-router", Do: u.reloadRouter}),
		mark(steps.Step{Name: "verify", Do: u.verify}),
		mark(steps.Step{Name: "record", Do: u.record}),
	}...)
}

// Before an undo the engine must answer: an upgrade that failed because
// the engine restarted under it (systemctl restart docker, an engine
// crash) is rolled back once the engine is back, rather than failing its
// rollback too. The engine may also go away during the undo (a restart
// begun as the converge failed): an undo puts a whole state back (files,
// the database from its DROP, a converge), so it runs again from its
// start, all within engineBackWait.
var (
	engineBackWait = 3 * time.Minute
	engineBackPoll = 2 * time.Second
)

// engineBack is the undo of step name, run once the engine answers, and
// again when the engine went away under it.
func (u *upgradeRun) engineBack(name string, undo func(context.Context) error) func(context.Context) error {
	if undo == nil {
		return nil
	}
	return func(ctx context.Context) error {
		deadline := time.Now().Add(engineBackWait)
		for {
			if err := u.waitEngine(ctx, deadline); err != nil {
				return err
			}
			err := undo(ctx)
			if err == nil || !stack.Transient(err) || time.Now().After(deadline) {
				return err
			}
			u.notes = append(u.notes, fmt.Sprintf("the Docker engine went away while the %s step was undone (%v): it was undone again once the engine answered", name, err))
			if err := sleepCtx(ctx, engineBackPoll); err != nil {
				return err
			}
		}
	}
}

// waitEngine waits until the engine answers, until deadline.
func (u *upgradeRun) waitEngine(ctx context.Context, deadline time.Time) error {
	for {
		_, err := u.eng.Info(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the Docker engine has not answered for %s (%w): nothing could be put back", engineBackWait, err)
		}
		if err := sleepCtx(ctx, engineBackPoll); err != nil {
			return err
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// verifyImages checks that every image of the new release the engine
// pulled is the one the signed manifest pins: a registry (or a mirror)
// serving other content under the release's tag is refused.
func (u *upgradeRun) verifyImages(ctx context.Context) error {
	if u.d.bundle != nil {
		return u.verifyBundleImages(ctx)
	}
	m := u.d.release.Manifest
	if missing := m.MissingDigests(); len(missing) > 0 {
		return fmt.Errorf("CARTO %s's manifest pins no digest for %v: a channel's release pins every image", m.Version, missing)
	}
	seen := map[string]bool{}
	for _, name := range u.project.ServiceNames() { // sorted
		ref := u.project.Services[name].Image
		if seen[ref] {
			continue
		}
		seen[ref] = true
		image, ok := releaseImage(m, ref)
		if !ok {
			continue // not one of the release's images
		}
		digests, err := u.eng.RepoDigests(ctx, ref)
		if err != nil {
			return err
		}
		want := m.ImageDigests[image]
		if !slices.ContainsFunc(digests, func(d string) bool { return strings.HasSuffix(d, "@"+want) }) {
			return fmt.Errorf("image %s is not the one CARTO %s pins (%s; the engine has %v): the registry serves other content under the release's tag; nothing was changed", ref, m.Version, want, digests)
		}
	}
	return nil
}

// releaseImage is the manifest's image name a reference is of
// (<base path>/<name>:<version>).
func releaseImage(m release.Manifest, ref string) (string, bool) {
	for _, name := range m.Images {
		if strings.HasSuffix(ref, "/"+name+":"+m.Version) {
			return name, true
		}
	}
	return "", false
}

func (u *upgradeRun) convergeNew(ctx context.Context) error {
	u.converged = true
	return u.converge(ctx)
}

// undoUpgradeConverge puts the database back from the backup when the
// new release may have migrated it, then brings the previous release's
// stack back (the converge's own undo).
func (u *upgradeRun) undoUpgradeConverge(ctx context.Context) error {
	if u.converged && u.dumped {
		err := u.restoreDatabase(ctx, u.project)
		if errors.Is(err, stack.ErrNotRunning) {
			// The database's container did not come up under the new
			// release: bring the previous stack back and restore there.
			if err := u.undoConverge(ctx); err != nil {
				return err
			}
			prev, lerr := stack.Load(ctx, u.paths.ConfigDir, u.prev.Defaults().Project)
			if lerr != nil {
				return lerr
			}
			if err := u.restoreDatabase(ctx, prev); err != nil {
				return err
			}
			return u.applyPrevious(ctx, prev)
		}
		if err != nil {
			return err
		}
	}
	return u.undoConverge(ctx)
}

// verify checks the upgraded stack: every service healthy (or, for
// one-shot ones, completed) and the router answering on its HTTP port.
func (u *upgradeRun) verify(ctx context.Context) error {
	st, err := statusOf(ctx, u.eng, u.paths, u.d.cfg, u.project)
	if err != nil {
		return err
	}
	if !st.Healthy {
		var bad []string
		for _, s := range st.Services {
			if s.State != stack.StateCompleted && !(s.State == "running" && (s.Health == "healthy" || s.Health == "none")) {
				bad = append(bad, fmt.Sprintf("%s (%s %s)", s.Name, s.State, s.Health))
			}
		}
		return fmt.Errorf("verifying CARTO %s: not healthy: %s", u.d.release.Manifest.Version, strings.Join(bad, ", "))
	}
	if !u.d.cfg.ServesRouter() {
		return nil // a data node: the router is on another node
	}
	return checkRouter(ctx, u.d.cfg.Defaults())
}

// checkRouter is routerAnswers; unit tests, with no router, swap it.
var checkRouter = routerAnswers

// routerAnswers makes one request to the router's HTTP port on this host
// (what a load balancer's health check does): any answer below 500 (the
// redirect to HTTPS included) says requests get through.
func routerAnswers(ctx context.Context, cfg config.Config) error {
	host := cfg.Router.BindAddress
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	url := "http://" + net.JoinHostPort(host, strconv.Itoa(cfg.Router.HTTPPort)) + "/health"
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Host = cfg.Domain
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("verifying: the router does not answer at %s: %w", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		return fmt.Errorf("verifying: the router answers %s at %s", resp.Status, url)
	}
	return nil
}

// restored says what the rollback put back.
func (u *upgradeRun) restored() string {
	what := "settings and images put back"
	if u.dbRestored {
		what = "settings, images and the database from the backup put back"
	}
	if u.backup != "" {
		what += "; the backup stays in " + u.backup
	}
	return what
}

func (u *upgradeRun) backupOrNone() string {
	if u.backup == "" {
		return "(none taken)"
	}
	return u.backup
}
