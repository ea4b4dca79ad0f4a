package testbed

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/registry"
)

// RegistryBinary is Debian's docker-registry (CNCF distribution 2.8).
const RegistryBinary = "/usr/bin/docker-registry"

// RegistryUser is the user CARTO's registry takes with a service-account
// key.json as the password.
const RegistryUser = "_json_key"

// Registry is a private image registry on 127.0.0.1 serving TLS from a
// test CA and requiring `_json_key` with KeyJSONPath's contents as the
// password, like CARTO's.
//
// Docker treats every registry on 127.0.0.0/8 as insecure (the engine's
// default insecure-registries), so the engine talks to it without trusting
// the CA: no /etc/docker/certs.d entry is needed. Clients other than the
// engine must trust CACertPath.
type Registry struct {
	// Host is "127.0.0.1:PORT": the DOCKER_REGISTRY_BASE_PATH to give the
	// appliance, and the ServerAddress of auth configs.
	Host string
	// Dir holds the registry's configuration, certificates, keys, storage
	// and log (registry.log).
	Dir string
	// KeyJSONPath is the service-account key.json the registry accepts.
	KeyJSONPath string
	// WrongKeyJSONPath is another, equally realistic key.json that the
	// registry refuses with 401.
	WrongKeyJSONPath string
	// CACertPath is the PEM certificate of the CA that signed the
	// registry's certificate (valid for 127.0.0.1 and localhost).
	CACertPath string
	// Logf, when set, gets a line per image pushed. Default: silent.
	Logf func(format string, args ...any)

	cmd      *exec.Cmd
	exited   chan struct{} // closed when the registry process has ended
	waitErr  error         // the process's exit status; read after exited
	stopOnce sync.Once
	stopErr  error
}

// StartRegistry creates dir if needed, writes the registry's configuration
// and credentials into it, starts Debian's docker-registry on a free port
// of 127.0.0.1 and waits (at most 30 s, or until ctx ends) for it to answer.
// The registry runs until Stop; ctx bounds only the start.
func StartRegistry(ctx context.Context, dir string) (*Registry, error) {
	if _, err := os.Stat(RegistryBinary); err != nil {
		return nil, fmt.Errorf("starting the test registry: %s is missing (install docker-registry; scripts/testbed-deps.sh): %w", RegistryBinary, err)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		return nil, fmt.Errorf("starting the test registry: %w", err)
	}
	r := &Registry{
		Dir:              dir,
		KeyJSONPath:      filepath.Join(dir, "key.json"),
		WrongKeyJSONPath: filepath.Join(dir, "wrong-key.json"),
		CACertPath:       filepath.Join(dir, "ca.crt"),
	}
	if err := r.writeCredentials(); err != nil {
		return nil, fmt.Errorf("starting the test registry: %w", err)
	}
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(r.CACertPath)
	if err != nil {
		return nil, err
	}
	pool.AppendCertsFromPEM(caPEM)

	// The free port is found by binding and releasing it: another process
	// can take it in between, so a start that fails is retried elsewhere.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		r.Host = fmt.Sprintf("127.0.0.1:%d", port)
		if lastErr = r.start(ctx, pool); lastErr == nil {
			return r, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("starting the test registry: %w", lastErr)
}

// writeCredentials writes the CA, the server certificate, both key.json
// files and the htpasswd file.
func (r *Registry) writeCredentials() error {
	ca, err := newTestCA()
	if err != nil {
		return fmt.Errorf("creating the test CA: %w", err)
	}
	certPEM, keyPEM, err := ca.issue([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, []string{"localhost"})
	if err != nil {
		return fmt.Errorf("issuing the registry's certificate: %w", err)
	}
	right, err := newKeyJSON()
	if err != nil {
		return fmt.Errorf("generating key.json: %w", err)
	}
	wrong, err := newKeyJSON()
	if err != nil {
		return fmt.Errorf("generating key.json: %w", err)
	}
	// Guard the property the 401 test rests on (see htpasswdLine).
	if bytes.Equal(right[:bcryptMaxPassword], wrong[:bcryptMaxPassword]) {
		return errors.New("generating key.json: the wrong key shares the right one's first 72 bytes")
	}
	htpasswd, err := htpasswdLine(RegistryUser, right)
	if err != nil {
		return fmt.Errorf("hashing key.json for htpasswd: %w", err)
	}
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{"ca.crt", ca.pem, 0o644},
		{"registry.crt", certPEM, 0o644},
		{"registry.key", keyPEM, 0o600},
		{"key.json", right, 0o600},
		{"wrong-key.json", wrong, 0o600},
		{"htpasswd", htpasswd, 0o600},
	}
	for _, f := range files {
		if err := writeFile(filepath.Join(r.Dir, f.name), f.data, f.perm); err != nil {
			return err
		}
	}
	return nil
}

// configYAML is the registry's configuration. Access logs are off; the
// error log (failed logins included) goes to registry.log.
const configYAML = `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %[1]s/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %[2]s
  secret: %[3]s
  tls:
    certificate: %[1]s/registry.crt
    key: %[1]s/registry.key
  headers:
    X-Content-Type-Options: [nosniff]
auth:
  htpasswd:
    realm: carto-testbed
    path: %[1]s/htpasswd
`

// start runs the registry on r.Host and waits for it to answer.
func (r *Registry) start(ctx context.Context, pool *x509.CertPool) error {
	cfg := filepath.Join(r.Dir, "config.yml")
	if err := writeFile(cfg, fmt.Appendf(nil, configYAML, r.Dir, r.Host, randomHex(16)), 0o600); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(r.Dir, "registry.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	// Not CommandContext: the registry outlives the start's context.
	cmd := exec.Command(RegistryBinary, "serve", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("running %s: %w", RegistryBinary, err)
	}
	r.cmd, r.exited = cmd, make(chan struct{})
	go func() {
		r.waitErr = cmd.Wait()
		close(r.exited)
	}()

	hc := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		// Unauthenticated /v2/ must answer 401: TLS and auth are both on.
		resp, err := hc.Get("https://" + r.Host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
			last = fmt.Errorf("GET /v2/ without credentials answered %s, want 401", resp.Status)
		} else {
			last = err
		}
		select {
		case <-r.exited:
			return fmt.Errorf("%s exited at start (%v); its log:\n%s", RegistryBinary, r.waitErr, r.logTail())
		case <-ctx.Done():
			r.Stop()
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	r.Stop()
	return fmt.Errorf("registry on %s not ready after 30s: %v; its log:\n%s", r.Host, last, r.logTail())
}

func (r *Registry) logTail() string {
	b, _ := os.ReadFile(filepath.Join(r.Dir, "registry.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}

// Stop ends the registry (SIGTERM, then SIGKILL after 5 s). Its directory
// is left for the caller. Safe to call more than once.
func (r *Registry) Stop() error {
	r.stopOnce.Do(func() {
		if r.cmd == nil || r.cmd.Process == nil {
			return
		}
		r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.exited:
		case <-time.After(5 * time.Second):
			r.cmd.Process.Kill()
			<-r.exited
			r.stopErr = fmt.Errorf("registry on %s did not stop on SIGTERM; killed", r.Host)
		}
	})
	return r.stopErr
}

// AuthConfig is the engine credential for the registry with the key.json
// at keyJSONPath as the password (KeyJSONPath or WrongKeyJSONPath).
func (r *Registry) AuthConfig(keyJSONPath string) (registry.AuthConfig, error) {
	key, err := os.ReadFile(keyJSONPath)
	if err != nil {
		return registry.AuthConfig{}, fmt.Errorf("reading the registry key: %w", err)
	}
	return registry.AuthConfig{Username: RegistryUser, Password: string(key), ServerAddress: r.Host}, nil
}

// EncodedAuth is AuthConfig encoded for the X-Registry-Auth header
// (client.ImagePullOptions.RegistryAuth and the like).
func (r *Registry) EncodedAuth(keyJSONPath string) (string, error) {
	ac, err := r.AuthConfig(keyJSONPath)
	if err != nil {
		return "", err
	}
	return authconfig.Encode(ac)
}

// Ref is the registry's reference for a release image: <Host>/<name>:<version>.
func (r *Registry) Ref(name, version string) string {
	return r.Host + "/" + name + ":" + version
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
