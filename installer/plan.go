package installer

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/envfile"
	"github.com/cartodb/carto-appliance/stack"
)

// Plan is what a run would change, decided from the inputs before anything
// is touched: the release it renders, the files it writes, the settings
// of .env that change, the certificates, the router's allow-list and the
// steps it runs. It is data: `config plan` shows it, tests compare it as
// text.
type Plan struct {
	Action string `json:"action"`
	// Release is the CARTO version rendered; Pin says the run records it
	// as the installed release (a first install).
	Release string `json:"release"`
	Pin     bool   `json:"pin,omitempty"`
	// Files are the config dir's files the run writes, with how each
	// changes: new, changed or unchanged.
	Files []PlannedFile `json:"files"`
	// EnvChanges are the keys of .env added (+), changed (~) or removed
	// (-), never their values; none for a first .env, which has
	// EnvSettings keys.
	EnvChanges  []string `json:"env_changes,omitempty"`
	EnvSettings int      `json:"env_settings"`
	// Certificates says what happens to the router's certificate.
	Certificates []string `json:"certificates,omitempty"`
	// AllowedSources are who may reach the router; empty: everyone.
	AllowedSources []string `json:"allowed_sources,omitempty"`
	Services       []string `json:"services"`
	Steps          []string `json:"steps"`
	Warnings       []string `json:"warnings,omitempty"`
}

// PlannedFile is one file a run writes.
type PlannedFile struct {
	Path   string `json:"path"` // relative to the config dir
	Change string `json:"change"`
}

// Changes to a planned file.
const (
	FileNew       = "new"
	FileChanged   = "changed"
	FileUnchanged = "unchanged"
)

// PlanApply is the plan `config apply` would run now; it changes nothing.
func PlanApply(paths config.Paths) (*Plan, error) {
	paths = paths.WithDefaults()
	d, err := planInstalled(paths, nil, TLSInput{})
	if err != nil {
		return nil, err
	}
	return d.describe(paths, "apply")
}

// describe is the plan d stands for.
func (d *desired) describe(paths config.Paths, action string) (*Plan, error) {
	p := &Plan{Action: action, Release: d.release.Manifest.Version, Pin: d.pin != nil,
		AllowedSources: d.cfg.Network.AllowedSources, Warnings: d.warnings}
	cfgYAML, err := d.cfg.Marshal()
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		config.ConfigFileName: cfgYAML, config.CustomerEnvFileName: d.customer, filepath.Join(config.CertsDirName, config.KeyFileName): d.key,
		config.EnvFileName: d.envFile, stack.ComposeFileName: d.compose,
	}
	if d.license != nil {
		files[config.LicenseFileName] = d.license
	}
	for name, data := range d.certs {
		files[filepath.Join(config.CertsDirName, name)] = data
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		p.Files = append(p.Files, PlannedFile{Path: name, Change: fileChange(filepath.Join(paths.ConfigDir, name), files[name])})
	}
	p.EnvSettings = d.env.Len()
	if p.EnvChanges, err = envChanges(paths.File(config.EnvFileName), d.env); err != nil {
		return nil, err
	}
	p.Certificates = d.certificatePlan()
	var compose struct {
		Services map[string]any `yaml:"services"`
	}
	if err := yaml.Unmarshal(d.compose, &compose); err != nil {
		return nil, fmt.Errorf("reading the rendered compose file: %w", err)
	}
	p.Services = slices.Sorted(maps.Keys(compose.Services))
	for _, s := range (&convergeRun{d: d}).steps() {
		p.Steps = append(p.Steps, s.Name)
	}
	return p, nil
}

func fileChange(path string, want []byte) string {
	have, err := os.ReadFile(path)
	switch {
	case err != nil:
		return FileNew
	case bytes.Equal(have, want):
		return FileUnchanged
	}
	return FileChanged
}

// envChanges lists the keys of the installed .env that the plan adds
// (+KEY), changes (~KEY) or removes (-KEY).
func envChanges(installed string, next envfile.Env) ([]string, error) {
	b, err := os.ReadFile(installed)
	if err != nil {
		return nil, nil // nothing installed: the plan's file is "new"
	}
	prev, err := envfile.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("reading the installed %s: %w", installed, err)
	}
	var out []string
	for _, k := range next.Keys() {
		switch v, ok := prev.Lookup(k); {
		case !ok:
			out = append(out, "+"+k)
		case v != next.Get(k):
			out = append(out, "~"+k)
		}
	}
	for _, k := range prev.Keys() {
		if _, ok := next.Lookup(k); !ok {
			out = append(out, "-"+k)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return strings.Compare(a[1:], b[1:]) })
	return out, nil
}

// certificatePlan says what the run does with the router's certificate.
func (d *desired) certificatePlan() []string {
	var out []string
	mode := d.cfg.TLS.Mode
	if mode == "" {
		mode = config.TLSSelfSigned
	}
	out = append(out, "mode "+mode)
	if d.ca != nil && d.ca.changed() {
		out = append(out, "the appliance's CA: "+d.ca.why)
	}
	if d.certs[config.ServerCertFile] != nil {
		out = append(out, "the router's certificate is replaced")
	}
	if d.acme != nil {
		out = append(out, "a certificate is obtained from "+d.cfg.TLS.ACME.DirectoryURL()+" ("+d.acme.why+")")
	}
	return out
}

// String is the plan as an operator reads it.
func (p *Plan) String() string {
	var b strings.Builder
	pin := ""
	if p.Pin {
		pin = " (recorded as the installed release)"
	}
	fmt.Fprintf(&b, "%s: CARTO %s%s\n", p.Action, p.Release, pin)
	b.WriteString("files:\n")
	for _, f := range p.Files {
		fmt.Fprintf(&b, "  %-28s %s\n", f.Path, f.Change)
	}
	switch {
	case len(p.EnvChanges) > 0:
		fmt.Fprintf(&b, ".env: %s\n", strings.Join(p.EnvChanges, " "))
	case slices.ContainsFunc(p.Files, func(f PlannedFile) bool { return f.Path == config.EnvFileName && f.Change == FileNew }):
		fmt.Fprintf(&b, ".env: %d settings\n", p.EnvSettings)
	default:
		b.WriteString(".env: no setting changes\n")
	}
	for _, c := range p.Certificates {
		fmt.Fprintf(&b, "certificates: %s\n", c)
	}
	if len(p.AllowedSources) > 0 {
		fmt.Fprintf(&b, "router reachable from: %s\n", strings.Join(p.AllowedSources, ", "))
	} else {
		b.WriteString("router reachable from: everyone\n")
	}
	fmt.Fprintf(&b, "services: %s\n", strings.Join(p.Services, ", "))
	fmt.Fprintf(&b, "steps: %s\n", strings.Join(p.Steps, ", "))
	for _, w := range p.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	return b.String()
}
