package installer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/internal/boundedread"
	"github.com/cartodb/carto-appliance/peer"
	"github.com/cartodb/carto-appliance/release"
)

// In a tier layout the database runs on the data node and the migrations
// on the app node: the app node's upgrade is what changes the schema, so
// its backup must hold the database as it is right before. The app node
// asks the data node's agent to dump it (into the data node's backups) and,
// to roll back, to restore that dump; the app node's own backup says where
// the dump is (remoteDumpFile).

// remoteDumpFile, in an app node's upgrade backup, names the dump the
// data node took for it.
const remoteDumpFile = "database-on-data-node.json"

// remoteDump is where an app node's upgrade backup has its database.
type remoteDump struct {
	Node string `json:"node"` // the data node's address
	Name string `json:"name"` // the backup's name in the data node's backups
}

// peerBackupSuffix ends the name of a backup a data node took for the app
// node: rollback on the data node never takes it for one of its own.
const peerBackupSuffix = "-for-app"

// BackupDatabaseForPeer dumps the embedded database into a new backup of
// this (data) node's state dir, for the app node's upgrade from r.From to
// r.To, and reads it back: what the peer API's backup runs.
func BackupDatabaseForPeer(ctx context.Context, paths config.Paths, r peer.BackupRequest) (*peer.Backup, error) {
	paths = paths.WithDefaults()
	if err := checkPeerVersions("a database backup", r.From, r.To); err != nil {
		return nil, err
	}
	unlock, err := lockConverge(ctx, paths)
	if err != nil {
		return nil, err
	}
	defer unlock()
	u, closeRun, err := databaseRun(ctx, paths)
	if err != nil {
		return nil, err
	}
	defer closeRun()
	parent := filepath.Join(paths.StateDir, backupsDirName)
	removePartialBackups(parent)
	name := fmt.Sprintf("%s-upgrade-%s-to-%s%s", time.Now().UTC().Format("20060102T150405Z"), r.From, r.To, peerBackupSuffix)
	dir, err := newDir(parent, name)
	if err != nil {
		return nil, fmt.Errorf("creating the backup directory: %w", err)
	}
	partial := filepath.Join(dir, backupPartialFile)
	if err := atomicfile.Write(partial, []byte("incomplete: the process writing this backup stopped\n"), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := u.dumpDatabase(ctx, dir); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("backing up the database for the app node's upgrade: %w", err)
	}
	readme := fmt.Sprintf("Database backup taken by carto-appliance for the app node's upgrade of CARTO %s to %s, at %s.\n%s: pg_dump -Fc of the database %s.\n",
		r.From, r.To, time.Now().UTC().Format(time.RFC3339), backupDumpFile, u.dbName())
	if err := atomicfile.Write(filepath.Join(dir, backupReadmeFile), []byte(readme), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := os.Remove(partial); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	fi, err := os.Stat(filepath.Join(dir, backupDumpFile))
	if err != nil {
		return nil, err
	}
	return &peer.Backup{Name: filepath.Base(dir), Bytes: fi.Size()}, nil
}

// checkPeerVersions refuses a peer's request for what (a backup, a
// rehearsal) of the upgrade from -> to unless both are release versions.
func checkPeerVersions(what, from, to string) error {
	for _, v := range []string{from, to} {
		if _, err := release.ParseVersion(v); err != nil {
			return fmt.Errorf("%s for the upgrade %q -> %q: %w", what, from, to, err)
		}
	}
	return nil
}

// RestoreDatabaseForPeer puts this (data) node's database back from the
// backup it took for the app node (BackupDatabaseForPeer), with its other
// services stopped meanwhile, then brings them back: what the peer API's
// restore runs. The app node stops its own services first.
func RestoreDatabaseForPeer(ctx context.Context, paths config.Paths, r peer.RestoreRequest) error {
	paths = paths.WithDefaults()
	if r.Name == "" || r.Name != filepath.Base(r.Name) || !strings.Contains(r.Name, peerBackupSuffix) {
		return fmt.Errorf("restoring the database: %q is not a backup this node took for the app node", r.Name)
	}
	dir := filepath.Join(paths.StateDir, backupsDirName, r.Name)
	if _, err := os.Stat(filepath.Join(dir, backupPartialFile)); err == nil {
		return fmt.Errorf("restoring the database: the backup %s is incomplete", dir)
	}
	if _, err := os.Stat(filepath.Join(dir, backupDumpFile)); err != nil {
		return fmt.Errorf("restoring the database: the backup %s has no dump: %w", dir, err)
	}
	unlock, err := lockConverge(ctx, paths)
	if err != nil {
		return err
	}
	defer unlock()
	opts := Options{Paths: paths}
	if err := restoreDatabaseFromBackup(ctx, opts, paths, dir); err != nil {
		return err
	}
	_, err = convergeInstalled(ctx, opts, paths, "restore-database")
	return err
}

// databaseRun is an upgrade run over the installed settings, for the
// dump and restore code it carries.
func databaseRun(ctx context.Context, paths config.Paths) (*upgradeRun, func(), error) {
	d, err := planInstalled(paths, nil, TLSInput{})
	if err != nil {
		return nil, nil, err
	}
	if d.cfg.Role != config.RoleData {
		return nil, nil, fmt.Errorf("this is not the data node of a tier layout: the database is not here")
	}
	c, err := newConvergeRun(ctx, Options{Paths: paths}, paths, d, "backup")
	if err != nil {
		return nil, nil, err
	}
	return &upgradeRun{convergeRun: c}, c.close, nil
}

// dataPeer is the client and address of the data node of cfg's layout.
func dataPeer(paths config.Paths, cfg config.Config) (*peer.Client, string, error) {
	join, err := readJoin(paths)
	if err != nil {
		return nil, "", err
	}
	if join == nil {
		return nil, "", fmt.Errorf("this %s node has no join token (%s): it cannot ask the data node", cfg.Role, JoinTokenPath(paths))
	}
	return &peer.Client{Secret: join.Secret, Port: cfg.PeerPort(), OpsHTTP: peerOpsHTTP}, cfg.Nodes[config.RoleData], nil
}

// peerOpsHTTP sends the requests to the data node's ops; nil: the peer
// package's. Unit tests route them to a peer API of their own.
var peerOpsHTTP *http.Client

// databaseOnDataNode says whether the database of u's node runs on the
// layout's data node.
func (u *upgradeRun) databaseOnDataNode() bool {
	_, embedded := u.project.Services[databaseService]
	return !embedded && u.d.cfg.Distributed() && u.d.cfg.Role == config.RoleApp
}

// runsNoMigrations says whether u's node is the tier2 web node: no
// database and no migration of it run here, so its upgrade has none to
// back up.
func (u *upgradeRun) runsNoMigrations() bool {
	return u.d.cfg.Distributed() && u.d.cfg.Role == config.RoleWeb
}

// peerOpTimeout bounds a dump or a restore the data node runs for us.
const peerOpTimeout = 30 * time.Minute

// dumpOnDataNode has the data node dump the database for this upgrade,
// and records where in the backup dir.
func (u *upgradeRun) dumpOnDataNode(ctx context.Context, dir string) error {
	client, addr, err := dataPeer(u.paths, u.d.cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, peerOpTimeout)
	defer cancel()
	b, err := client.Backup(ctx, addr, peer.BackupRequest{From: u.from.Manifest.Version, To: u.d.release.Manifest.Version})
	if err != nil {
		return fmt.Errorf("having the data node (%s) back up the database: %w", addr, err)
	}
	rd, err := json.Marshal(remoteDump{Node: addr, Name: b.Name})
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, remoteDumpFile), rd, 0o600); err != nil {
		return err
	}
	u.dumped, u.remote = true, &remoteDump{Node: addr, Name: b.Name}
	return appendFile(filepath.Join(dir, backupReadmeFile), fmt.Sprintf("%s: the database's dump is on the data node (%s), in its state dir's %s/%s (%d bytes).\n",
		remoteDumpFile, addr, backupsDirName, b.Name, b.Bytes))
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readRemoteDump is where a backup of this node has its database on the
// data node, or nil when it has none there.
func readRemoteDump(backup string) (*remoteDump, error) {
	b, err := boundedread.ReadFile(filepath.Join(backup, remoteDumpFile), 4096)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rd remoteDump
	if err := json.Unmarshal(b, &rd); err != nil || rd.Name == "" || rd.Node == "" {
		return nil, fmt.Errorf("the backup %s: %s is not readable", backup, remoteDumpFile)
	}
	return &rd, nil
}

// restoreOnDataNode stops every service of p, this app node's (they are
// the database's writers), and has the data node restore the dump it took
// for the backup; the caller then brings the services back.
func restoreOnDataNode(ctx context.Context, eng stackEngine, opts Options, paths config.Paths, cfg config.Config, p *types.Project, rd *remoteDump) error {
	if _, err := eng.Stop(ctx, p, p.ServiceNames(), opts.Reporter); err != nil {
		return fmt.Errorf("stopping the services to restore the database: %w", err)
	}
	client, _, err := dataPeer(paths, cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, peerOpTimeout)
	defer cancel()
	if err := client.Restore(ctx, rd.Node, peer.RestoreRequest{Name: rd.Name}); err != nil {
		return fmt.Errorf("having the data node (%s) restore the database from its backup %s: %w", rd.Node, rd.Name, err)
	}
	return nil
}
