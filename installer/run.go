package installer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/internal/steps"
	"github.com/cartodb/carto-appliance/peer"
	"github.com/cartodb/carto-appliance/stack"
)

// journalFileName is the last run's journal, in the state dir.
const journalFileName = "journal.json"

// planner makes a run's plan; stamped calls it.
type planner func() (*desired, error)

// stamped plans, recording what the plan read from disk (inputsStamp)
// as it was before it read it: a change under it leaves a stale stamp,
// and the plan is made again.
func stamped(paths config.Paths, plan planner) (*desired, error) {
	stamp, err := inputsStamp(paths)
	if err != nil {
		return nil, err
	}
	d, err := plan()
	if err != nil {
		return nil, err
	}
	d.stamp = stamp
	return d, nil
}

// fresh is d, or, when what it was planned from changed since (another
// change of the stack committed while this one waited for the converge
// lock), a new plan: for a caller that holds the lock.
func fresh(paths config.Paths, d *desired, plan planner) (*desired, bool, error) {
	now, err := inputsStamp(paths)
	if err != nil {
		return nil, false, err
	}
	if now == d.stamp {
		return d, false, nil
	}
	d, err = stamped(paths, plan)
	if err != nil {
		return nil, false, fmt.Errorf("planning again, as another change of the stack committed while this one waited for it to end: %w", err)
	}
	return d, true, nil
}

// run obtains a planned ACME certificate that needs no port the stack
// holds (outside the converge lock: a slow CA must not stall the agent's
// resyncs), then runs the plan under the lock, planned again (plan) if
// another change committed meanwhile. d is plan's, through stamped.
func run(ctx context.Context, opts Options, paths config.Paths, d *desired, plan planner, action string) (*Result, error) {
	early := deferredACME(opts, paths, d)
	if d.acme != nil && early == nil {
		eng, err := connectEngine(ctx)
		if err != nil {
			return nil, err
		}
		early, err = obtainACME(ctx, eng, paths, d, nil, false)
		eng.Close()
		if err != nil {
			return &Result{Warnings: d.warnings}, err
		}
	}
	unlock, err := lockConverge(ctx, paths)
	if err != nil {
		return nil, err
	}
	defer unlock()
	d, replanned, err := fresh(paths, d, plan)
	if err != nil {
		return nil, err
	}
	if replanned {
		// The certificate obtained early was for the old plan; the run
		// obtains the new plan's.
		early = deferredACME(opts, paths, d)
	}
	return runLocked(ctx, opts, paths, d, action, early)
}

// deferredACME is an empty certificate when the run obtains none now (the
// agent defers what the stack's own port must answer); nil otherwise.
func deferredACME(opts Options, paths config.Paths, d *desired) *obtained {
	if opts.DeferACME && acmeDeferrable(paths, d) {
		return &obtained{}
	}
	return nil
}

// runLocked runs the plan's steps, journaled, for a caller that holds the
// converge lock. A step that fails leaves the steps before it done (the
// inputs committed): the next apply converges to them again.
//
// The plan (d) is not changed by the run: what the run itself learns (the
// engine's proxy notes, a certificate the ACME CA issued) is the run's.
// early is a certificate obtained before the lock (nil: none yet).
func runLocked(ctx context.Context, opts Options, paths config.Paths, d *desired, action string, early *obtained) (*Result, error) {
	c, err := newConvergeRun(ctx, opts, paths, d, action)
	if err != nil {
		return nil, err
	}
	defer c.close()
	c.acme = early
	j := steps.Journal{Path: filepath.Join(paths.StateDir, journalFileName), Redact: d.redactor()}
	err = steps.Run(ctx, j, action, c.steps(), steps.Keep)
	if c.res == nil {
		if w := c.warnings(); len(w) > 0 {
			c.res = &Result{Warnings: w}
		}
	}
	return c.res, err
}

// convergeRun is one run of a plan: what its steps share.
type convergeRun struct {
	opts   Options
	paths  config.Paths
	d      *desired
	action string

	st      State
	eng     stackEngine
	pull    stack.PullOptions
	staged  string         // the rendered files, before they are committed
	project *types.Project // the stack as committed
	prev    config.Config  // appliance.yaml before the commit
	prevPin *PinnedRelease // the release pinned before the commit
	before  fileSnapshot   // the files the commit replaces, for its undo
	applied *stack.ApplyResult
	res     *Result
	// notes are what the run tells the operator beyond the plan's
	// warnings; acme is the certificate obtained for the commit (nil
	// until the certificate step or the early order got it).
	notes []string
	acme  *obtained
}

// warnings are the plan's and then the run's.
func (c *convergeRun) warnings() []string {
	w := slices.Clone(c.d.warnings)
	w = append(w, c.notes...)
	if c.acme != nil && c.acme.note != "" {
		w = append(w, c.acme.note)
	}
	return w
}

func newConvergeRun(ctx context.Context, opts Options, paths config.Paths, d *desired, action string) (*convergeRun, error) {
	c := &convergeRun{opts: opts, paths: paths, d: d, action: action}
	var err error
	if c.st, err = loadState(paths.StateDir); err != nil {
		return nil, err
	}
	auth, err := d.registryAuth()
	if err != nil {
		return nil, err
	}
	c.pull = stack.PullOptions{Policy: opts.Pull, Auth: auth, Progress: opts.Progress, Reporter: opts.Reporter}
	if c.eng, err = connectEngine(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *convergeRun) close() {
	if c.eng != nil {
		c.eng.Close()
	}
	if c.staged != "" {
		os.RemoveAll(c.staged)
	}
}

// steps are the run's steps, in order. Each is named for the journal and
// for an operator reading it after a crash.
func (c *convergeRun) steps() []steps.Step {
	var first []steps.Step
	if c.d != nil && c.d.cfg.Distributed() {
		// A node of a tier layout starts nothing before the nodes it
		// depends on are up on its version.
		first = append(first, steps.Step{Name: "peers", Do: c.checkPeers, Prepares: true})
	}
	return append(first, []steps.Step{
		// The engine pulls by itself: it must have the proxy first.
		// Until the certificate, a run only prepares (unless the engine's
		// proxy changes): a refusal there leaves even the journal as is.
		{Name: "engine-proxy", Do: c.engineProxy, Prepares: true},
		{Name: "stage", Do: c.stage, Prepares: true},
		{Name: "pull", Do: c.pullImages, Prepares: true},
		{Name: "certificate", Do: c.certificate},
		// In force before anything publishes a port, and whatever
		// becomes of the converge below.
		{Name: "firewall", Do: c.firewall, Undo: c.undoFirewall},
		{Name: "commit", Do: c.commit, Undo: c.undoCommit},
		{Name: "converge", Do: c.converge, Undo: c.undoConverge},
		{Name: "reload-router", Do: c.reloadRouter},
		{Name: "record", Do: c.record},
	}...)
}

func (c *convergeRun) checkPeers(ctx context.Context) error {
	return checkPeers(ctx, c.paths, c.d)
}

func (c *convergeRun) engineProxy(ctx context.Context) error {
	notes, err := configureEngineProxy(ctx, c.paths, c.d, c.opts.ConfirmEngineRestart)
	c.notes = append(c.notes, notes...)
	if len(notes) > 0 || err != nil {
		// Something was (or may have been) written or restarted.
		steps.Changed(ctx)
	}
	if err != nil {
		return err
	}
	c.eng, err = reconnect(ctx, c.eng)
	return err
}

func (c *convergeRun) stage(ctx context.Context) error {
	dir, err := stage(c.paths, c.d)
	if err != nil {
		return err
	}
	c.staged = dir
	if c.project, err = stack.Load(ctx, dir, c.d.cfg.Defaults().Project); err != nil {
		return fmt.Errorf("checking the rendered stack: %w", err)
	}
	return nil
}

func (c *convergeRun) pullImages(ctx context.Context) error {
	if c.d.bundle != nil {
		return c.loadBundle(ctx)
	}
	if err := c.eng.Pull(ctx, c.project, c.pull); err != nil {
		if errors.Is(err, stack.ErrUnauthorized) {
			// The registry refused key.json: the operator's input to fix.
			return &InputError{Input: InputKey, Err: err}
		}
		return err
	}
	c.pull.Policy = stack.PullMissing // everything is here now
	return nil
}

func (c *convergeRun) certificate(ctx context.Context) error {
	if c.acme != nil {
		return nil // obtained before the lock
	}
	var err error
	c.acme, err = obtainACME(ctx, c.eng, c.paths, c.d, c.st.Held, true)
	return err
}

func (c *convergeRun) firewall(ctx context.Context) error {
	// Read before commit: leaving acme mode hands the HTTP port back, and
	// undoing puts the previous allow-list back.
	c.prev, _, _ = config.Load(c.paths.File(config.ConfigFileName))
	if err := applyFirewall(ctx, c.paths, c.d.cfg); err != nil {
		return fmt.Errorf("limiting the router to network.allowed_sources: %w", err)
	}
	return nil
}

func (c *convergeRun) undoFirewall(ctx context.Context) error {
	return applyFirewall(ctx, c.paths, c.prev)
}

func (c *convergeRun) commit(ctx context.Context) error {
	var err error
	if c.before, err = snapshot(c.committedFiles()); err != nil {
		return err
	}
	var obtainedCerts map[string][]byte
	if c.acme != nil {
		obtainedCerts = c.acme.certs
	}
	if err := commit(c.paths, c.d, obtainedCerts); err != nil {
		return err
	}
	if c.d.pin != nil {
		// The config dir now holds this release's rendering: from here
		// on every converge renders it, whatever binary runs.
		pin := *c.d.pin
		pin.PinnedAt = time.Now().UTC()
		c.prevPin = c.st.Release
		c.st.Release = &pin
		if err := saveState(c.paths.StateDir, c.st); err != nil {
			return err
		}
	}
	c.project, err = stack.Load(ctx, c.paths.ConfigDir, c.d.cfg.Defaults().Project)
	return err
}

// undoCommit puts back the files the commit replaced and the pin it
// recorded.
func (c *convergeRun) undoCommit(ctx context.Context) error {
	if err := c.before.restore(); err != nil {
		return err
	}
	if prev, found, err := config.Load(c.paths.File(config.ConfigFileName)); err == nil && found {
		if err := publishMounts(c.paths, prev); err != nil {
			return err
		}
	}
	if c.d.pin != nil {
		st, err := loadState(c.paths.StateDir)
		if err != nil {
			return err
		}
		// The release pinned before (none at a first install; the one
		// upgraded from).
		st.Release = c.prevPin
		return saveState(c.paths.StateDir, st)
	}
	return nil
}

func (c *convergeRun) converge(ctx context.Context) error {
	if err := waitFrontGone(ctx, c.prev, c.d.cfg, c.opts.ReleaseHTTPPort); err != nil {
		return err
	}
	applied, err := c.eng.Apply(ctx, c.project, stack.ApplyOptions{
		Pull: c.pull, Reporter: c.opts.Reporter, WaitTimeout: c.opts.WaitTimeout, Redact: c.d.redactor(), Held: c.st.Held,
	})
	c.applied = applied
	c.res = &Result{Version: c.d.release.Manifest.Version, URL: c.d.url(), Applied: applied, Warnings: c.warnings(), CredentialsTo: c.pull.Auth.Registry}
	if err != nil {
		return fmt.Errorf("bringing the stack up: %w", err)
	}
	return nil
}

// undoConverge brings the stack back to the files the commit replaced
// (they are put back first: the commit's own undo then finds them so).
func (c *convergeRun) undoConverge(ctx context.Context) error {
	if err := c.undoCommit(ctx); err != nil {
		return err
	}
	project, err := stack.Load(ctx, c.paths.ConfigDir, c.prev.Defaults().Project)
	if err != nil {
		return err
	}
	return c.applyPrevious(ctx, project)
}

// applyPrevious converges the stack back to project, the files put back
// (every image is still there: nothing is pulled).
func (c *convergeRun) applyPrevious(ctx context.Context, project *types.Project) error {
	_, err := c.eng.Apply(ctx, project, stack.ApplyOptions{
		Pull: stack.PullOptions{Policy: stack.PullMissing, Auth: c.pull.Auth}, Reporter: c.opts.Reporter,
		WaitTimeout: c.opts.WaitTimeout, Redact: c.d.redactor(), Held: c.st.Held,
	})
	return err
}

func (c *convergeRun) reloadRouter(ctx context.Context) error {
	newCert := c.d.certs[config.ServerCertFile] != nil || c.d.certs[config.ServerKeyFile] != nil
	if c.acme != nil && c.acme.certs[config.ServerCertFile] != nil {
		newCert = true // issued by the ACME CA during this run
	}
	return reloadRouter(ctx, c.eng, c.project.Name, newCert, c.applied)
}

func (c *convergeRun) record(ctx context.Context) error {
	st, err := loadState(c.paths.StateDir)
	if err != nil {
		return err
	}
	st.record(c.action, c.res.Version, time.Now().UTC())
	if err := saveState(c.paths.StateDir, st); err != nil {
		return err
	}
	c.res.Status, err = statusOf(ctx, c.eng, c.paths, c.d.cfg, c.project)
	return err
}

// committedFiles are the files commit writes.
func (c *convergeRun) committedFiles() []string {
	certs := filepath.Join(c.paths.ConfigDir, config.CertsDirName)
	files := []string{
		c.paths.File(config.CustomerEnvFileName), c.paths.KeyFile(), c.paths.File(config.LicenseFileName),
		c.paths.File(config.ConfigFileName), c.paths.File(config.EnvFileName), c.paths.File(stack.ComposeFileName),
		JoinTokenPath(c.paths),
	}
	for name := range c.d.certs {
		files = append(files, filepath.Join(certs, name))
	}
	if c.acme != nil {
		for name := range c.acme.certs {
			files = append(files, filepath.Join(certs, name))
		}
	}
	return files
}

// fileSnapshot is files' contents and modes at one moment; a nil data
// for a file that did not exist.
type fileSnapshot map[string]snapshotFile

type snapshotFile struct {
	data []byte
	mode fs.FileMode
}

func snapshot(paths []string) (fileSnapshot, error) {
	s := fileSnapshot{}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			s[p] = snapshotFile{}
			continue
		}
		var b []byte
		if err == nil {
			b, err = os.ReadFile(p)
		}
		if err != nil {
			return nil, fmt.Errorf("keeping %s to undo the change: %w", p, err)
		}
		s[p] = snapshotFile{data: b, mode: fi.Mode().Perm()}
	}
	return s, nil
}

// restore writes the files back, and removes those that did not exist.
func (s fileSnapshot) restore() error {
	for p, f := range s {
		if f.data == nil {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("undoing the change of %s: %w", p, err)
			}
			continue
		}
		if err := atomicfile.Write(p, f.data, f.mode); err != nil {
			return fmt.Errorf("undoing the change of %s: %w", p, err)
		}
	}
	return nil
}

func writeRendered(dir string, d *desired) error {
	if err := os.MkdirAll(filepath.Join(dir, config.CertsDirName), 0o700); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, config.EnvFileName), d.envFile, 0o600); err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, stack.ComposeFileName), d.compose, 0o644)
}

// commit writes the imported and rendered files into the config dir, each
// atomically, inputs first so that a crash in between leaves a config dir
// that the next apply renders again.
func commit(paths config.Paths, d *desired, obtained map[string][]byte) error {
	if err := os.MkdirAll(paths.ConfigDir, 0o755); err != nil {
		return fmt.Errorf("creating the config dir: %w", err)
	}
	// Marked first: uninstall --purge deletes only in marked dirs.
	if err := markOwned(paths.ConfigDir, "config dir"); err != nil {
		return err
	}
	if err := markOwned(paths.StateDir, "state dir"); err != nil {
		return err
	}
	certs := filepath.Join(paths.ConfigDir, config.CertsDirName)
	if err := os.MkdirAll(certs, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", certs, err)
	}
	if err := os.Chmod(certs, 0o700); err != nil {
		return fmt.Errorf("securing %s: %w", certs, err)
	}
	if d.ca != nil {
		if err := d.ca.save(paths); err != nil {
			return err
		}
	}
	if d.pin != nil {
		if err := savePin(paths, d.release, d.pin); err != nil {
			return err
		}
	}
	if err := atomicfile.Write(paths.File(config.CustomerEnvFileName), d.customer, 0o600); err != nil {
		return err
	}
	if err := atomicfile.Write(paths.KeyFile(), d.key, 0o600); err != nil {
		return err
	}
	if d.license != nil {
		if err := atomicfile.Write(paths.File(config.LicenseFileName), d.license, 0o600); err != nil {
			return err
		}
	}
	if d.join != nil {
		if err := peer.WriteTokenFile(JoinTokenPath(paths), d.join); err != nil {
			return fmt.Errorf("keeping the layout's join token: %w", err)
		}
	}
	for _, set := range []map[string][]byte{d.certs, obtained} {
		for name, data := range set {
			if err := atomicfile.Write(filepath.Join(certs, name), data, 0o600); err != nil {
				return err
			}
		}
	}
	if err := publishMounts(paths, d.cfg); err != nil {
		return err
	}
	if err := config.Save(paths.File(config.ConfigFileName), d.cfg); err != nil {
		return err
	}
	if err := writeRendered(paths.ConfigDir, d); err != nil {
		return fmt.Errorf("writing the rendered files: %w", err)
	}
	return nil
}
