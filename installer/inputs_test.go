package installer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/envfile"
)

// soon fails the test when f does not return within a few seconds: a FIFO
// used to block the open forever.
func soon(t *testing.T, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("still reading after 5 s")
		return nil
	}
}

// Every file install reads from a flag is refused, with the flag named and
// at once, when it is a device, a FIFO or far too large: /dev/zero used to
// exhaust memory and a FIFO to hang the process past SIGTERM and Ctrl-C.
func TestInstallRefusesSpecialAndHugeInputFiles(t *testing.T) {
	dir := t.TempDir()
	customer, key := filepath.Join(dir, "customer.env"), filepath.Join(dir, "key.json")
	os.WriteFile(customer, []byte("SELFHOSTED_TENANT_ID=onp-x\nSELFHOSTED_DOMAIN=carto.example.com\nCARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION=2025.10.7\nPOSTGRES_ADMIN_PASSWORD=secret123\nWORKSPACE_POSTGRES_PASSWORD=secret456\n"), 0o600)
	os.WriteFile(key, []byte(`{"type":"service_account"}`), 0o600)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "huge")
	if err := os.WriteFile(huge, make([]byte, 8<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	paths := config.Paths{ConfigDir: filepath.Join(dir, "c"), StateDir: filepath.Join(dir, "s")}
	base := func() InstallOptions {
		return InstallOptions{Options: Options{Paths: paths}, CustomerEnv: customer, KeyFile: key}
	}
	for _, tc := range []struct {
		name  string
		edit  func(*InstallOptions)
		input Input
		want  []string
	}{
		{"--key /dev/zero", func(o *InstallOptions) { o.KeyFile = "/dev/zero" }, InputKey, []string{"/dev/zero is a character device, not a regular file"}},
		{"--key FIFO", func(o *InstallOptions) { o.KeyFile = fifo }, InputKey, []string{fifo + " is a FIFO"}},
		{"--key huge", func(o *InstallOptions) { o.KeyFile = huge }, InputKey, []string{huge + " is too large: over 64 KiB"}},
		{"--customer-env /dev/zero", func(o *InstallOptions) { o.CustomerEnv = "/dev/zero" }, InputCustomerEnv, []string{"/dev/zero is a character device"}},
		{"--customer-env FIFO", func(o *InstallOptions) { o.CustomerEnv = fifo }, InputCustomerEnv, []string{"is a FIFO"}},
		{"--customer-env huge", func(o *InstallOptions) { o.CustomerEnv = huge }, InputCustomerEnv, []string{"too large: over 1 MiB"}},
		{"--tls-cert /dev/zero", func(o *InstallOptions) { o.TLS = TLSInput{CertFile: "/dev/zero", KeyFile: key} }, InputTLSCert, []string{"the certificate: /dev/zero is a character device"}},
		{"--tls-key FIFO", func(o *InstallOptions) { o.TLS = TLSInput{CertFile: key, KeyFile: fifo} }, InputTLSKey, []string{"the key: " + fifo + " is a FIFO"}},
		{"--tls-chain huge", func(o *InstallOptions) { o.TLS = TLSInput{CertFile: key, KeyFile: key, ChainFile: huge} }, InputTLSChain, []string{"the chain: " + huge + " is too large"}},
		{"--proxy-ca-cert FIFO", func(o *InstallOptions) { o.Proxy = ProxyInput{URL: "http://proxy.corp:3128", CACertFile: fifo} }, InputProxyCACert, []string{"is a FIFO"}},
		{"--acme-ca-cert /dev/zero", func(o *InstallOptions) { o.ACME = ACMEInput{Email: "ops@example.com", CACertFile: "/dev/zero"} }, InputACMECACert, []string{"the ACME CA's roots: /dev/zero is a character device"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := base()
			tc.edit(&opts)
			err := soon(t, func() error { _, err := Preflight(t.Context(), opts); return err })
			for _, want := range tc.want {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("got %v, want it to say %q", err, want)
				}
			}
			if got := inputOf(err); got != tc.input {
				t.Errorf("the error names input %q, want %q", got, tc.input)
			}
		})
	}

	t.Run("--license FIFO", func(t *testing.T) {
		d := &desired{env: envfile.NewEnv("SELFHOSTED_TENANT_ID", "onp-x")}
		err := soon(t, func() error { return planLicense(paths, d, fifo, customer) })
		if err == nil || inputOf(err) != InputLicense || !strings.Contains(err.Error(), "is a FIFO") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("appliance.yaml a FIFO in --config-dir", func(t *testing.T) {
		cfgDir := filepath.Join(dir, "fifo-config")
		os.MkdirAll(cfgDir, 0o755)
		syscall.Mkfifo(filepath.Join(cfgDir, config.ConfigFileName), 0o600)
		err := soon(t, func() error { _, _, err := config.Load(filepath.Join(cfgDir, config.ConfigFileName)); return err })
		if err == nil || !strings.Contains(err.Error(), "appliance.yaml is a FIFO") {
			t.Fatalf("got %v", err)
		}
	})
	if _, err := os.Stat(paths.ConfigDir); err == nil {
		t.Error("a refused input wrote the config dir")
	}
}

// inputOf is the input err names, "" if none.
func inputOf(err error) Input {
	var ie *InputError
	if errors.As(err, &ie) {
		return ie.Input
	}
	return ""
}
