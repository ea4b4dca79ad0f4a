package main

import (
	"fmt"
	"log"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/net/http/httpproxy"
)

// The image's busybox, and the applets the stand-in fronts.
const (
	busyboxPath = "/bin/busybox"
	setupArg    = "setup-image" // `/standin setup-image`: the Dockerfile's RUN
)

var fronted = []string{"sh", "wget"}

// multicall handles the stand-in started as something else than the
// service: it reports whether it did, and the exit code. Exec replaces
// the process on success.
//   - setup-image (at image build): /bin/sh and /bin/wget become symlinks
//     to /standin;
//   - as sh: busybox sh without HTTP(S)_PROXY. Busybox sh runs its own
//     wget applet for `wget` in a command (the healthchecks'), which would
//     otherwise use the proxy even for 127.0.0.1;
//   - as wget: busybox wget, without HTTP(S)_PROXY when the URL is one
//     NO_PROXY (or loopback) exempts, as GNU wget and curl do.
func multicall(args []string) (int, bool) {
	if len(args) > 1 && args[1] == setupArg {
		if err := setupImage("/bin", "/standin"); err != nil {
			log.Print(err)
			return 1, true
		}
		return 0, true
	}
	name := filepath.Base(args[0])
	switch name {
	case "sh":
		return execBusybox(name, args[1:], withoutProxy(syscall.Environ())), true
	case "wget":
		env := syscall.Environ()
		if !wgetProxied(args[1:], os.Getenv) {
			env = withoutProxy(env)
		}
		return execBusybox(name, args[1:], env), true
	}
	return 0, false
}

func setupImage(binDir, self string) error {
	for _, name := range fronted {
		p := filepath.Join(binDir, name)
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("setup-image: %w", err)
		}
		if err := os.Symlink(self, p); err != nil {
			return fmt.Errorf("setup-image: %w", err)
		}
	}
	return nil
}

func execBusybox(applet string, args []string, env []string) int {
	err := syscall.Exec(busyboxPath, append([]string{applet}, args...), env)
	log.Printf("%s: exec %s: %v", applet, busyboxPath, err)
	return 127
}

// withoutProxy drops HTTP_PROXY, HTTPS_PROXY and ALL_PROXY (any case)
// from env; NO_PROXY and the rest stay.
func withoutProxy(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY":
			continue
		}
		out = append(out, kv)
	}
	return out
}

// wgetProxied reports whether the first URL among wget's arguments goes
// through the proxy the environment names (upper case first, then lower
// case; NO_PROXY and loopback exempt). `-Y off` means never.
func wgetProxied(args []string, getenv func(string) string) bool {
	env := func(upper, lower string) string {
		if v := getenv(upper); v != "" {
			return v
		}
		return getenv(lower)
	}
	var target *url.URL
	for i, a := range args {
		if a == "-Y" && i+1 < len(args) && args[i+1] == "off" || a == "--proxy=off" || a == "-Yoff" {
			return false
		}
		if target == nil && strings.Contains(a, "://") {
			target, _ = url.Parse(a)
		}
	}
	if target == nil {
		return false
	}
	cfg := httpproxy.Config{
		HTTPProxy:  env("HTTP_PROXY", "http_proxy"),
		HTTPSProxy: env("HTTPS_PROXY", "https_proxy"),
		NoProxy:    env("NO_PROXY", "no_proxy"),
	}
	p, err := cfg.ProxyFunc()(target)
	return err == nil && p != nil
}
