package installer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/peer"
	"github.com/cartodb/carto-appliance/stack"
)

// RehearseOptions are upgrade --rehearse's inputs.
type RehearseOptions struct {
	Options
	// To is the version to rehearse an upgrade to; empty means the
	// channel's latest.
	To string
}

// Rehearsal is what rehearsing an upgrade found.
type Rehearsal struct {
	From string `json:"from"`
	// DumpBytes is the size of the fresh dump the copy was restored from.
	DumpBytes int64 `json:"dump_bytes"`
	// Steps are the releases of the path, in order, until one failed.
	Steps []RehearsalStep `json:"steps"`
	// OK says every release's migrations succeeded.
	OK bool `json:"ok"`
	// DataNode is the data node that rehearsed, on its copy of the
	// database, for this app or web node of a tier layout; "" when this
	// node did.
	DataNode string `json:"data_node,omitempty"`
}

// RehearsalStep is one release's migrations run on the copy.
type RehearsalStep struct {
	To   string        `json:"to"`
	Took time.Duration `json:"took_ns"`
	// Added and Removed are the columns ("table.column") the migrations
	// added and removed.
	Added   []string `json:"added_columns,omitempty"`
	Removed []string `json:"removed_columns,omitempty"`
	// Error says why the migrations failed, with their last log lines.
	Error string `json:"error,omitempty"`
}

// rehearsalSuffix names the throwaway stack after the live one;
// rehearsalDirPrefix its working dir in the state dir (the dump, each
// release's rendering), removed at the end.
const (
	rehearsalSuffix    = "-rehearsal"
	rehearsalDirPrefix = "rehearsal-"
	rehearsalLockName  = "rehearsal.lock"
)

// RehearseUpgrade runs the migrations of each release of the upgrade path
// against a throwaway copy of the embedded database, touching nothing
// live: a fresh dump (taken as an upgrade's backup is) is restored into
// a database service of its own (the project "<project>-rehearsal", its
// own network and volume, no published port), then each release's one-shot
// services (its migrations) run on it in turn, timed, and the columns they
// add and remove are reported. The throwaway stack is removed at the end,
// whatever happened.
//
// On a tier layout the database is the data node's: another node has the
// data node rehearse its own upgrade path (over the peer API), where the
// dump and the copy stay; only the findings travel.
func RehearseUpgrade(ctx context.Context, in RehearseOptions) (*Rehearsal, error) {
	paths := in.Paths.WithDefaults()
	cfg, err := loadInstalledConfig(paths)
	if err != nil {
		return nil, err
	}
	if cfg.Distributed() && cfg.Role != config.RoleData {
		return rehearseOnDataNode(ctx, paths, cfg, in.To)
	}
	return rehearse(ctx, in.Options, paths, cfg, "", in.To)
}

// RehearseForPeer is the data node's part of another node's rehearsal
// (RehearseUpgrade): the path from r.From, that node's release, to r.To,
// on a copy of this node's database. What the peer API's rehearse runs.
func RehearseForPeer(ctx context.Context, paths config.Paths, r peer.RehearseRequest) (json.RawMessage, error) {
	paths = paths.WithDefaults()
	if err := checkPeerVersions("a rehearsal", r.From, r.To); err != nil {
		return nil, err
	}
	cfg, err := loadInstalledConfig(paths)
	if err != nil {
		return nil, err
	}
	if cfg.Role != config.RoleData {
		return nil, fmt.Errorf("this is not the data node of a tier layout: the database is not here")
	}
	reh, err := rehearse(ctx, Options{Paths: paths}, paths, cfg, r.From, r.To)
	if err != nil {
		return nil, err
	}
	return json.Marshal(reh)
}

// rehearseOnDataNode has the layout's data node rehearse this node's
// upgrade path.
func rehearseOnDataNode(ctx context.Context, paths config.Paths, cfg config.Config, to string) (*Rehearsal, error) {
	chk, _, err := resolveRehearsal(ctx, paths, "", to)
	if err != nil {
		return nil, err
	}
	client, addr, err := dataPeer(paths, cfg)
	if err != nil {
		return nil, err
	}
	found, err := client.Rehearse(ctx, addr, peer.RehearseRequest{From: chk.Installed, To: chk.Target})
	if err != nil {
		return nil, fmt.Errorf("rehearsing on the data node, which holds the database: %w", err)
	}
	var reh Rehearsal
	if err := json.Unmarshal(found, &reh); err != nil {
		return nil, fmt.Errorf("reading the data node's rehearsal: %w", err)
	}
	reh.DataNode = addr
	return &reh, nil
}

// rehearse rehearses the path from from (empty: the installed release)
// to to (empty: the channel's latest) on a copy of this node's database.
func rehearse(ctx context.Context, opts Options, paths config.Paths, cfg config.Config, from, to string) (*Rehearsal, error) {
	chk, src, err := resolveRehearsal(ctx, paths, from, to)
	if err != nil {
		return nil, err
	}
	if a := chk.Appliance; a.Needed != "" {
		// The rehearsal renders and runs the new release with this binary.
		return nil, fmt.Errorf("CARTO %s needs carto-appliance %s or newer to run, and this is %s: it cannot rehearse it; the upgrade updates carto-appliance first (to %s), after which the rehearsal can run", chk.Target, a.Needed, a.Installed, orText(a.Offered, "a version the channel does not offer: "+a.Reason))
	}
	d, err := planInstalled(paths, nil, TLSInput{})
	if err != nil {
		return nil, err
	}
	c, err := newConvergeRun(ctx, opts, paths, d, "rehearse")
	if err != nil {
		return nil, err
	}
	defer c.close()
	live, err := stack.Load(ctx, paths.ConfigDir, cfg.Defaults().Project)
	if err != nil {
		return nil, err
	}
	if _, ok := live.Services[databaseService]; !ok {
		return nil, fmt.Errorf("the database is external (%s): the appliance cannot copy it to rehearse the upgrade; rehearse on a copy of your own", d.env.Get("WORKSPACE_POSTGRES_HOST"))
	}
	// One rehearsal at a time on a node: they share the throwaway
	// project, and a tier layout's app and web nodes may both ask the
	// data node.
	unlock, ok, err := tryLockFile(paths, rehearsalLockName, "the rehearsal lock")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("another upgrade rehearsal runs on this node (run here, or asked by another node of the layout): run this one again when it ends")
	}
	defer unlock()
	// A rehearsal a killed process left holds a dump and a .env: gone
	// (none other runs: the lock). Not the stage dirs: a converge may be
	// using one.
	if stale, _ := filepath.Glob(filepath.Join(paths.StateDir, rehearsalDirPrefix+"*")); len(stale) > 0 {
		for _, dir := range stale {
			os.RemoveAll(dir)
		}
	}
	work, err := os.MkdirTemp(paths.StateDir, rehearsalDirPrefix)
	if err != nil {
		return nil, fmt.Errorf("rehearsing the upgrade: %w", err)
	}
	defer os.RemoveAll(work)
	u := &upgradeRun{convergeRun: c, backup: work}
	if err := u.dumpDatabase(ctx, work); err != nil {
		return nil, err
	}
	// The copy's server is new: the roles the database's objects belong
	// to (and the migrations log in as) come from the live server.
	if err := u.dumpGlobals(ctx, work); err != nil {
		return nil, err
	}
	out := &Rehearsal{From: chk.Installed}
	if fi, err := os.Stat(filepath.Join(work, backupDumpFile)); err == nil {
		out.DumpBytes = fi.Size()
	}
	name := cfg.Defaults().Project + rehearsalSuffix
	// Removed whatever happens, even when the caller gave up.
	defer c.eng.Down(context.WithoutCancel(ctx), name, nil, stack.DownOptions{RemoveVolumes: true})
	for i := range src.path {
		rel, err := src.fetch(ctx, i)
		if err != nil {
			return out, err
		}
		hop, err := planRelease(paths, standalone(cfg), paths.File(config.CustomerEnvFileName), paths.KeyFile(), TLSInput{}, rel)
		if err != nil {
			return out, fmt.Errorf("planning CARTO %s: %w", rel.Manifest.Version, err)
		}
		dir := filepath.Join(work, rel.Manifest.Version)
		if err := writeRendered(dir, hop); err != nil {
			return out, fmt.Errorf("rendering CARTO %s: %w", rel.Manifest.Version, err)
		}
		p, err := stack.Load(ctx, dir, name)
		if err != nil {
			return out, fmt.Errorf("loading CARTO %s's stack: %w", rel.Manifest.Version, err)
		}
		p, err = rehearsalProject(p, dir, paths.ConfigDir)
		if err != nil {
			return out, fmt.Errorf("CARTO %s: %w", rel.Manifest.Version, err)
		}
		step, err := u.rehearseOn(ctx, p, i == 0)
		step.To = rel.Manifest.Version
		out.Steps = append(out.Steps, step)
		if err != nil {
			return out, err
		}
		if step.Error != "" {
			return out, nil
		}
	}
	out.OK = true
	return out, nil
}

// resolveRehearsal is the upgrade path from from (empty: the installed
// release) to to; an error when there is nothing newer to rehearse.
func resolveRehearsal(ctx context.Context, paths config.Paths, from, to string) (*UpgradeCheck, *upgradeSource, error) {
	chk, src, err := resolveUpgradeFrom(ctx, paths, from, to)
	if err == nil && len(src.path) == 0 {
		err = fmt.Errorf("CARTO %s is installed: nothing newer in the %s channel to rehearse an upgrade to", chk.Installed, chk.Channel)
	}
	return chk, src, err
}

// standalone is cfg as a standard node's: a rehearsal renders each
// release whole, so that the copy runs the database and the migrations
// side by side, whichever node of a layout this is (a data node renders
// no migrations of its own).
func standalone(cfg config.Config) config.Config {
	cfg.Layout, cfg.Role, cfg.Nodes = "", "", nil
	return cfg
}

// rehearseOn runs one release's one-shot services on the copy: the database
// first, alone (restored from the dump at the first release), then the
// rest. A migration that fails is the step's Error, not an error.
func (u *upgradeRun) rehearseOn(ctx context.Context, p *types.Project, restore bool) (RehearsalStep, error) {
	var others []string
	for _, name := range p.ServiceNames() {
		if name != databaseService {
			others = append(others, name)
		}
	}
	opts := stack.ApplyOptions{Pull: stack.PullOptions{Policy: stack.PullMissing, Auth: u.pull.Auth, Progress: u.opts.Progress, Reporter: u.opts.Reporter},
		Reporter: u.opts.Reporter, WaitTimeout: u.opts.WaitTimeout, Redact: u.d.redactor(), Held: others}
	if _, err := u.eng.Apply(ctx, p, opts); err != nil {
		return RehearsalStep{}, fmt.Errorf("starting the copy's database: %w", err)
	}
	if restore {
		if err := u.restoreGlobals(ctx, p.Name); err != nil {
			return RehearsalStep{}, fmt.Errorf("restoring the copy's roles: %w", err)
		}
		if err := u.restoreDatabase(ctx, p); err != nil {
			return RehearsalStep{}, fmt.Errorf("restoring the copy: %w", err)
		}
	}
	before, err := u.columns(ctx, p.Name)
	if err != nil {
		return RehearsalStep{}, err
	}
	opts.Held = nil
	start := time.Now()
	_, err = u.eng.Apply(ctx, p, opts)
	step := RehearsalStep{Took: time.Since(start).Round(time.Millisecond)}
	if err != nil {
		var se *stack.ServiceError
		if !errors.As(err, &se) {
			return step, err
		}
		step.Error = u.d.redactor()(se.Error())
		return step, nil
	}
	after, err := u.columns(ctx, p.Name)
	if err != nil {
		return step, err
	}
	for _, c := range after {
		if !slices.Contains(before, c) {
			step.Added = append(step.Added, c)
		}
	}
	for _, c := range before {
		if !slices.Contains(after, c) {
			step.Removed = append(step.Removed, c)
		}
	}
	return step, nil
}

// columns lists the workspace database's columns as "table.column".
func (u *upgradeRun) columns(ctx context.Context, project string) ([]string, error) {
	var out, errOut bytes.Buffer
	code, err := u.eng.Exec(ctx, project, databaseService, stack.ExecOptions{
		Cmd: []string{"psql", "-U", u.dbAdmin(), "-d", u.dbName(), "-Atc",
			"SELECT table_name || '.' || column_name FROM information_schema.columns WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"},
		Stdout: &out, Stderr: &errOut,
	})
	if err != nil {
		return nil, fmt.Errorf("reading the copy's schema: %w", err)
	}
	if code != 0 {
		return nil, fmt.Errorf("reading the copy's schema: psql exited %d: %s", code, lastLine(errOut.String()))
	}
	return strings.Fields(out.String()), nil
}

// rehearsalProject is the part of a release's stack a rehearsal runs: the
// database and the one-shot services that need it (the migrations), with
// what they depend on, under the rehearsal's project name, publishing no
// port, with volumes and networks of their own (a name the template
// fixes is replaced: the live volume must never be mounted), and the
// bind mounts the stage dir resolved pointing at the config dir again.
func rehearsalProject(p *types.Project, stageDir, configDir string) (*types.Project, error) {
	if _, ok := p.Services[databaseService]; !ok {
		return nil, fmt.Errorf("the release has no %s service to rehearse on", databaseService)
	}
	keep := map[string]bool{}
	var visit func(name string)
	visit = func(name string) {
		keep[name] = true
		for dep := range p.Services[name].DependsOn {
			if !keep[dep] {
				visit(dep)
			}
		}
	}
	visit(databaseService)
	for name, s := range p.Services {
		if _, needsDB := s.DependsOn[databaseService]; needsDB && s.Restart == types.RestartPolicyNo {
			visit(name)
		}
	}
	out := *p
	out.Services = types.Services{}
	for name := range keep {
		s := p.Services[name]
		s.Ports = nil
		s.ContainerName = ""
		s.Volumes = slices.Clone(s.Volumes)
		for i, v := range s.Volumes {
			if v.Type == types.VolumeTypeBind {
				if rel, err := filepath.Rel(stageDir, v.Source); err == nil && !strings.HasPrefix(rel, "..") {
					s.Volumes[i].Source = filepath.Join(configDir, rel)
				}
			}
		}
		out.Services[name] = s
	}
	out.Volumes = types.Volumes{}
	for k, v := range p.Volumes {
		v.Name, v.External = p.Name+"_"+k, false
		out.Volumes[k] = v
	}
	out.Networks = types.Networks{}
	for k, n := range p.Networks {
		n.Name, n.External = p.Name+"_"+k, false
		out.Networks[k] = n
	}
	return &out, nil
}

// rehearsalGlobalsFile holds the live server's roles, for the copy.
const rehearsalGlobalsFile = "globals.sql"

// dumpGlobals writes the live server's roles (pg_dumpall --globals-only)
// into dir.
func (u *upgradeRun) dumpGlobals(ctx context.Context, dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, rehearsalGlobalsFile), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	var errOut bytes.Buffer
	code, err := u.eng.Exec(ctx, u.d.cfg.Defaults().Project, databaseService, stack.ExecOptions{
		Cmd: []string{"pg_dumpall", "-U", u.dbAdmin(), "--globals-only"}, Stdout: f, Stderr: &errOut,
	})
	if err != nil {
		return fmt.Errorf("dumping the database's roles: %w", err)
	}
	if code != 0 {
		return fmt.Errorf("dumping the database's roles: pg_dumpall exited %d: %s", code, lastLine(errOut.String()))
	}
	return nil
}

// restoreGlobals creates the live server's roles in the copy's. The admin
// role exists there already: its CREATE fails and psql goes on (the
// ALTER after it applies), as for any role the image made.
func (u *upgradeRun) restoreGlobals(ctx context.Context, project string) error {
	f, err := os.Open(filepath.Join(u.backup, rehearsalGlobalsFile))
	if err != nil {
		return err
	}
	defer f.Close()
	var errOut bytes.Buffer
	code, err := u.eng.Exec(ctx, project, databaseService, stack.ExecOptions{
		Cmd: []string{"psql", "-U", u.dbAdmin(), "-d", u.adminDB(), "-q"}, Stdin: f, Stderr: &errOut,
	})
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("psql exited %d: %s", code, lastLine(errOut.String()))
	}
	return nil
}

func orText(s, otherwise string) string {
	if s == "" {
		return otherwise
	}
	return s
}
