package console

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

const (
	defaultLogLines = 200
	maxLogLines     = 10000
	// maxPairs bounds one settings change; appliance.yaml has fewer
	// settings than that.
	maxPairs = 100
)

// versionRE is a plausible release version: 2025.11.3, v1.2, 1.2.3-rc.1.
var versionRE = regexp.MustCompile(`^v?[0-9]+(\.[0-9]+){1,3}(-[0-9A-Za-z][0-9A-Za-z.-]*)?(\+[0-9A-Za-z][0-9A-Za-z.-]*)?$`)

// settingNameRE is a dotted yaml name, e.g. router.https_port.
var settingNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)

func checkVersion(v string) error {
	if v == "" {
		return errors.New("no version given: give the release to upgrade to, e.g. 2025.11.3")
	}
	if len(v) > 64 || !versionRE.MatchString(v) {
		return fmt.Errorf("%q is not a release version: give one like 2025.11.3", v)
	}
	return nil
}

// checkService is service when it is one of the node's.
func checkService(service string, st *StatusView) error {
	names := serviceNames(st)
	if !slices.Contains(names, service) {
		return fmt.Errorf("unknown service %q: pick one of %s", service, strings.Join(names, ", "))
	}
	return nil
}

func serviceNames(st *StatusView) []string {
	var names []string
	for _, s := range st.Services {
		names = append(names, s.Name)
	}
	return names
}

// parseLines reads the logs' line count; empty is the default.
func parseLines(s string) (int, error) {
	if s == "" {
		return defaultLogLines, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxLogLines {
		return 0, fmt.Errorf("lines must be a number from 1 to %d, not %q", maxLogLines, s)
	}
	return n, nil
}

func parseFollow(s string) (bool, error) {
	if s == "" {
		return false, nil
	}
	f, err := strconv.ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("follow must be 1 or 0, not %q", s)
	}
	return f, nil
}

// parsePairs reads the settings form: NAME=VALUE lines, blank lines and
// # comments skipped. Values may be secrets: errors never quote them.
func parsePairs(text string) ([]string, error) {
	var pairs []string
	seen := map[string]int{}
	for i, line := range strings.Split(text, "\n") {
		n := i + 1
		line = strings.TrimSuffix(line, "\r")
		if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, fmt.Errorf("line %d is not NAME=VALUE: give the setting's name, '=' and its value, e.g. router.https_port=8443", n)
		}
		if !settingNameRE.MatchString(name) {
			return nil, fmt.Errorf("line %d: %q is not a setting's name (the settings table lists them)", n, name)
		}
		if first, dup := seen[name]; dup {
			return nil, fmt.Errorf("line %d: %s is already given on line %d: give each setting once", n, name, first)
		}
		seen[name] = n
		pairs = append(pairs, name+"="+value)
	}
	if len(pairs) == 0 {
		return nil, errors.New("no setting given: write NAME=VALUE lines, e.g. router.https_port=8443 (an empty value puts the default back)")
	}
	if len(pairs) > maxPairs {
		return nil, fmt.Errorf("%d settings given: change at most %d at once", len(pairs), maxPairs)
	}
	return pairs, nil
}

// pairNames are the names of NAME=VALUE pairs, for the audit line.
func pairNames(pairs []string) string {
	names := make([]string, len(pairs))
	for i, p := range pairs {
		names[i], _, _ = strings.Cut(p, "=")
	}
	return strings.Join(names, ",")
}
