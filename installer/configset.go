package installer

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/envfile"
)

// Setting is one appliance.yaml setting as `config show` and `config get`
// show it.
type Setting struct {
	Name string `json:"name"` // its dotted yaml name, e.g. router.https_port
	// Value is the setting as text: masked whole when its name says
	// secret, and a URL's user info is never shown.
	Value string `json:"value"`
	// Set says appliance.yaml sets it; otherwise Value is the default in
	// force.
	Set    bool `json:"set"`
	Secret bool `json:"secret,omitempty"`
}

// SettingChange is a setting SetConfig changed, both sides shown as
// Setting shows them.
type SettingChange struct {
	Name string  `json:"name"`
	Old  Setting `json:"old"`
	New  Setting `json:"new"`
	// Live: the change takes effect by itself (config.Live); the others
	// wait for `config apply`.
	Live bool `json:"live"`
}

// SetResult is what SetConfig did.
type SetResult struct {
	File    string          `json:"file"`    // the appliance.yaml written
	Changes []SettingChange `json:"changes"` // in the order given; none when nothing changed
	Changed bool            `json:"changed"` // false: the file was left as it was
}

// AwaitingApply are the names of the changes that take effect only with
// `config apply`, in the order given.
func (r *SetResult) AwaitingApply() []string {
	var names []string
	for _, c := range r.Changes {
		if !c.Live {
			names = append(names, c.Name)
		}
	}
	return names
}

// ShowConfig is every setting of the installed appliance.yaml, by name.
func ShowConfig(paths config.Paths) ([]Setting, error) {
	paths = paths.WithDefaults()
	cfg, err := loadInstalledConfig(paths)
	if err != nil {
		return nil, err
	}
	var out []Setting
	for _, name := range config.SettingNames() {
		s, err := showSetting(cfg, name)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// GetConfig is one setting of the installed appliance.yaml.
func GetConfig(paths config.Paths, name string) (Setting, error) {
	paths = paths.WithDefaults()
	cfg, err := loadInstalledConfig(paths)
	if err != nil {
		return Setting{}, err
	}
	s, err := showSetting(cfg, name)
	if err != nil {
		return Setting{}, &InputError{Input: InputSetting, Err: err}
	}
	return s, nil
}

// SetConfig changes settings of the installed appliance.yaml, each given
// as NAME=VALUE (an empty VALUE puts the default back). All of them are
// applied, then the result validated, and only then is the file written,
// once; on any error nothing is. It does not apply them: that is
// `config apply`'s run.
//
// The file is written under the converge lock, so that it never changes
// under a running apply or upgrade (which write it too). Errors in what
// was given are *InputError (InputSetting) wrapping the
// *config.FieldError that names the setting.
func SetConfig(ctx context.Context, paths config.Paths, pairs []string) (*SetResult, error) {
	paths = paths.WithDefaults()
	names, values, err := parsePairs(pairs)
	if err != nil {
		return nil, err
	}
	// Checked first without the lock: bad input is refused at once, not
	// after a running upgrade finishes.
	if _, _, err := setPairs(paths, names, values); err != nil {
		return nil, err
	}
	unlock, err := lockConverge(ctx, paths)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Read again under the lock: a change that committed meanwhile (proxy
	// set, an upgrade) keeps its settings.
	res, cfg, err := setPairs(paths, names, values)
	if err != nil || !res.Changed {
		return res, err
	}
	if err := config.Save(res.File, cfg); err != nil {
		return nil, fmt.Errorf("writing the new settings: %w", err)
	}
	return res, nil
}

// parsePairs splits NAME=VALUE pairs, keeping their order.
func parsePairs(pairs []string) ([]string, map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil, inputErrorf(InputSetting, "no setting given: give NAME=VALUE, e.g. router.https_port=8443 (`carto-appliance config show` lists the names)")
	}
	var names []string
	values := map[string]string{}
	for _, p := range pairs {
		name, value, ok := strings.Cut(p, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, nil, inputErrorf(InputSetting, "%q is not NAME=VALUE: give the setting's name, '=' and its value, e.g. router.https_port=8443 (an empty value puts the default back)", envfile.MaskText(p))
		}
		if _, dup := values[name]; dup {
			return nil, nil, inputErrorf(InputSetting, "%s is given twice: give each setting once", name)
		}
		names = append(names, name)
		values[name] = value
	}
	return names, values, nil
}

// setPairs is the installed appliance.yaml with the values set and
// validated, and what changed; it writes nothing.
func setPairs(paths config.Paths, names []string, values map[string]string) (*SetResult, config.Config, error) {
	cfg, err := loadInstalledConfig(paths)
	if err != nil {
		return nil, config.Config{}, err
	}
	old := cfg
	for _, name := range names {
		if err := cfg.Set(name, values[name]); err != nil {
			return nil, config.Config{}, &InputError{Input: InputSetting, Err: err}
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, config.Config{}, &InputError{Input: InputSetting, Err: err}
	}
	res := &SetResult{File: paths.File(config.ConfigFileName)}
	for _, name := range names {
		before, err := showSetting(old, name)
		if err != nil {
			return nil, config.Config{}, err
		}
		after, err := showSetting(cfg, name)
		if err != nil {
			return nil, config.Config{}, err
		}
		// Compared unmasked: a secret changed to another is a change.
		b, bset, _ := old.Get(name)
		a, aset, _ := cfg.Get(name)
		if a != b || aset != bset {
			res.Changes = append(res.Changes, SettingChange{Name: name, Old: before, New: after, Live: config.Live(name)})
		}
	}
	res.Changed = len(res.Changes) > 0
	return res, cfg, nil
}

// showSetting is cfg's setting name as it may be shown.
func showSetting(cfg config.Config, name string) (Setting, error) {
	value, set, err := cfg.Get(name)
	if err != nil {
		return Setting{}, err
	}
	return shown(name, value, set), nil
}

// shown is a setting's value as it may be shown: masked whole when the
// last part of its name says secret (envfile.IsSecret, as for .env), and
// otherwise without a URL's user info or the secret parts of a text.
func shown(name, value string, set bool) Setting {
	key := name[strings.LastIndex(name, ".")+1:]
	s := Setting{Name: name, Set: set, Secret: envfile.IsSecret(key)}
	if s.Secret {
		s.Value = envfile.MaskValue(key, value)
		return s
	}
	items := strings.Split(value, ",")
	for i, item := range items {
		items[i] = envfile.MaskText(withoutUserInfo(item))
	}
	s.Value = strings.Join(items, ",")
	return s
}

// withoutUserInfo is v with a URL's user info masked: a user name may be
// an account the operator keeps private, and a password is a secret.
// Validate refuses them in the proxy, licence and channel URLs, not in
// every URL a setting may hold (tls.acme.directory, a future field).
func withoutUserInfo(v string) string {
	if !strings.Contains(v, "://") || !strings.Contains(v, "@") {
		return v
	}
	u, err := url.Parse(strings.TrimSpace(v))
	if err != nil {
		return envfile.Mask
	}
	if u.User == nil {
		return v
	}
	u.User = nil
	return strings.Replace(u.String(), "://", "://"+envfile.Mask+"@", 1)
}
