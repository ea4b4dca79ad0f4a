package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"gopkg.in/yaml.v3"

	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/internal/boundedread"
)

// SchemaVersion is the version of appliance.yaml this binary writes. A
// file without schema_version is version 1 (written before versions
// existed).
const SchemaVersion = 2

// migrations[i] turns a version i+1 document into version i+2. They are
// pure: no I/O, no clock, the input left as it was. An operator's
// comments may be lost on the way, never a setting.
var migrations = []func(doc *yaml.Node) (*yaml.Node, error){
	migrate1to2,
}

// migrate1to2 only adds schema_version: version 2 has the same settings.
func migrate1to2(doc *yaml.Node) (*yaml.Node, error) {
	return withKey(clone(doc), "schema_version", "2"), nil
}

// file is appliance.yaml on disk: the version, then the settings.
type file struct {
	SchemaVersion int `yaml:"schema_version"`
	Config        `yaml:",inline"`
}

// Load reads appliance.yaml; a missing file is the zero Config. A file of
// an older schema is migrated in memory (Save writes the current one); a
// newer one is refused. Unknown keys are refused with their name, so a
// typo cannot pass silently.
func Load(path string) (Config, bool, error) {
	b, err := boundedread.ReadFile(path, boundedread.EnvFile)
	if errors.Is(err, fs.ErrNotExist) {
		return Config{}, false, nil
	}
	if err != nil {
		return Config{}, false, fmt.Errorf("reading %s: %w", path, err)
	}
	c, err := Parse(b)
	if err != nil {
		return Config{}, true, fmt.Errorf("%s: %w", path, err)
	}
	return c, true, nil
}

// Parse is Load without the file: b is appliance.yaml's contents.
func Parse(b []byte) (Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return Config{}, fmt.Errorf("%w (fix the file)", err)
	}
	root, err := mapping(&doc)
	if err != nil {
		return Config{}, err
	}
	version, err := schemaVersion(root)
	if err != nil {
		return Config{}, err
	}
	if version > SchemaVersion {
		return Config{}, fmt.Errorf("appliance.yaml schema_version %d is newer than this carto-appliance understands (%d): upgrade the binary", version, SchemaVersion)
	}
	if version < SchemaVersion {
		for v := version; v < SchemaVersion; v++ {
			if root, err = migrations[v-1](root); err != nil {
				return Config{}, fmt.Errorf("migrating appliance.yaml from schema_version %d to %d: %w", v, v+1, err)
			}
		}
		if b, err = yaml.Marshal(root); err != nil {
			return Config{}, fmt.Errorf("migrating appliance.yaml: %w", err)
		}
	}
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("%w (fix the file or remove the key)", err)
	}
	if err := f.Config.Validate(); err != nil {
		return Config{}, err
	}
	return f.Config, nil
}

// Marshal renders appliance.yaml at the current schema version.
func (c Config) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("# carto-appliance settings. Edit, then run `carto-appliance config apply`.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(file{SchemaVersion: SchemaVersion, Config: c}); err != nil {
		return nil, fmt.Errorf("writing appliance.yaml: %w", err)
	}
	return buf.Bytes(), nil
}

// Save writes c to path atomically (mode 0600: it may name a proxy or a
// licence server the operator keeps private), keeping the previous copy.
func Save(path string, c Config) error {
	b, err := c.Marshal()
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}

// mapping is the document's top mapping; an empty document is an empty
// one.
func mapping(doc *yaml.Node) (*yaml.Node, error) {
	if doc.Kind == 0 || (doc.Kind == yaml.DocumentNode && len(doc.Content) == 0) {
		return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}, nil
	}
	n := doc
	if n.Kind == yaml.DocumentNode {
		n = n.Content[0]
	}
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("appliance.yaml: line %d: want settings as key: value lines, not a %s (fix the file)", n.Line, n.ShortTag())
	}
	return n, nil
}

// schemaVersion is the document's schema_version, 1 when absent.
func schemaVersion(root *yaml.Node) (int, error) {
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != "schema_version" {
			continue
		}
		var v int
		if err := root.Content[i+1].Decode(&v); err != nil || v < 1 {
			return 0, fmt.Errorf("appliance.yaml schema_version %q: line %d: give a whole number from 1 to %d, or leave it out for 1", root.Content[i+1].Value, root.Content[i+1].Line, SchemaVersion)
		}
		return v, nil
	}
	return 1, nil
}

// withKey is root with key set to the integer value: replaced where it
// is, else added last, so that the lines before keep their numbers for
// the errors that name them.
func withKey(root *yaml.Node, key, value string) *yaml.Node {
	val := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: value}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == key {
			root.Content[i+1] = val
			return root
		}
	}
	k := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}
	root.Content = append(root.Content, k, val)
	return root
}

// clone is a deep copy of n, so that a migration cannot change its input.
func clone(n *yaml.Node) *yaml.Node {
	if n == nil {
		return nil
	}
	c := *n
	c.Content = make([]*yaml.Node, len(n.Content))
	for i, ch := range n.Content {
		c.Content[i] = clone(ch)
	}
	c.Alias = clone(n.Alias)
	return &c
}
