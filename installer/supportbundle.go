package installer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/moby/api/types/container"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/envfile"
	"github.com/cartodb/carto-appliance/firewall"
	"github.com/cartodb/carto-appliance/host"
	"github.com/cartodb/carto-appliance/internal/boundedread"
	"github.com/cartodb/carto-appliance/stack"
	"github.com/cartodb/carto-appliance/support"
)

// SupportBundleOptions are what a support bundle holds.
type SupportBundleOptions struct {
	Paths config.Paths
	// LogLines is how many of each service's last log lines (and of the
	// agent's journal) it holds; 0: DefaultLogLines.
	LogLines int
	// MaxBytes bounds its entries (before compression); 0:
	// DefaultSupportBundleBytes.
	MaxBytes int64
}

// Defaults of SupportBundleOptions.
const (
	DefaultLogLines           = 2000
	DefaultSupportBundleBytes = 200 << 20
)

// supportStep bounds each part a bundle collects: a bundle is taken when
// something is wrong, and a hung engine must not hang it.
const supportStep = 90 * time.Second

// SupportBundle writes to w one .tar.gz that tells CARTO's support the
// node's story (SPEC §12), without a secret in it: status, preflight, the
// settings and .env, the containers as the engine sees them, the last log
// lines of each service and of the agent, the engine's info, the host's
// disk, memory and cgroup figures, the journals, the certificate and
// licence summaries. Every entry goes through one redaction (by the known
// secrets' values and by secret shapes, log lines included), reported
// in REDACTIONS. What cannot be collected (the engine down, nothing
// installed) is said in MANIFEST and in the summary; the rest is still
// collected. Nothing on the node changes.
func SupportBundle(ctx context.Context, w io.Writer, opts SupportBundleOptions) (*support.Summary, error) {
	paths := opts.Paths.WithDefaults()
	lines := opts.LogLines
	if lines <= 0 {
		lines = DefaultLogLines
	}
	limit := opts.MaxBytes
	if limit <= 0 {
		limit = DefaultSupportBundleBytes
	}
	now := time.Now().UTC()
	redaction, secretsFrom := supportRedaction(paths)
	b := support.New(w, "carto-support-"+now.Format("20060102T150405Z"), redaction.Redact, limit, now)
	if secretsFrom != nil {
		b.Missing("REDACTIONS", fmt.Errorf("the installed .env could not be read (%w): secrets are masked by customer.env, key.json and their shapes", secretsFrom))
	}
	c := &collector{b: b, paths: paths, lines: lines}
	c.host(ctx)
	c.files()
	c.status(ctx)
	c.engine(ctx)
	c.preflight(ctx)
	c.journal(ctx)
	sum := b.Summary()
	if err := b.Close(); err != nil {
		return nil, err
	}
	return &sum, nil
}

// supportRedaction masks the installed .env's secrets (customer.env's
// when .env cannot be read: a broken install), key.json's and the
// licence's signed parts; err says why .env was not used.
func supportRedaction(paths config.Paths) (*envfile.Redaction, error) {
	env, err := installedEnv(paths)
	if err != nil {
		if b, rerr := boundedread.ReadFile(paths.File(config.CustomerEnvFileName), boundedread.EnvFile); rerr == nil {
			env, _ = envfile.Parse(b)
		}
	}
	extra := map[string][]string{}
	if key, kerr := boundedread.ReadFile(paths.KeyFile(), boundedread.KeyJSON); kerr == nil {
		extra["key.json"] = envfile.KeySecrets(key)
	}
	// appliance.yaml is in the bundle whole: the console's password hash
	// is a secret too (an offline guess needs nothing else).
	if cfg, found, cerr := config.Load(paths.File(config.ConfigFileName)); cerr == nil && found && cfg.Console.PasswordHash != "" {
		extra["console.password_hash"] = []string{cfg.Console.PasswordHash}
	}
	if lic, lerr := boundedread.ReadFile(paths.File(config.LicenseFileName), boundedread.License); lerr == nil {
		var signed struct{ Payload, Signature string }
		if json.Unmarshal(lic, &signed) == nil {
			extra["license.json"] = []string{signed.Payload, signed.Signature}
		}
	}
	return envfile.NewRedaction(env, extra), err
}

type collector struct {
	b     *support.Bundle
	paths config.Paths
	lines int
}

// host adds the machine's facts: what it runs, its memory and cgroup
// limits, its disks' room.
func (c *collector) host(ctx context.Context) {
	facts := map[string]any{"go_arch": runtime.GOARCH, "collected_at": time.Now().UTC()}
	if h, err := os.Hostname(); err == nil {
		facts["hostname"] = h
	}
	c.b.AddJSON("host/facts.json", facts)
	for name, path := range map[string]string{
		"host/os-release": "/etc/os-release", "host/kernel": "/proc/version", "host/uptime": "/proc/uptime",
		"host/loadavg": "/proc/loadavg", "host/meminfo": "/proc/meminfo",
		"host/cgroup-memory.max": "/sys/fs/cgroup/memory.max", "host/cgroup-cpu.max": "/sys/fs/cgroup/cpu.max",
	} {
		c.file(name, path)
	}
	dirs := []string{"/", c.paths.ConfigDir, c.paths.StateDir, "/var/lib/docker"}
	var df strings.Builder
	fmt.Fprintf(&df, "%-32s %12s %12s %12s\n", "PATH", "SIZE_MIB", "FREE_MIB", "FREE_INODES")
	for _, d := range dirs {
		var st syscall.Statfs_t
		if err := syscall.Statfs(d, &st); err != nil {
			fmt.Fprintf(&df, "%-32s %s\n", d, err)
			continue
		}
		fmt.Fprintf(&df, "%-32s %12d %12d %12d\n", d, st.Blocks*uint64(st.Bsize)>>20, st.Bavail*uint64(st.Bsize)>>20, st.Ffree)
	}
	c.b.Add("host/df.txt", []byte(df.String()))
}

// files adds the appliance's settings and state files, as they are.
func (c *collector) files() {
	for _, name := range []string{config.ConfigFileName, config.EnvFileName, stack.ComposeFileName} {
		c.file("config/"+name, c.paths.File(name))
	}
	// customer.env line by line as env render shows it: a secret's value
	// masked by its name even when no other file holds it.
	if b, err := boundedread.ReadFile(c.paths.File(config.CustomerEnvFileName), boundedread.EnvFile); err != nil {
		c.b.Missing("config/"+config.CustomerEnvFileName, err)
	} else if env, err := envfile.Parse(b); err != nil {
		c.b.Missing("config/"+config.CustomerEnvFileName, fmt.Errorf("not readable as a .env file: %w", err))
	} else {
		c.b.Add("config/"+config.CustomerEnvFileName, envfile.Marshal(envfile.Masked(env)))
	}
	for _, name := range []string{stateFileName, agentStateFileName, journalFileName, upgradeJournalFileName, selfUpdateJournalFileName,
		upgradeIntentFileName, config.LicenseCheckFileName, firewall.FileName} {
		c.file("state/"+name, filepath.Join(c.paths.StateDir, name))
	}
}

// file adds the file at path as name, or says why it could not.
func (c *collector) file(name, path string) {
	b, err := boundedread.ReadFile(path, 16<<20)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			err = fmt.Errorf("%s does not exist", path)
		}
		c.b.Missing(name, err)
		return
	}
	c.b.Add(name, b)
}

// status adds status --json: the services, the certificate's and the
// licence's summaries, the peers.
func (c *collector) status(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, supportStep)
	defer cancel()
	st, err := GetStatus(ctx, c.paths)
	if err != nil {
		c.b.Missing("status.json", err)
		return
	}
	c.b.AddJSON("status.json", st)
}

// engine adds the engine's info, the project's containers (their
// environment masked by name before the redaction) and each service's
// last log lines.
func (c *collector) engine(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, supportStep)
	defer cancel()
	eng, err := connectEngine(ctx)
	if err != nil {
		for _, name := range []string{"engine/info.json", "engine/containers.json", "logs/"} {
			c.b.Missing(name, err)
		}
		return
	}
	defer eng.Close()
	project := "carto"
	if cfg, _, err := config.Load(c.paths.File(config.ConfigFileName)); err == nil {
		project = cfg.Defaults().Project
	}
	d, err := eng.Diagnose(ctx, project)
	if d != nil {
		c.b.AddJSON("engine/info.json", d.Info)
		for i := range d.Containers {
			maskContainerEnv(&d.Containers[i])
		}
		c.b.AddJSON("engine/containers.json", d.Containers)
	}
	if err != nil {
		c.b.Missing("engine/containers.json", err)
	}
	services := map[string]bool{}
	if d != nil {
		for _, ct := range d.Containers {
			if ct.Config != nil && ct.Config.Labels["com.docker.compose.service"] != "" {
				services[ct.Config.Labels["com.docker.compose.service"]] = true
			}
		}
	}
	for svc := range services {
		var buf bytes.Buffer
		if err := eng.Logs(ctx, project, &buf, stack.LogsOptions{Services: []string{svc}, Tail: strconv.Itoa(c.lines)}); err != nil {
			c.b.Missing("logs/"+svc+".log", err)
			continue
		}
		c.b.Add("logs/"+svc+".log", buf.Bytes())
	}
}

// maskContainerEnv masks each variable of a container's environment by
// its name, as env render does.
func maskContainerEnv(ct *container.InspectResponse) {
	if ct.Config == nil {
		return
	}
	for i, kv := range ct.Config.Env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			ct.Config.Env[i] = k + "=" + envfile.MaskValue(k, v)
		}
	}
}

// preflight adds the host checks' report, as install would run them now.
func (c *collector) preflight(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, supportStep)
	defer cancel()
	d, err := planInstalled(c.paths, nil, TLSInput{})
	if err != nil {
		c.b.Missing("preflight.json", err)
		return
	}
	report, err := runPreflight(ctx, c.paths, d, nil)
	if report == nil {
		c.b.Missing("preflight.json", err)
		return
	}
	c.b.AddJSON("preflight.json", report)
}

// journal adds the agent's last journal lines.
func (c *collector) journal(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, supportStep)
	defer cancel()
	out, err := exec.CommandContext(ctx, "journalctl", "-u", host.ServiceUnit, "-n", strconv.Itoa(c.lines), "--no-pager", "-o", "short-iso").Output()
	if err != nil {
		c.b.Missing("agent/journal.txt", fmt.Errorf("journalctl -u %s: %w", host.ServiceUnit, err))
		return
	}
	c.b.Add("agent/journal.txt", out)
}
