package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/config"
)

func TestExplainNamesTheFlagOfAnInvalidField(t *testing.T) {
	err := config.Config{TLS: config.TLSConfig{Mode: config.TLSACME}}.Validate()
	got := explain(fmt.Errorf("/opt/carto/appliance.yaml: %w", err))
	if !strings.Contains(got, "tls.acme.email") || !strings.HasSuffix(got, "(set with --acme-email, or `carto-appliance certs acme --email`)") {
		t.Errorf("got %q", got)
	}
	if got := explain(fmt.Errorf("plain")); got != "plain" {
		t.Errorf("an error without a field: %q", got)
	}
}
