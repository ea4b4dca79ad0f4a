package testbed

import (
	"fmt"
	"os"
	"time"

	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/license/licensetest"
)

// LicenseBuildFlags makes a carto-appliance that trusts the tests' licence
// key (GOFLAGS for go build): the binaries the scenarios, the demo and the
// benchmarks run. A release build trusts CARTO's keys only.
const LicenseBuildFlags = "-tags=licensetest"

// TestLicense is a year-long licence for tenant, standard layout, signed
// with the tests' key; edit changes it before signing.
func TestLicense(tenant string, edit func(*license.License)) ([]byte, error) {
	now := time.Now().UTC().Truncate(time.Second)
	l := license.License{
		ID: "lic-" + tenant, Customer: "E2E Corp (" + tenant + ")", TenantID: tenant,
		Issued: now.Add(-time.Hour), Expires: now.Add(365 * 24 * time.Hour),
		Channel: "stable", Layouts: []string{"standard"}, Nodes: 1,
	}
	if edit != nil {
		edit(&l)
	}
	return license.Sign(l, licensetest.KeyName, licensetest.Key)
}

// TestAnswer is a test licence server's answer to req: status ("valid"
// or "revoked") about req's licence, dated now, over req's nonce, signed
// with the tests' server key (what license.SignAnswer documents for CARTO's
// server).
func TestAnswer(req license.Request, status string) ([]byte, error) {
	a := license.Answer{ID: req.ID, Status: status, Time: time.Now().UTC(), Nonce: req.Nonce}
	return license.SignAnswer(a, licensetest.ServerKeyName, licensetest.ServerKey)
}

// WriteTestLicense writes TestLicense(tenant, nil) to path: the
// license.json of a test customer package.
func WriteTestLicense(path, tenant string) error {
	b, err := TestLicense(tenant, nil)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("writing the test licence: %w", err)
	}
	return nil
}
