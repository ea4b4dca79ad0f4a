package host

import (
	"strings"
	"testing"
)

func TestDockerInstallCommands(t *testing.T) {
	for _, tc := range []struct {
		osRelease map[string]string
		first     string // the first command, or the error's text
	}{
		{map[string]string{"ID": "debian"}, "apt-get update"},
		{map[string]string{"ID": "pop", "ID_LIKE": "ubuntu debian"}, "apt-get update"},
		{map[string]string{"ID": "fedora"}, "dnf install -y moby-engine"},
		{map[string]string{"ID": "amzn", "ID_LIKE": "centos rhel fedora"}, "yum install -y docker"},
		{map[string]string{"ID": "rocky", "ID_LIKE": "rhel centos fedora"}, "own repositories have no Docker Engine"},
		{map[string]string{"ID": "arch", "PRETTY_NAME": "Arch Linux"}, `do not know how to install Docker on "Arch Linux"`},
	} {
		cmds, err := dockerInstallCommands(tc.osRelease)
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			got = strings.Join(cmds[0], " ")
			if last := strings.Join(cmds[len(cmds)-1], " "); last != "systemctl enable --now docker.service" {
				t.Errorf("%v: the engine is not started: last command %q", tc.osRelease, last)
			}
		}
		if !strings.Contains(got, tc.first) {
			t.Errorf("%v: %q, want %q", tc.osRelease, got, tc.first)
		}
	}
}
