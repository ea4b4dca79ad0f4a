// Package packaging holds no Go code: these tests run install.sh with real
// shells and openssl against a release directory on disk, with stub curl
// and id commands so that nothing outside a temporary dir is touched.
package packaging

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

const releaseURL = "https://release.carto.test/v1"

// stamp is install.sh as release.sh writes it into a release.
func stamp(t *testing.T, pub ed25519.PublicKey) []byte {
	t.Helper()
	src, err := os.ReadFile("install.sh")
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.ReplaceAll(string(src), "@RELEASE_URL@", releaseURL)
	return []byte(strings.ReplaceAll(s, "@RELEASE_PUBKEY@", base64.StdEncoding.EncodeToString(der)))
}

// sandbox is a PATH whose curl serves files from a release dir and logs
// every call, whose id says root, and a log of the stubs' calls.
type sandbox struct {
	dir, release, binDir, log string
}

func newSandbox(t *testing.T) *sandbox {
	t.Helper()
	dir := t.TempDir()
	s := &sandbox{dir: dir, release: filepath.Join(dir, "release"), binDir: filepath.Join(dir, "bin"), log: filepath.Join(dir, "calls.log")}
	stubs := filepath.Join(dir, "stubs")
	for _, d := range []string{stubs, s.release} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// curl: -o FILE URL; serves releaseURL/NAME from the release dir, and
	// fails as curl -f does on a missing file.
	curl := `#!/bin/sh
echo "curl $*" >>"$STUB_LOG"
out= url=
while [ $# -gt 0 ]; do
	case $1 in
	-o) out=$2; shift ;;
	--proxy | --proxy-cacert) shift ;;
	https://* | http://*) url=$1 ;;
	esac
	shift
done
name=${url#` + releaseURL + `/}
[ "$name" != "$url" ] && [ -f "$STUB_RELEASE/$name" ] || exit 22
cat "$STUB_RELEASE/$name" >"$out"
`
	id := "#!/bin/sh\necho \"id $*\" >>\"$STUB_LOG\"\necho 0\n"
	for name, body := range map[string]string{"curl": curl, "id": id} {
		if err := os.WriteFile(filepath.Join(stubs, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// run runs script with shell, as `curl ... | shell -s -- args`.
func (s *sandbox) run(t *testing.T, shell string, script []byte, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(shell, append([]string{"-s", "--"}, args...)...)
	cmd.Stdin = bytes.NewReader(script)
	cmd.Env = append([]string{
		"PATH=" + filepath.Join(s.dir, "stubs") + ":/usr/bin:/bin",
		"STUB_LOG=" + s.log, "STUB_RELEASE=" + s.release,
		"CARTO_APPLIANCE_BIN_DIR=" + s.binDir, "TMPDIR=" + s.dir,
	}, env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("%s did not finish", shell)
	}
	return o.String(), e.String(), code
}

func (s *sandbox) calls(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(s.log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// A download cut anywhere in install.sh's last lines (the tail of the
// script, byte by byte) or at any line end runs nothing: not main without
// the operator's flags, not even its first command. The whole script, as
// the control, does run.
func TestInstallShCutDownloadRunsNothing(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	script := stamp(t, pub)
	// Every byte of the last three lines, and every line end before them.
	tail := len(script)
	for n := 0; n < 4 && tail > 0; {
		tail--
		if script[tail] == '\n' {
			n++
		}
	}
	var offsets []int
	for i := 0; i < tail; i++ {
		if script[i] == '\n' {
			offsets = append(offsets, i+1)
		}
	}
	// Up to the final newline: without it the script is whole.
	for i := tail; i < len(bytes.TrimRight(script, "\n")); i++ {
		offsets = append(offsets, i)
	}
	for _, shell := range []string{"/bin/sh", "bash"} {
		path, err := exec.LookPath(shell)
		if err != nil {
			t.Logf("no %s here", shell)
			continue
		}
		t.Run(filepath.Base(shell), func(t *testing.T) {
			s := newSandbox(t)
			for _, off := range offsets {
				s.run(t, path, script[:off], nil, "--customer-env", "customer.env")
				if calls := s.calls(t); calls != "" {
					t.Fatalf("cut at byte %d of %d (after %q), the script ran:\n%s", off, len(script), script[max(0, off-30):off], calls)
				}
			}
			_, errOut, _ := s.run(t, path, script, nil, "--customer-env", "customer.env")
			if !strings.Contains(s.calls(t), "id -u") {
				t.Fatalf("the whole script did not run main:\n%s", errOut)
			}
		})
	}
}

// release is a release dir's content: a stand-in binary, SHA256SUMS and
// its signature by key.
func writeRelease(t *testing.T, s *sandbox, key ed25519.PrivateKey) (binary string) {
	t.Helper()
	binary = "carto-appliance_linux_" + runtime.GOARCH
	bin := []byte("#!/bin/sh\necho \"carto-appliance $*\"\n")
	sums := fmt.Sprintf("%x  %s\n", sha256.Sum256(bin), binary)
	for name, data := range map[string][]byte{
		binary:           bin,
		"SHA256SUMS":     []byte(sums),
		"SHA256SUMS.sig": ed25519.Sign(key, []byte(sums)),
	} {
		if err := os.WriteFile(filepath.Join(s.release, name), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return binary
}

// install.sh trusts no checksum before SHA256SUMS's signature by the
// release key verifies, refuses plain http, and downloads over https only.
func TestInstallShVerifiesTheSignedChecksums(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("no openssl")
	}
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	script := stamp(t, pub)
	args := []string{"--customer-env", "/root/customer.env", "--proxy-url", "http://proxy.corp:3128"}
	refused := func(t *testing.T, s *sandbox, env []string, want string) {
		t.Helper()
		out, errOut, code := s.run(t, "/bin/sh", script, env, args...)
		if code == 0 || !strings.Contains(errOut, want) {
			t.Errorf("exit %d, want a refusal with %q:\nstdout:\n%s\nstderr:\n%s", code, want, out, errOut)
		}
		if _, err := os.Stat(filepath.Join(s.binDir, "carto-appliance")); err == nil {
			t.Error("a binary was installed")
		}
	}

	t.Run("a signed release installs and runs install with the flags", func(t *testing.T) {
		s := newSandbox(t)
		writeRelease(t, s, key)
		out, errOut, code := s.run(t, "/bin/sh", script, nil, args...)
		if code != 0 || !strings.Contains(out, "carto-appliance install "+strings.Join(args, " ")) {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
		for line := range strings.SplitSeq(strings.TrimSpace(s.calls(t)), "\n") {
			if strings.HasPrefix(line, "curl ") && (!strings.Contains(line, "--proto =https --proto-redir =https") || !strings.Contains(line, "--proxy http://proxy.corp:3128")) {
				t.Errorf("a download is not https-only through the proxy: %s", line)
			}
		}
	})
	t.Run("a tampered binary with matching SHA256SUMS is refused", func(t *testing.T) {
		s := newSandbox(t)
		binary := writeRelease(t, s, key)
		bad := []byte("#!/bin/sh\necho pwned\n")
		sums := fmt.Sprintf("%x  %s\n", sha256.Sum256(bad), binary)
		os.WriteFile(filepath.Join(s.release, binary), bad, 0o755)
		os.WriteFile(filepath.Join(s.release, "SHA256SUMS"), []byte(sums), 0o644)
		refused(t, s, nil, "SHA256SUMS does not match its signature")
	})
	t.Run("a signature by another key is refused", func(t *testing.T) {
		s := newSandbox(t)
		_, other, _ := ed25519.GenerateKey(rand.Reader)
		writeRelease(t, s, other)
		refused(t, s, nil, "SHA256SUMS does not match its signature")
	})
	t.Run("a missing signature is refused", func(t *testing.T) {
		s := newSandbox(t)
		writeRelease(t, s, key)
		os.Remove(filepath.Join(s.release, "SHA256SUMS.sig"))
		refused(t, s, nil, releaseURL+"/SHA256SUMS.sig could not be downloaded")
	})
	t.Run("a tampered binary is refused by its checksum", func(t *testing.T) {
		s := newSandbox(t)
		binary := writeRelease(t, s, key)
		os.WriteFile(filepath.Join(s.release, binary), []byte("#!/bin/sh\necho pwned\n"), 0o755)
		refused(t, s, nil, "checksum mismatch for "+binary)
	})
	t.Run("an http release URL is refused before any download", func(t *testing.T) {
		s := newSandbox(t)
		writeRelease(t, s, key)
		refused(t, s, []string{"CARTO_APPLIANCE_RELEASE_URL=http://release.carto.test/v1"}, "the release URL must be https://")
		if strings.Contains(s.calls(t), "curl") {
			t.Errorf("downloaded anyway:\n%s", s.calls(t))
		}
	})
	t.Run("an install.sh without a release key is refused", func(t *testing.T) {
		s := newSandbox(t)
		writeRelease(t, s, key)
		src, _ := os.ReadFile("install.sh")
		out, errOut, code := s.run(t, "/bin/sh", src, []string{"CARTO_APPLIANCE_RELEASE_URL=" + releaseURL}, args...)
		if code == 0 || !strings.Contains(errOut, "this install.sh has no release key") || strings.Contains(s.calls(t), "curl") {
			t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s\ncalls:\n%s", code, out, errOut, s.calls(t))
		}
	})
}
