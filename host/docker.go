package host

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// dockerInstallCommands are the distribution's own commands that install
// and start the Docker engine, by os-release ID (or ID_LIKE); nil with an
// explanation where the distribution ships no Docker Engine.
func dockerInstallCommands(osRelease map[string]string) ([][]string, error) {
	ids := append([]string{osRelease["ID"]}, strings.Fields(osRelease["ID_LIKE"])...)
	start := []string{"systemctl", "enable", "--now", "docker.service"}
	for _, id := range ids {
		switch id {
		case "debian", "ubuntu":
			return [][]string{{"apt-get", "update"}, {"apt-get", "install", "-y", "--no-install-recommends", "docker.io"}, start}, nil
		case "fedora":
			return [][]string{{"dnf", "install", "-y", "moby-engine"}, start}, nil
		case "amzn":
			return [][]string{{"yum", "install", "-y", "docker"}, start}, nil
		case "sles", "opensuse", "suse":
			return [][]string{{"zypper", "--non-interactive", "install", "docker"}, start}, nil
		case "rhel", "centos", "rocky", "almalinux", "ol":
			return nil, fmt.Errorf("%s's own repositories have no Docker Engine: add Docker's repository and install docker-ce (https://docs.docker.com/engine/install/rhel/), then run install again without asking it to install Docker", osRelease["ID"])
		}
	}
	return nil, fmt.Errorf("do not know how to install Docker on %q: install Docker Engine 20.10 or later (https://docs.docker.com/engine/install/), then run install again", osRelease["PRETTY_NAME"])
}

// InstallDocker installs the Docker engine from the distribution's
// packages and starts it.
func (Local) InstallDocker(ctx context.Context, osRelease map[string]string) error {
	cmds, err := dockerInstallCommands(osRelease)
	if err != nil {
		return err
	}
	for _, args := range cmds {
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("installing Docker: %s: %v\n%s", strings.Join(args, " "), err, tail(string(out), 15))
		}
	}
	return nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
