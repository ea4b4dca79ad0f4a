// Package systemd holds the systemd unit the appliance's agent runs under
// (SPEC §6), embedded so that the binary installs it.
package systemd

import _ "embed"

// UnitName is the unit's name; Name is kardianos/service's name for it.
const (
	Name     = "carto-appliance"
	UnitName = Name + ".service"
)

// UnitTemplate is carto-appliance.service in kardianos/service's template
// syntax (v1.3.0: {{Key}}, {{Key | cmd}}, {{Key | cmdEscape}}, {{if}},
// {{range}}; not text/template). It uses the keys Description, Path and
// Arguments of kardianos's systemd backend.
//
//go:embed carto-appliance.service.tmpl
var UnitTemplate string
