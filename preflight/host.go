package preflight

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cartodb/carto-appliance/stack"
)

// Host is what the checks read of the machine; tests give their own.
type Host interface {
	GOOS() string
	GOARCH() string
	// OSRelease is /etc/os-release as key/value pairs.
	OSRelease() (map[string]string, error)
	CPUs() int
	// MemoryBytes is the memory this machine may use: RAM, or less when a
	// cgroup (container, systemd slice) limits it.
	MemoryBytes() (uint64, error)
	// FreeBytes is the space available on path's filesystem (or on its
	// nearest existing parent's).
	FreeBytes(path string) (uint64, error)
	// Engine reports the Docker engine, or an error when none answers.
	Engine(ctx context.Context) (stack.EngineInfo, error)
	// DockerInstalled reports whether the Docker engine's binary is here.
	DockerInstalled() bool
	// Listen reports whether addr:port can be bound (nil) or why not.
	Listen(addr string, port int) error
	// PortOwner names the container publishing port, and its project.
	PortOwner(ctx context.Context, port int) (name, project string, err error)
	LookupHost(ctx context.Context, name string) ([]string, error)
	// ServerTime is the Date an HTTPS server answers with.
	ServerTime(ctx context.Context, url string) (time.Time, error)
	Now() time.Time
}

// localHost is this machine.
type localHost struct{}

func (localHost) GOOS() string   { return runtime.GOOS }
func (localHost) GOARCH() string { return runtime.GOARCH }
func (localHost) CPUs() int      { return runtime.NumCPU() }
func (localHost) Now() time.Time { return time.Now() }

func (localHost) OSRelease() (map[string]string, error) { return LocalOSRelease() }

// LocalOSRelease reads this machine's /etc/os-release.
func LocalOSRelease() (map[string]string, error) {
	f, err := os.Open("/etc/os-release")
	if errors.Is(err, fs.ErrNotExist) {
		f, err = os.Open("/usr/lib/os-release")
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			out[k] = strings.Trim(v, `"'`)
		}
	}
	return out, sc.Err()
}

func (localHost) MemoryBytes() (uint64, error) {
	total, err := memTotal()
	if err != nil {
		return 0, err
	}
	if limit, ok := cgroupMemoryLimit(); ok && limit < total {
		return limit, nil
	}
	return total, nil
}

func memTotal() (uint64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("reading MemTotal in /proc/meminfo: %w", err)
			}
			return kb * 1024, nil
		}
	}
	return 0, errors.New("no MemTotal in /proc/meminfo")
}

// cgroupMemoryLimit is the smallest memory limit from this process's
// cgroup up to the root: the whole machine may be a container or a VM
// slice with less memory than /proc/meminfo shows. Both cgroup v2
// (memory.max) and v1's memory controller (memory.limit_in_bytes) count.
func cgroupMemoryLimit() (uint64, bool) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0, false
	}
	var limit uint64
	found := false
	walk := func(root, path, file string) {
		for dir := path; ; dir = filepath.Dir(dir) {
			if v, err := os.ReadFile(filepath.Join(root, dir, file)); err == nil {
				if n, err := strconv.ParseUint(strings.TrimSpace(string(v)), 10, 64); err == nil && (!found || n < limit) {
					limit, found = n, true
				}
			}
			if dir == "/" || dir == "." {
				return
			}
		}
	}
	for line := range strings.Lines(string(b)) {
		// hierarchy-ID:controllers:path
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			walk("/sys/fs/cgroup", parts[2], "memory.max")
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			walk("/sys/fs/cgroup/memory", parts[2], "memory.limit_in_bytes")
		}
	}
	return limit, found
}

func (localHost) FreeBytes(path string) (uint64, error) {
	for {
		var st syscall.Statfs_t
		err := syscall.Statfs(path, &st)
		if err == nil {
			return st.Bavail * uint64(st.Bsize), nil
		}
		if !errors.Is(err, syscall.ENOENT) || path == "/" {
			return 0, fmt.Errorf("reading the free space of %s: %w", path, err)
		}
		path = filepath.Dir(path)
	}
}

func (localHost) Engine(ctx context.Context) (stack.EngineInfo, error) {
	eng, err := stack.Connect(ctx)
	if err != nil {
		return stack.EngineInfo{}, err
	}
	defer eng.Close()
	return eng.Info(ctx)
}

func (localHost) DockerInstalled() bool {
	for _, p := range []string{"/usr/bin/dockerd", "/usr/sbin/dockerd", "/usr/local/bin/dockerd"} {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}

func (localHost) Listen(addr string, port int) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
	if err != nil {
		return err
	}
	return ln.Close()
}

func (localHost) PortOwner(ctx context.Context, port int) (string, string, error) {
	eng, err := stack.Connect(ctx)
	if err != nil {
		return "", "", err
	}
	defer eng.Close()
	return eng.PortOwner(ctx, port)
}

func (localHost) LookupHost(ctx context.Context, name string) ([]string, error) {
	return net.DefaultResolver.LookupHost(ctx, name)
}

func (localHost) ServerTime(ctx context.Context, url string) (time.Time, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, url, nil)
	if err != nil {
		return time.Time{}, err
	}
	// Any answer carries a Date; the certificate does not matter for
	// reading the clock (a wrong clock is what breaks certificates).
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		Proxy: http.ProxyFromEnvironment, TLSClientConfig: insecureTLS(),
	}}
	resp, err := c.Do(req)
	if err != nil {
		return time.Time{}, err
	}
	resp.Body.Close()
	return http.ParseTime(resp.Header.Get("Date"))
}
