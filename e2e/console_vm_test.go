//go:build integration

package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/cartodb/carto-appliance/e2e/testbed"
	"github.com/cartodb/carto-appliance/e2e/vm"
)

// screenshotDir keeps the console scenario's screenshots, as artefacts of
// the run (make integration's .cache).
const screenshotDir = "../.cache/screenshots"

// The admin console in a fresh VM (SPEC §13), driven in a real headless
// Chromium: with the password given at install it answers on the VM's
// loopback only; the password changed and the console bound to the VM's
// address, the old password is refused, the new one shows the 17
// services healthy; a killed container turns unhealthy and healthy again
// on the page without a reload; a setting changed through the page lands
// in appliance.yaml, while a form posted without the CSRF token is
// refused; a service's log shows, and new lines come while followed; a
// support bundle downloads; an upgrade runs with its steps
// shown. Screenshots of each page are kept.
func TestConsoleInFreshVM(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("Debian's chromium is needed (make deps installs it): %v", err)
	}
	netw, regHost, regCA := vmNetwork(t, "console")
	srv, err := testbed.ServeChannel(netw.Gateway, channelDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	node := vm.New(t, docker, vm.Options{Name: "carto", Network: netw.Name})
	outside := vm.New(t, docker, vm.Options{Name: "outside", Network: netw.Name})
	agentJournalOnFailure(t, node)
	trustRegistry(t, node, regHost, regCA)
	write(t, node, "/usr/local/share/ca-certificates/channel-ca.crt", srv.CAPEM, 0o644)
	node.MustExec(t, "update-ca-certificates")
	stagePackage(t, node)
	// The password given at install; later changed with set-password.
	const installPassword, password = "install password 1234", "console password 1234"
	write(t, node, "/root/install-pass", []byte(installPassword+"\n"), 0o600)
	write(t, node, "/root/console-pass", []byte(password+"\n"), 0o600)
	out, errOut, code, err := node.Exec(ctx, "carto-appliance", "install", "--yes",
		"--customer-env", "/root/package/customer.env", "--key", "/root/package/key.json", "--registry", regHost,
		"--console-password-file", "/root/install-pass")
	if err != nil || code != 0 {
		t.Fatalf("install: exit %d %v\n%s\n%s", code, err, out, errOut)
	}
	node.MustExec(t, "carto-appliance", "config", "set", "upgrade.channel_url="+srv.URL)
	if err := os.MkdirAll(screenshotDir, 0o755); err != nil {
		t.Fatal(err)
	}
	base := "https://" + node.IP() + ":9443"

	step(t, "install --console-password-file: the console answers on the VM's loopback only", func(t *testing.T) {
		if st := node.MustExec(t, "carto-appliance", "status"); !strings.Contains(st, "Admin console: https://127.0.0.1:9443/") {
			t.Errorf("status does not say where the console is:\n%s", st)
		}
		eventually(t, 60*time.Second, func() error {
			if got, _, _, _ := node.Exec(ctx, "curl", "-ks", "-o", "/dev/null", "-w", "%{http_code}", "https://127.0.0.1:9443/login"); got != "200" {
				return fmt.Errorf("the console on loopback answers %q", got)
			}
			return nil
		})
		if _, _, code, _ := outside.Exec(ctx, "curl", "-ks", "--max-time", "3", "https://"+node.IP()+":9443/login"); code == 0 {
			t.Error("the console answers another host by default")
		}
	})

	step(t, "set-password changes it: only its bcrypt hash is kept", func(t *testing.T) {
		before := node.MustExec(t, "cat", "/opt/carto/appliance.yaml")
		out := node.MustExec(t, "carto-appliance", "console", "set-password", "--password-file", "/root/console-pass")
		if !strings.Contains(out, "https://127.0.0.1:9443/") {
			t.Errorf("set-password does not say where the console is: %s", out)
		}
		cfg := node.MustExec(t, "cat", "/opt/carto/appliance.yaml")
		if strings.Contains(cfg, password) || strings.Contains(cfg, installPassword) || !strings.Contains(cfg, "password_hash: $2") {
			t.Errorf("appliance.yaml holds a password, or no bcrypt hash:\n%s", cfg)
		}
		if cfg == before {
			t.Error("set-password did not change appliance.yaml")
		}
	})

	node.MustExec(t, "carto-appliance", "config", "set", "console.bind_address="+node.IP())
	eventually(t, 60*time.Second, func() error {
		if got, _, _, _ := outside.Exec(ctx, "curl", "-ks", "-o", "/dev/null", "-w", "%{http_code}", base+"/login"); got != "200" {
			return fmt.Errorf("the console on the VM's address answers %q", got)
		}
		return nil
	})

	downloads := t.TempDir()
	// The browser runs on the host but in the outside VM's network
	// namespace: it reaches the node as another host on the network does,
	// and it does not see the host's own network change (other scenarios'
	// Docker networks come and go; Chromium fails a request in flight with
	// net::ERR_NETWORK_CHANGED when they do). DevTools speaks over a pipe,
	// which nsenter passes on.
	netns, err := outside.NetNS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Fatal(err)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.Flag("ignore-certificate-errors", true), chromedp.NoSandbox,
		// A container's /dev/shm may be 64 MB (CI's), too small for it.
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1280, 900),
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			cmd.Args = append([]string{nsenter, "--net=" + netns, "--"}, cmd.Args...)
			cmd.Path = nsenter
			// As chromedp does without a ModifyCmdFunc: the browser dies
			// with the test.
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		}))...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	// The first run starts the browser, with no deadline (one would end
	// the browser with it); every later action is bounded, and the page's
	// own updates are awaited with waitPage.
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, within time.Duration, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		c, cancel := context.WithTimeout(bctx, within)
		defer cancel()
		if err := chromedp.Do(c, actions...); err != nil {
			t.Fatalf("%v\n%s", err, pageDump(bctx, t.Name()))
		}
	}
	get := func(t *testing.T, within time.Duration, a chromedp.Action[string]) string {
		t.Helper()
		c, cancel := context.WithTimeout(bctx, within)
		defer cancel()
		v, err := chromedp.Run(c, a)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	shot := func(t *testing.T, name string) {
		t.Helper()
		c, cancel := context.WithTimeout(bctx, 30*time.Second)
		defer cancel()
		png, err := chromedp.Run(c, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(screenshotDir, "console-"+name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// pageText is the text of the element sel.
	pageText := func(t *testing.T, sel string) string {
		t.Helper()
		return get(t, 10*time.Second, chromedp.Text(chromedp.CSS(sel)))
	}
	eval := func(t *testing.T, js string) string {
		t.Helper()
		c, cancel := context.WithTimeout(bctx, 10*time.Second)
		defer cancel()
		v, err := chromedp.Run(c, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// waitPage waits for the page's JS (server-sent events), never
	// reloading it, until check passes on the text of sel.
	waitPage := func(t *testing.T, within time.Duration, sel string, check func(string) error) {
		t.Helper()
		eventually(t, within, func() error { return check(pageText(t, sel)) })
	}

	// mapsAPI is maps-api's container address in the VM (its stand-in's
	// control and logged requests are reached there).
	mapsAPI := func(t *testing.T) string {
		t.Helper()
		return strings.TrimSpace(node.MustExec(t, "docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "carto-maps-api-1"))
	}

	step(t, "the replaced password is refused; the new one shows the 17 services healthy", func(t *testing.T) {
		run(t, 30*time.Second, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("password")),
			chromedp.SendKeys(chromedp.ID("password"), installPassword), chromedp.Submit(chromedp.ID("password")),
			// The answer's error, not the form, which the page before
			// the submission has too.
			chromedp.WaitVisible(chromedp.CSS("p.error")))
		shot(t, "login-refused")
		if loc := get(t, 10*time.Second, chromedp.Location()); !strings.Contains(loc, "/login") {
			t.Fatalf("a wrong password reached %s", loc)
		}
		run(t, 30*time.Second, chromedp.Navigate(base+"/login"), chromedp.WaitVisible(chromedp.ID("password")),
			chromedp.SendKeys(chromedp.ID("password"), password), chromedp.Submit(chromedp.ID("password")),
			chromedp.WaitVisible(chromedp.ID("services")))
		waitPage(t, 60*time.Second, "#services", func(s string) error {
			if n := strings.Count(s, "healthy") - strings.Count(s, "unhealthy"); n < 16 {
				return fmt.Errorf("%d services healthy on the page:\n%s", n, s)
			}
			return nil
		})
		if rows := eval(t, `String(document.querySelectorAll('#services tr').length)`); rows != "17" {
			t.Errorf("%s services on the page, want 17", rows)
		}
		shot(t, "status")
	})

	step(t, "a killed container comes back, and an unhealthy one turns healthy again, on the page without a reload", func(t *testing.T) {
		eval(t, `window.__notReloaded = true; "set"`)
		row := func(s string) []string {
			for _, line := range strings.Split(s, "\n") {
				if f := strings.Split(strings.TrimSpace(line), "\t"); len(f) > 3 && f[0] == "maps-api" {
					return f
				}
			}
			return nil
		}
		restarts := func(f []string) int {
			n := -1
			if f != nil {
				fmt.Sscan(f[3], &n)
			}
			return n
		}
		healthy := func(f []string) bool { return f != nil && f[1] == "running" && f[2] == "healthy" }
		// The page, polled every half second, shows each status the
		// server sends (at each container event, and every 2 s):
		// maps-api not healthy in one of them.
		sawDown := map[string]bool{}
		// comesBack waits for the page to show maps-api restarted once
		// more and healthy, noting whether it showed it not healthy.
		comesBack := func(phase string, within time.Duration) {
			t.Helper()
			before := restarts(row(pageText(t, "#services")))
			waitPage(t, within, "#services", func(s string) error {
				f := row(s)
				if f != nil && !healthy(f) {
					sawDown[phase] = true
				}
				if restarts(f) <= before || !healthy(f) {
					return fmt.Errorf("maps-api %s: its restart not on the page (%d before): %q", phase, before, f)
				}
				return nil
			})
		}
		// Docker's restart policy and the agent's own check bring it back
		// within a second or two: the page shows the restart.
		node.MustExec(t, "docker", "kill", "carto-maps-api-1")
		comesBack("killed", 60*time.Second)
		// A service whose healthcheck fails: the engine marks it
		// unhealthy after its retries, and the agent replaces it at once
		// (a status sent at each container event shows the moment in
		// between, which one every 2 s alone could miss);
		// the page shows the restart and the service healthy again.
		node.MustExec(t, "curl", "-sf", "-X", "POST", "http://"+mapsAPI(t)+":3000/control/unhealthy")
		comesBack("unhealthy", 180*time.Second)
		t.Logf("the page showed maps-api not healthy: %v", sawDown)
		if len(sawDown) == 0 {
			t.Error("the page never showed maps-api other than healthy while it was killed, then replaced")
		}
		shot(t, "service-back")
		if same := eval(t, `String(window.__notReloaded === true)`); same != "true" {
			t.Error("the page was reloaded")
		}
	})

	step(t, "the login outlives the agent's restart", func(t *testing.T) {
		node.MustExec(t, "systemctl", "restart", "carto-appliance")
		eventually(t, 60*time.Second, func() error {
			if got, _, _, _ := outside.Exec(ctx, "curl", "-ks", "-o", "/dev/null", "-w", "%{http_code}", base+"/login"); got != "200" {
				return fmt.Errorf("the console after the agent's restart answers %q", got)
			}
			return nil
		})
		run(t, 30*time.Second, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("services")))
		if loc := get(t, 10*time.Second, chromedp.Location()); strings.Contains(loc, "/login") {
			t.Errorf("the agent's restart logged the operator out: %s", loc)
		}
		if mode := node.MustExec(t, "stat", "-c", "%a", "/var/lib/carto-appliance/console-sessions.json"); strings.TrimSpace(mode) != "600" {
			t.Errorf("the sessions file's mode: %s", mode)
		}
	})

	step(t, "a setting changed on the page lands in appliance.yaml; a form without the CSRF token is refused", func(t *testing.T) {
		run(t, 30*time.Second, chromedp.Navigate(base+"/settings"), chromedp.WaitVisible(chromedp.ID("pairs")),
			chromedp.SendKeys(chromedp.ID("pairs"), "backup.keep=3"), chromedp.Submit(chromedp.ID("pairs")),
			// What changed, on the page the POST leads to.
			chromedp.WaitVisible(chromedp.CSS("pre.flash")))
		shot(t, "settings")
		if cfg := node.MustExec(t, "cat", "/opt/carto/appliance.yaml"); !strings.Contains(cfg, "keep: 3") {
			t.Errorf("appliance.yaml after the change:\n%s", cfg)
		}
		// The agent reads the backup section where it uses it.
		if flash := pageText(t, "pre.flash"); !strings.Contains(flash, "backup.keep") || !strings.Contains(flash, "by itself") {
			t.Errorf("the page after the change says:\n%s", flash)
		}
		// The browser's session, in a client that posts no token.
		var cookies []*network.Cookie
		run(t, 10*time.Second, chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base}})
			cookies = res.Cookies
			return err
		}))
		jar, _ := cookiejar.New(nil)
		u, _ := url.Parse(base)
		for _, c := range cookies {
			jar.SetCookies(u, []*http.Cookie{{Name: c.Name, Value: c.Value, Path: "/"}})
		}
		client := &http.Client{Jar: jar, Timeout: 10 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the VM's own CA
		before := node.MustExec(t, "cat", "/opt/carto/appliance.yaml")
		resp, err := client.PostForm(base+"/settings", url.Values{"pairs": {"backup.keep=5"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("a post without the CSRF token: %s", resp.Status)
		}
		if after := node.MustExec(t, "cat", "/opt/carto/appliance.yaml"); after != before {
			t.Error("a post without the CSRF token changed appliance.yaml")
		}
	})

	step(t, "a service's logs: the tail, then followed as lines come", func(t *testing.T) {
		run(t, 30*time.Second, chromedp.Navigate(base+"/logs?service=maps-api&lines=50"), chromedp.WaitVisible(chromedp.ID("log")))
		if s := pageText(t, "#log"); !strings.Contains(s, "image=") {
			t.Errorf("maps-api's log tail does not show its start line:\n%s", s)
		}
		run(t, 10*time.Second, chromedp.Click(chromedp.ID("follow")))
		ip := mapsAPI(t)
		// The stand-in logs every request but /health: a request with
		// a path of its own is a line that comes after the page.
		marker := fmt.Sprintf("/followed-by-the-console-%d", time.Now().UnixNano())
		waitPage(t, time.Minute, "#log", func(s string) error {
			node.Exec(ctx, "curl", "-s", "-o", "/dev/null", "--max-time", "3", "http://"+ip+":3000"+marker)
			if !strings.Contains(s, marker) {
				return fmt.Errorf("the followed log does not show %s yet", marker)
			}
			return nil
		})
		shot(t, "logs")
		run(t, 10*time.Second, chromedp.Click(chromedp.ID("follow"))) // stop following
	})

	step(t, "a support bundle downloads", func(t *testing.T) {
		run(t, 30*time.Second, chromedp.Navigate(base+"/"), chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.Call(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
				Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads,
			})
			return err
		}), chromedp.WaitVisible(chromedp.CSS(`a[href="/support-bundle"]`)), chromedp.Click(chromedp.CSS(`a[href="/support-bundle"]`)))
		eventually(t, 3*time.Minute, func() error {
			files, _ := filepath.Glob(filepath.Join(downloads, "carto-support-*.tar.gz"))
			if len(files) != 1 {
				return fmt.Errorf("downloaded: %v", files)
			}
			names, raw, err := readTarGz(files[0])
			if err != nil {
				return fmt.Errorf("%s is not a whole .tar.gz yet: %v", files[0], err)
			}
			has := func(name string) bool {
				return slices.ContainsFunc(names, func(n string) bool { return strings.HasSuffix(n, "/"+name) })
			}
			if !has("MANIFEST") || !has("status.json") || !has("logs/maps-api.log") {
				return fmt.Errorf("the bundle holds %v, no MANIFEST, status.json or maps-api's log", names)
			}
			// What the console's password hash would give away, and the
			// bundle carries appliance.yaml.
			cfg := node.MustExec(t, "cat", "/opt/carto/appliance.yaml")
			if i := strings.Index(cfg, "password_hash: "); i < 0 {
				t.Fatalf("no console.password_hash in appliance.yaml:\n%s", cfg)
			} else if hash := strings.Fields(cfg[i:])[1]; bytes.Contains(raw, []byte(hash)) {
				t.Fatal("the downloaded support bundle holds the console's password hash")
			}
			return nil
		})
	})

	step(t, "an upgrade runs from the page, its steps shown as they go", func(t *testing.T) {
		run(t, 60*time.Second, chromedp.Navigate(base+"/upgrade"), chromedp.WaitVisible(chromedp.ID("to")))
		if s := pageText(t, "main"); !strings.Contains(s, testbed.NextVersion) {
			t.Errorf("the upgrade page does not offer %s:\n%s", testbed.NextVersion, s)
		}
		run(t, 30*time.Second, chromedp.SetValue(chromedp.ID("to"), testbed.NextVersion), chromedp.Submit(chromedp.ID("to")),
			chromedp.WaitVisible(chromedp.ID("upgrade-steps")))
		eval(t, `window.__notReloaded = true; "set"`)
		first := pageText(t, "#upgrade-steps")
		// The steps arrive by server-sent events as the agent runs them,
		// into the page the POST led to.
		waitPage(t, 5*time.Minute, "#upgrade-run", func(s string) error {
			if !strings.Contains(s, "Finished") {
				return fmt.Errorf("the upgrade has not finished on the page: %q", s)
			}
			return nil
		})
		steps := pageText(t, "#upgrade-steps")
		for _, want := range []string{"stage", "pull", "backup", "converge", "verify"} {
			if !strings.Contains(steps, want) {
				t.Errorf("step %s not shown: %q", want, steps)
			}
		}
		if strings.Count(steps, "\n") <= strings.Count(first, "\n") {
			t.Errorf("no step arrived after the page opened (at first %q, at the end %q)", first, steps)
		}
		if same := eval(t, `String(window.__notReloaded === true)`); same != "true" {
			t.Error("the page was reloaded")
		}
		if v := pageText(t, "#installed"); v != testbed.NextVersion {
			t.Errorf("the page says %q is installed after the upgrade, want %s", v, testbed.NextVersion)
		}
		shot(t, "upgrade")
		eventually(t, 5*time.Minute, func() error {
			if st := vmStatus(t, node); st.Version != testbed.NextVersion || !st.Healthy {
				return fmt.Errorf("installed %s, healthy %v", st.Version, st.Healthy)
			}
			return nil
		})
	})
}

// pageDump is where the browser is and what it shows, for a failed step:
// the location and the page's text, and a screenshot kept with the others.
func pageDump(bctx context.Context, name string) string {
	c, cancel := context.WithTimeout(bctx, 15*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(c, chromedp.Location())
	text, _ := chromedp.Run(c, chromedp.Evaluate[string](`document.body ? document.body.innerText : document.documentElement.outerHTML`))
	shotPath := filepath.Join(screenshotDir, "console-failed-"+strings.NewReplacer("/", "-", " ", "_").Replace(name)+".png")
	if png, err := chromedp.Run(c, chromedp.FullScreenshot(100)); err == nil {
		_ = os.WriteFile(shotPath, png, 0o644)
	}
	if len(text) > 4000 {
		text = text[:4000] + "..."
	}
	return fmt.Sprintf("the browser is at %s (screenshot %s), showing:\n%s", loc, shotPath, text)
}

// readTarGz lists the entries of a .tar.gz file and gives its
// uncompressed bytes; an error for a file that is not one whole.
func readTarGz(file string) (names []string, raw []byte, err error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, nil, err
	}
	if raw, err = io.ReadAll(zr); err != nil {
		return nil, nil, err
	}
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names, raw, nil
		}
		if err != nil {
			return nil, nil, err
		}
		names = append(names, h.Name)
	}
}
