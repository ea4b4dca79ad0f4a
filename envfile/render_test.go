package envfile

import (
	"bytes"
	"flag"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/release"
	"github.com/cartodb/carto-appliance/templates"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func testRelease(t *testing.T) *release.Release {
	t.Helper()
	r, err := templates.Default()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// applianceSettings are what the installer derives from appliance.yaml and
// flags in the golden scenario.
func applianceSettings() Env {
	return NewEnv(
		"SELFHOSTED_DOMAIN", "carto.example.com",
		"DOCKER_REGISTRY_BASE_PATH", "registry.example.com/carto",
		"ROUTER_HTTP_PORT", "80",
		"ROUTER_HTTPS_PORT", "443",
	)
}

func TestRenderGolden(t *testing.T) {
	t.Parallel()
	customer, err := ReadFile("testdata/customer.env")
	if err != nil {
		t.Fatal(err)
	}
	rel := testRelease(t)
	r, err := Render(RenderInput{
		Customer:    customer,
		Version:     rel.Manifest.Version,
		EnvTemplate: rel.EnvTemplate,
		Appliance:   applianceSettings(),
	})
	if err != nil {
		t.Fatal(err)
	}
	got := r.Marshal()
	golden(t, "testdata/rendered.env.golden", got)
	masked := r.Masked().Marshal()
	golden(t, "testdata/rendered-masked.env.golden", masked)
	for _, k := range r.Env.Keys() {
		for _, part := range SecretParts(k, r.Env.Get(k)) {
			if bytes.Contains(masked, []byte(escaper.Replace(part))) {
				t.Errorf("the masked .env shows the secret part %q of %s", part, k)
			}
		}
	}

	// What compose reads from the file is r.Env.
	m, err := composeParse(got)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(m, r.Env.Map()) {
		t.Errorf("compose-go reads %q\nwant %q", m, r.Env.Map())
	}

	var warnings []string
	for _, w := range r.Warnings {
		warnings = append(warnings, w.String())
	}
	want := []string{
		"SELFHOSTED_DOMAIN: the value from customer.env is replaced by the one from the appliance settings",
		"REDIS_CACHE_PREFIX: the value from customer.env is replaced by the one from the release's env template",
	}
	slices.Sort(warnings)
	slices.Sort(want)
	if !slices.Equal(warnings, want) {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(warnings, "\n"), strings.Join(want, "\n"))
	}

	if err := Check(r.Env, rel.Manifest); err != nil {
		t.Errorf("the golden scenario does not pass Check: %v", err)
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./envfile -run Golden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the output; if the change is intended, run go test ./envfile -run Golden -update\n--- got:\n%s", path, got)
	}
}

func render(t *testing.T, customer Env, tpl string, appliance Env) *Rendered {
	t.Helper()
	r, err := Render(RenderInput{Customer: customer, Version: "2025.11.3", EnvTemplate: []byte(tpl), Appliance: appliance})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRenderLayers(t *testing.T) {
	t.Parallel()
	tpl := strings.Join([]string{
		"DOMAIN_URL=https://${SELFHOSTED_DOMAIN}/",
		"REGISTRY=${DOCKER_REGISTRY_BASE_PATH:-gcr.io/default}",
		"LOG_LEVEL=${LOG_LEVEL:-info}",
		"FIXED=release",
		"USES_FIXED=${FIXED}",
		"IMAGE=${REGISTRY}/x:${CARTO_SELFHOSTED_VERSION}",
		"LITERAL_DOLLAR=$$HOME",
	}, "\n")

	t.Run("template sees the winning values", func(t *testing.T) {
		r := render(t,
			NewEnv("SELFHOSTED_DOMAIN", "old.lan", "LOG_LEVEL", "debug", "FIXED", "customer"),
			tpl,
			NewEnv("SELFHOSTED_DOMAIN", "new.lan"))
		for k, want := range map[string]string{
			"DOMAIN_URL":               "https://new.lan/",
			"REGISTRY":                 "gcr.io/default",
			"LOG_LEVEL":                "debug",
			"FIXED":                    "release",
			"USES_FIXED":               "release",
			"IMAGE":                    "gcr.io/default/x:2025.11.3",
			"CARTO_SELFHOSTED_VERSION": "2025.11.3",
			"SELFHOSTED_DOMAIN":        "new.lan",
			"LITERAL_DOLLAR":           "$HOME",
		} {
			if got := r.Env.Get(k); got != want {
				t.Errorf("%s = %q, want %q", k, got, want)
			}
		}
		if got, want := r.Source("SELFHOSTED_DOMAIN"), LayerAppliance; got != want {
			t.Errorf("source %v, want %v", got, want)
		}
		if got, want := r.Source("LOG_LEVEL"), LayerTemplate; got != want {
			t.Errorf("source %v, want %v", got, want)
		}
		// The literal $ survives the file: compose must not interpolate it.
		m, err := composeParse(r.Marshal())
		if err != nil {
			t.Fatal(err)
		}
		if m["LITERAL_DOLLAR"] != "$HOME" {
			t.Errorf("compose reads LITERAL_DOLLAR=%q", m["LITERAL_DOLLAR"])
		}
	})

	t.Run("order groups keys by the layer that set them", func(t *testing.T) {
		r := render(t,
			NewEnv("C1", "x", "FIXED", "customer", "C2", "y"),
			"FIXED=release\nT1=t",
			NewEnv("A1", "a", "C1", "appliance"))
		want := []string{"C2", "CARTO_SELFHOSTED_VERSION", "FIXED", "T1", "A1", "C1"}
		if got := r.Env.Keys(); !slices.Equal(got, want) {
			t.Errorf("order %q, want %q", got, want)
		}
	})

	t.Run("warnings name keys and layers, not values", func(t *testing.T) {
		r := render(t,
			NewEnv("SAME", "v", "PASSWORD", "hunter2", "CARTO_SELFHOSTED_VERSION", "2024.1.1", "MID", "c"),
			"SAME=${SAME}\nPASSWORD=fromtemplate\nMID=t",
			NewEnv("SAME", "v", "MID", "c"))
		want := []Warning{
			{Key: "PASSWORD", Overridden: LayerCustomer, By: LayerTemplate},
			{Key: "CARTO_SELFHOSTED_VERSION", Overridden: LayerCustomer, By: LayerVersion},
			{Key: "MID", Overridden: LayerTemplate, By: LayerAppliance},
		}
		got := slices.Clone(r.Warnings)
		cmp := func(a, b Warning) int { return strings.Compare(a.Key, b.Key) }
		slices.SortFunc(got, cmp)
		slices.SortFunc(want, cmp)
		if !slices.Equal(got, want) {
			t.Errorf("warnings %v, want %v", got, want)
		}
		for _, w := range r.Warnings {
			for _, v := range []string{"hunter2", "fromtemplate", "2024.1.1"} {
				if strings.Contains(w.String(), v) {
					t.Errorf("warning %q shows a value", w)
				}
			}
		}
	})

	t.Run("template without customer values", func(t *testing.T) {
		r := render(t, Env{}, tpl, Env{})
		if got := r.Env.Get("DOMAIN_URL"); got != "https:///" {
			t.Errorf("DOMAIN_URL = %q", got)
		}
		if len(r.Warnings) != 0 {
			t.Errorf("warnings %v", r.Warnings)
		}
	})
}

func TestRenderErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   RenderInput
		want string
	}{
		{"no version", RenderInput{}, "release version"},
		{"bad version", RenderInput{Version: "latest"}, `release version "latest"`},
		{"bad appliance key", RenderInput{Version: "1.0", Appliance: NewEnv("BAD KEY", "x")}, `appliance settings: key "BAD KEY"`},
		{"bad customer key", RenderInput{Version: "1.0", Customer: NewEnv("A=B", "x")}, `customer.env: key "A=B"`},
		{"template syntax", RenderInput{Version: "1.0", EnvTemplate: []byte("A=1\nB='open")}, "env template of release 1.0: line 2: the value of B opens"},
		{"template required", RenderInput{Version: "1.0", EnvTemplate: []byte("A=${X:?needs X}")}, "line 1: the value of A requires X"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Render(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestRenderedMasked(t *testing.T) {
	t.Parallel()
	r := render(t, NewEnv("POSTGRES_ADMIN_PASSWORD", "hunter2", "EMPTY_PASSWORD", ""), "", NewEnv("SELFHOSTED_DOMAIN", "d"))
	out := string(r.Masked().Marshal())
	if strings.Contains(out, "hunter2") {
		t.Errorf("masked output shows a secret:\n%s", out)
	}
	for _, want := range []string{`POSTGRES_ADMIN_PASSWORD="********"`, `EMPTY_PASSWORD=""`, `SELFHOSTED_DOMAIN="d"`} {
		if !strings.Contains(out, want) {
			t.Errorf("masked output lacks %s:\n%s", want, out)
		}
	}
	if r.Env.Get("POSTGRES_ADMIN_PASSWORD") != "hunter2" {
		t.Error("Masked changed the original")
	}
}

func TestRenderedWriteFile(t *testing.T) {
	t.Parallel()
	p := t.TempDir() + "/.env"
	r := render(t, NewEnv("A", "1"), "", Env{})
	if err := r.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o, want 0600", fi.Mode().Perm())
	}
	got, err := ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pairs(got), pairs(r.Env)) {
		t.Errorf("read back %q, want %q", pairs(got), pairs(r.Env))
	}
}
