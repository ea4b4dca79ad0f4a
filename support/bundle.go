// Package support owns the support bundle's file: one .tar.gz of named
// entries under a top directory, every entry passed through the redaction
// before it is written, bounded in size, with a REDACTIONS report (what was
// masked, in which entry, how many times: by what held each secret, never
// the secret) and a MANIFEST (what was collected, cut or left out, and what
// could not be collected, with why). It knows nothing of what the entries
// are: the installer gathers them.
package support

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// Redact masks a text and counts what it masked, by what held each
// secret (envfile.Redaction.Redact).
type Redact func(string) (string, map[string]int)

// Bundle writes a support bundle. Its methods record failures in the
// MANIFEST rather than return them: a bundle is taken when things are
// broken, and carries what it can. Only the writer's own errors end it.
type Bundle struct {
	gz     *gzip.Writer
	tw     *tar.Writer
	redact Redact
	dir    string
	now    time.Time
	// limit bounds the entries' bytes (before compression); used counts
	// them.
	limit, used int64
	entries     []entry
	missing     []string
	counts      map[string]map[string]int // entry -> what held the secret -> times
	err         error
}

type entry struct {
	name  string
	bytes int
	note  string // "cut to ..." or "left out: ..."
}

// New starts a bundle on w, its entries under dir/, redacted by redact,
// at most limit bytes of them; now is its date.
func New(w io.Writer, dir string, redact Redact, limit int64, now time.Time) *Bundle {
	gz := gzip.NewWriter(w)
	return &Bundle{gz: gz, tw: tar.NewWriter(gz), redact: redact, dir: dir, now: now, limit: limit, counts: map[string]map[string]int{}}
}

// Add redacts data and writes it as name. An entry that does not fit in
// what is left of the limit is cut (a log keeps its end, where the
// failure is; anything else its beginning); once the limit is reached,
// entries are left out; either is said in the MANIFEST.
func (b *Bundle) Add(name string, data []byte) {
	text, counts := b.redact(string(data))
	if len(counts) > 0 {
		b.counts[name] = counts
	}
	e := entry{name: name}
	left := b.limit - b.used
	switch {
	case left <= 0:
		e.note = fmt.Sprintf("left out: the bundle's size limit (%d bytes) was reached", b.limit)
		b.entries = append(b.entries, e)
		return
	case int64(len(text)) > left:
		e.note = fmt.Sprintf("cut from %d to %d bytes: the bundle's size limit", len(text), left)
		if strings.HasSuffix(name, ".log") || strings.HasSuffix(name, ".txt") {
			text = text[int64(len(text))-left:]
		} else {
			text = text[:left]
		}
	}
	e.bytes = len(text)
	b.used += int64(len(text))
	b.entries = append(b.entries, e)
	b.write(name, []byte(text))
}

// AddJSON adds v as indented JSON.
func (b *Bundle) AddJSON(name string, v any) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		b.Missing(name, err)
		return
	}
	b.Add(name, append(data, '\n'))
}

// Missing records that name could not be collected, and why (redacted:
// an error may quote what it failed on).
func (b *Bundle) Missing(name string, why error) {
	text, _ := b.redact(why.Error())
	b.missing = append(b.missing, name+": "+text)
}

// Close writes the REDACTIONS report and the MANIFEST and ends the file.
func (b *Bundle) Close() error {
	b.write("REDACTIONS", b.redactions())
	b.write("MANIFEST", b.manifest())
	if err := b.tw.Close(); err != nil && b.err == nil {
		b.err = err
	}
	if err := b.gz.Close(); err != nil && b.err == nil {
		b.err = err
	}
	return b.err
}

// Summary is what a bundle holds, for the operator.
type Summary struct {
	Entries    int      `json:"entries"`
	Bytes      int64    `json:"bytes"` // before compression
	Cut        []string `json:"cut,omitempty"`
	Missing    []string `json:"missing,omitempty"`
	Redactions int      `json:"redactions"`
}

// Summary says what the bundle holds so far.
func (b *Bundle) Summary() Summary {
	s := Summary{Bytes: b.used, Missing: slices.Clone(b.missing)}
	for _, e := range b.entries {
		if e.note != "" {
			s.Cut = append(s.Cut, e.name+": "+e.note)
		}
		if !strings.HasPrefix(e.note, "left out") {
			s.Entries++
		}
	}
	for _, c := range b.counts {
		for _, n := range c {
			s.Redactions += n
		}
	}
	return s
}

func (b *Bundle) redactions() []byte {
	var w strings.Builder
	w.WriteString("Secrets masked in this bundle (each replaced by ********), by entry and by what held them.\n" +
		"Known secrets are found by value (the settings whose names or values are secret, key.json's\n" +
		"private key, the licence's signature), anywhere, log lines included; \"secret shapes\" are\n" +
		"found by their form (private keys, tokens, passwords in URLs and key=value pairs).\n\n")
	if len(b.counts) == 0 {
		w.WriteString("Nothing was masked.\n")
	}
	for _, name := range slices.Sorted(maps.Keys(b.counts)) {
		c := b.counts[name]
		for _, what := range slices.Sorted(maps.Keys(c)) {
			fmt.Fprintf(&w, "%s: %s, %d time(s)\n", name, what, c[what])
		}
	}
	return []byte(w.String())
}

func (b *Bundle) manifest() []byte {
	var w strings.Builder
	fmt.Fprintf(&w, "carto-appliance support bundle, taken %s\n\nCollected:\n", b.now.UTC().Format(time.RFC3339))
	for _, e := range b.entries {
		note := ""
		if e.note != "" {
			note = " (" + e.note + ")"
		}
		fmt.Fprintf(&w, "  %s  %d bytes%s\n", e.name, e.bytes, note)
	}
	if len(b.missing) > 0 {
		w.WriteString("\nCould not be collected:\n")
		for _, m := range b.missing {
			fmt.Fprintf(&w, "  %s\n", m)
		}
	}
	return []byte(w.String())
}

func (b *Bundle) write(name string, data []byte) {
	if b.err != nil {
		return
	}
	hdr := &tar.Header{Name: b.dir + "/" + name, Mode: 0o600, Size: int64(len(data)), ModTime: b.now, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	if err := b.tw.WriteHeader(hdr); err != nil {
		b.err = fmt.Errorf("writing the support bundle: %w", err)
		return
	}
	if _, err := b.tw.Write(data); err != nil {
		b.err = fmt.Errorf("writing the support bundle: %w", err)
	}
}
