package proxytest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
)

// StartSquidHTTPS starts squid as an HTTPS proxy: clients speak TLS to the
// proxy itself (an https_port with cert and key, PEM, e.g. from a test
// CA's Issue for listenAddr), then CONNECT or GET through it. It listens
// on a free port of listenAddr and runs until Stop or until ctx ends.
//
// Run as root, squid drops to the "proxy" user and must reach its files,
// which the test's dir (under a 0700 directory of `go test`) does not
// allow: squid then works in a directory of its own under os.TempDir(),
// and Stop copies its logs and configuration into dir. Each instance has
// its own service name (-n), hence its own shared memory segments, so
// several can run at once.
func StartSquidHTTPS(ctx context.Context, dir, listenAddr string, cert, key []byte) (*Proxy, error) {
	bin, err := binary("squid")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	work, owner, err := squidWorkDir(dir)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 6)
	rand.Read(b)
	service := "proxytest" + hex.EncodeToString(b)
	p := &Proxy{Kind: "squid", Dir: dir, scheme: "https", accessLog: filepath.Join(work, "access.log")}
	p.onStop = func() {
		// A squid that was killed leaves its segments behind.
		if m, _ := filepath.Glob("/dev/shm/" + service + "-*"); len(m) > 0 {
			for _, f := range m {
				os.Remove(f)
			}
		}
		if work != dir {
			for _, f := range []string{"access.log", "cache.log", "squid.conf", "squid.out"} {
				copyFile(filepath.Join(work, f), filepath.Join(dir, "squid-"+f))
			}
			p.accessLog = filepath.Join(dir, "squid-access.log")
			os.RemoveAll(work)
		}
	}
	for name, data := range map[string][]byte{"proxy.crt": cert, "proxy.key": key} {
		if err := writeOwned(filepath.Join(work, name), data, 0o600, owner); err != nil {
			return nil, err
		}
	}
	err = startOnFreePort(listenAddr, func(port int) error {
		p.Addr = net.JoinHostPort(listenAddr, strconv.Itoa(port))
		conf := filepath.Join(work, "squid.conf")
		if err := writeOwned(conf, []byte(squidConf(p.Addr, work)), 0o644, owner); err != nil {
			return err
		}
		// -N: no daemon, one process; -d 1: startup messages on stderr.
		return launch(ctx, p, filepath.Join(work, "squid.out"), bin, "-N", "-d", "1", "-n", service, "-f", conf)
	})
	if err != nil {
		p.onStop()
		return nil, fmt.Errorf("starting squid on %s: %w", listenAddr, err)
	}
	return p, nil
}

// squidConf is the configuration verified with squid 5.7 (Debian's GnuTLS
// build): an https_port only, every client and port allowed (the listen
// address limits who can use it), no cache, logs in dir written as each
// request or tunnel ends, and an immediate shutdown on SIGTERM.
func squidConf(addr, dir string) string {
	return fmt.Sprintf(`# proxytest: squid as the corporate HTTPS proxy
https_port %s tls-cert=%s tls-key=%s
http_access allow all
cache deny all
visible_hostname proxytest
pid_filename %s
access_log stdio:%s squid
buffered_logs off
logfile_rotate 0
cache_log %s
cache_store_log none
coredump_dir %s
netdb_filename none
pinger_enable off
max_filedescriptors 1024
shutdown_lifetime 0 seconds
connect_timeout 10 seconds
forward_timeout 20 seconds
dns_timeout 10 seconds
`, addr, filepath.Join(dir, "proxy.crt"), filepath.Join(dir, "proxy.key"),
		filepath.Join(dir, "squid.pid"), filepath.Join(dir, "access.log"),
		filepath.Join(dir, "cache.log"), dir)
}

// squidWorkDir is where squid keeps its files, and the user they belong
// to (nil: the current one).
func squidWorkDir(dir string) (string, *user.User, error) {
	if os.Geteuid() != 0 {
		return dir, nil, nil
	}
	u, err := user.Lookup("proxy") // squid's cache_effective_user on Debian
	if err != nil {
		return "", nil, fmt.Errorf("squid runs as the proxy user, which is missing: %w", err)
	}
	work, err := os.MkdirTemp("", "proxytest-squid-")
	if err != nil {
		return "", nil, err
	}
	if err := chown(work, u); err != nil {
		os.RemoveAll(work)
		return "", nil, err
	}
	os.Chmod(work, 0o755)
	return work, u, nil
}

func writeOwned(path string, data []byte, mode os.FileMode, u *user.User) error {
	if err := os.WriteFile(path, data, mode); err != nil {
		return err
	}
	if u == nil {
		return nil
	}
	return chown(path, u)
}

func chown(path string, u *user.User) error {
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Chown(path, uid, gid)
}

func copyFile(from, to string) {
	in, err := os.Open(from)
	if err != nil {
		return
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return
	}
	defer out.Close()
	io.Copy(out, in)
}
