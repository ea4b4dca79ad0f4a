package config

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cartodb/carto-appliance/envfile"
	"github.com/cartodb/carto-appliance/license"
)

// The settings by name (`config show/get/set`): each leaf of Config is
// named by its yaml tags joined with dots (router.https_port). They are
// found by reflection, so that a new field is covered without a list to
// keep up to date; the tests fail when Set cannot parse a new field's kind.

// settingIndex maps each setting's name to its field's index path in
// Config; a section (a struct, or a pointer to one) is walked, not named.
var settingIndex = sync.OnceValue(func() map[string][]int {
	return leafFields(reflect.TypeFor[Config](), "", nil)
})

func leafFields(t reflect.Type, prefix string, index []int) map[string][]int {
	out := map[string][]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		if prefix != "" {
			name = prefix + "." + name
		}
		idx := append(slices.Clone(index), i)
		ft := f.Type
		if ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			maps.Copy(out, leafFields(ft, name, idx))
			continue
		}
		out[name] = idx
	}
	return out
}

// SettingNames are the names of every appliance.yaml setting, sorted.
func SettingNames() []string { return slices.Sorted(maps.Keys(settingIndex())) }

// setElsewhere are the settings Set refuses, by name or by section
// (ending in "."), each with why and what changes it instead. Their
// change is more than a line of appliance.yaml: a node's place in a
// layout, or a certificate or CA file that must be checked and installed.
var setElsewhere = map[string]string{
	"layout":                "the layout is set at install; changing it is not supported (uninstall, then install again)",
	"role":                  "the node's role is set at install; changing it is not supported (uninstall, then install again)",
	"nodes":                 "the layout's nodes are set at install; changing them is not supported (uninstall, then install again)",
	"peer.port":             "the peer port is set at install; changing it is not supported (every node of the layout must agree on it)",
	"tls.mode":              "the TLS mode comes with its certificate: use `carto-appliance certs self-signed`, `certs import`, `certs acme` or `certs offload`, which check the certificate and install it",
	"tls.acme.":             "the ACME settings come with a certificate from that CA: use `carto-appliance certs acme`, which checks them and obtains it",
	"proxy.ca_cert":         "the proxy's CA is a file the appliance checks and copies into certs/: use `carto-appliance proxy set` with the CA's file",
	"console.password_hash": "the console's password is hashed from what you type: use `carto-appliance console set-password`",
}

// refusal is why Set refuses name, or "" when it may set it.
func refusal(name string) string {
	if why, ok := setElsewhere[name]; ok {
		return why
	}
	for prefix, why := range setElsewhere {
		if strings.HasSuffix(prefix, ".") && strings.HasPrefix(name, prefix) {
			return why
		}
	}
	return ""
}

// liveSections are the sections read where they are used, each time: by
// the agent's scheduled backups (backup.), its console listener (console.,
// looked at every few seconds), each licence check (license.) and each
// upgrade or upgrade check (upgrade.). The others reach the stack, its
// firewall or the router only through `config apply`.
var liveSections = []string{"backup.", "console.", "license.", "upgrade."}

// Live says a change of the setting name takes effect by itself, with no
// `config apply`.
func Live(name string) bool {
	return slices.ContainsFunc(liveSections, func(section string) bool { return strings.HasPrefix(name, section) })
}

// Settable says whether Set may change name: a known setting that no
// other command sets.
func Settable(name string) bool {
	_, ok := settingIndex()[name]
	return ok && refusal(name) == ""
}

// Get is the setting name as text (lists comma-separated, booleans true or
// false, numbers in decimal) and whether appliance.yaml sets it; unset, it
// is the default in force ("" when there is none).
func (c Config) Get(name string) (value string, set bool, err error) {
	idx, ok := settingIndex()[name]
	if !ok {
		return "", false, unknownSetting(name)
	}
	if f, ok := field(reflect.ValueOf(&c).Elem(), idx); ok && !f.IsZero() {
		return format(f), true, nil
	}
	d := c.inForce()
	f, _ := field(reflect.ValueOf(&d).Elem(), idx)
	return format(f), false, nil
}

// inForce is c with every default in force filled in: Defaults' and those
// its sections' methods apply (a default is stated once, where it is used).
func (c Config) inForce() Config {
	d := c.Defaults()
	d.Peer.Port = c.PeerPort()
	if d.TLS.Mode == "" {
		d.TLS.Mode = TLSSelfSigned
	}
	var acme ACMEConfig
	if c.TLS.ACME != nil {
		acme = *c.TLS.ACME
	}
	acme.Directory = acme.DirectoryURL()
	d.TLS.ACME = &acme
	if d.Proxy.RejectUnauthorized == nil {
		rejects := c.Proxy.Rejects()
		d.Proxy.RejectUnauthorized = &rejects
	}
	d.License.Server = c.License.ServerURL()
	if d.License.GraceDays == 0 {
		d.License.GraceDays = int(license.DefaultGrace / (24 * time.Hour))
	}
	d.Upgrade.ChannelURL = c.Upgrade.BaseURL()
	d.Upgrade.Channel = c.Upgrade.ChannelName()
	d.Upgrade.KeepBackups = c.Upgrade.Backups()
	return d
}

// Set changes the setting name to value, parsed by the field's kind:
// text as given; a number in decimal; a list comma-separated; true or
// false. An empty value removes the setting (its default applies again).
// Only the value's form is checked here: Validate judges the result. On
// an error (a *FieldError naming the setting, with the fix) c is left as
// it was.
func (c *Config) Set(name, value string) error {
	idx, ok := settingIndex()[name]
	if !ok {
		return unknownSetting(name)
	}
	if why := refusal(name); why != "" {
		return fieldErrorf(name, "appliance.yaml %s cannot be set by name: %s", name, why)
	}
	typ := reflect.TypeFor[Config]().FieldByIndex(idx).Type
	v, err := parse(name, typ, value)
	if err != nil {
		return err
	}
	f := reflect.ValueOf(c).Elem()
	for _, i := range idx[:len(idx)-1] {
		f = f.Field(i)
		if f.Kind() == reflect.Pointer {
			if f.IsNil() {
				f.Set(reflect.New(f.Type().Elem()))
			}
			f = f.Elem()
		}
	}
	f.Field(idx[len(idx)-1]).Set(v)
	return nil
}

// field is the field at idx of v, false when a section on the way is a
// nil pointer (so the setting is unset).
func field(v reflect.Value, idx []int) (reflect.Value, bool) {
	for _, i := range idx[:len(idx)-1] {
		v = v.Field(i)
		if v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return reflect.Value{}, false
			}
			v = v.Elem()
		}
	}
	return v.Field(idx[len(idx)-1]), true
}

// format is a setting's value as Get shows it.
func format(v reflect.Value) string {
	if !v.IsValid() {
		return ""
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return ""
		}
		return format(v.Elem())
	case reflect.String:
		return v.String()
	case reflect.Int:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Slice:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = format(v.Index(i))
		}
		return strings.Join(parts, ",")
	case reflect.Map:
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(v.Interface().(map[string]string))) {
			parts = append(parts, k+"="+v.MapIndex(reflect.ValueOf(k)).String())
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v.Interface())
}

// parse is value as a setting of type typ; "" is typ's zero value.
func parse(name string, typ reflect.Type, value string) (reflect.Value, error) {
	if value == "" {
		return reflect.Zero(typ), nil
	}
	shown := envfile.MaskValue(lastSegment(name), value)
	switch {
	case typ.Kind() == reflect.String:
		return reflect.ValueOf(value).Convert(typ), nil
	case typ.Kind() == reflect.Int:
		n, err := strconv.Atoi(strings.TrimSpace(value))
		if err != nil {
			return reflect.Value{}, fieldErrorf(name, "appliance.yaml %s %q: give a whole number in decimal, or an empty value for the default", name, shown)
		}
		return reflect.ValueOf(n).Convert(typ), nil
	case typ.Kind() == reflect.Bool, typ.Kind() == reflect.Pointer && typ.Elem().Kind() == reflect.Bool:
		var b bool
		switch strings.ToLower(strings.TrimSpace(value)) {
		case "true":
			b = true
		case "false":
		default:
			return reflect.Value{}, fieldErrorf(name, "appliance.yaml %s %q: give true or false, or an empty value for the default", name, shown)
		}
		if typ.Kind() == reflect.Pointer {
			return reflect.ValueOf(&b), nil
		}
		return reflect.ValueOf(b), nil
	case typ.Kind() == reflect.Slice && typ.Elem().Kind() == reflect.String:
		var items []string
		for _, s := range strings.Split(value, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = append(items, s)
			}
		}
		return reflect.ValueOf(items).Convert(typ), nil
	}
	return reflect.Value{}, fieldErrorf(name, "appliance.yaml %s is a %s, which cannot be set by name: edit appliance.yaml", name, typ)
}

func lastSegment(name string) string { return name[strings.LastIndex(name, ".")+1:] }

// unknownSetting is the error for a name no setting has: it lists the
// settings the operator most likely meant, or all of them.
func unknownSetting(name string) error {
	names := SettingNames()
	var near []string
	// A near spelling is a typo or two, fewer in a short name, where two
	// would make any short name near ("nope" and "role").
	typos := min(2, max(1, len(name)/3))
	if name != "" {
		for _, n := range names {
			// A section's settings (tls → tls.mode …), or a near spelling
			// of the whole name or, given without a section, of its last part.
			if strings.HasPrefix(n, name+".") || editDistance(name, n) <= typos ||
				!strings.Contains(name, ".") && editDistance(name, lastSegment(n)) <= typos {
				near = append(near, n)
			}
		}
	}
	if len(near) > 0 {
		return fieldErrorf(name, "appliance.yaml has no setting %q: did you mean %s? (`carto-appliance config show` lists them all)", name, strings.Join(near, ", "))
	}
	return fieldErrorf(name, "appliance.yaml has no setting %q: the settings are %s", name, strings.Join(names, ", "))
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
