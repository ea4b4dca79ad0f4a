package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/installer"
)

// status says where the console is, or how to turn it on.
func TestStatusNamesTheConsole(t *testing.T) {
	for _, tc := range []struct {
		console, want string
	}{
		{"https://127.0.0.1:9443/", "Admin console: https://127.0.0.1:9443/\n"},
		{"", "Admin console: off (`carto-appliance console set-password` turns it on)\n"},
	} {
		var b bytes.Buffer
		printStatus(&b, &installer.Status{Version: "2025.11.3", Layout: "standard", URL: "https://carto.example.com/", Console: tc.console})
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("status with console %q:\n%s\nwant the line %q", tc.console, b.String(), tc.want)
		}
	}
}
