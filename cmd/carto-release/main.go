// carto-release is the release team's tooling for CARTO releases (SPEC §9),
// not part of the appliance: it makes release signing key pairs and
// publishes signed releases into a channel directory that a static HTTPS
// server hosts (the layout is in the release package's channel.go).
//
//	carto-release keygen -name carto-release-2027 -out DIR
//	    writes DIR/carto-release-2027.key (the private key, 0600; never
//	    overwrites one) and prints the public key line for
//	    release/keys.go: productionKeys
//	carto-release publish -key DIR/carto-release-2027.key -from RELEASE_DIR \
//	        -channel-dir ROOT [-channel stable] [-allow-test-key]
//	    signs the release in RELEASE_DIR (manifest.yaml, docker-compose.yml,
//	    env.tpl; every image pinned in image_digests), writes it to
//	    ROOT/CHANNEL/VERSION/ and lists it in ROOT/CHANNEL/index.json,
//	    re-signed. A version already published with other content is
//	    refused; the tests' key is refused without -allow-test-key.
//	carto-release publish-appliance -key DIR/carto-release-2027.key \
//	        -version 1.4.0 -channel-dir ROOT [-channel stable] [-allow-test-key] \
//	        carto-appliance_linux_amd64 carto-appliance_linux_arm64
//	    publishes carto-appliance binaries (release.sh's, named
//	    carto-appliance_<os>_<arch>) for nodes to update themselves to when a
//	    release needs a newer appliance (min_appliance_version): writes them
//	    to ROOT/CHANNEL/appliance/VERSION/ and lists them, with their sha256,
//	    in the re-signed index.
package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cartodb/carto-appliance/internal/boundedread"
	"github.com/cartodb/carto-appliance/internal/keyfile"
	"github.com/cartodb/carto-appliance/release"
	"github.com/cartodb/carto-appliance/release/releasetest"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, time.Now); err != nil {
		fmt.Fprintln(os.Stderr, "carto-release:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer, now func() time.Time) error {
	if len(args) == 0 {
		return errors.New("usage: carto-release keygen|publish|publish-appliance [flags]")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	switch args[0] {
	case "keygen":
		name := fs.String("name", "", "the key's name, e.g. carto-release-2027")
		out := fs.String("out", ".", "directory for NAME.key")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return keygen(*name, *out, stdout)
	case "publish":
		keyFile := fs.String("key", "", "a key file from keygen")
		from := fs.String("from", "", "the release's directory: manifest.yaml, docker-compose.yml, env.tpl")
		root := fs.String("channel-dir", "", "the channels' root directory (what the HTTPS server hosts)")
		channel := fs.String("channel", "stable", "the channel to publish in")
		allowTest := fs.Bool("allow-test-key", false, "allow the tests' release key (test channels only)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *keyFile == "" || *from == "" || *root == "" {
			return errors.New("publish: -key, -from and -channel-dir are required")
		}
		return publish(*keyFile, *from, *root, *channel, *allowTest, stdout, now())
	case "publish-appliance":
		keyFile := fs.String("key", "", "a key file from keygen")
		version := fs.String("version", "", "the binaries' carto-appliance version, e.g. 1.4.0")
		root := fs.String("channel-dir", "", "the channels' root directory (what the HTTPS server hosts)")
		channel := fs.String("channel", "stable", "the channel to publish in")
		allowTest := fs.Bool("allow-test-key", false, "allow the tests' release key (test channels only)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *keyFile == "" || *version == "" || *root == "" || fs.NArg() == 0 {
			return errors.New("publish-appliance: -key, -version, -channel-dir and at least one binary (carto-appliance_<os>_<arch>) are required")
		}
		return publishAppliance(*keyFile, *version, *root, *channel, fs.Args(), *allowTest, stdout, now())
	}
	return fmt.Errorf("unknown command %q: keygen, publish or publish-appliance", args[0])
}

func keygen(name, out string, stdout io.Writer) error {
	if !keyfile.ValidName(name) {
		return errors.New("keygen: -name is required: letters, digits and '-', e.g. carto-release-2027")
	}
	pub, path, err := keyfile.Generate(out, name)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "// release/keys.go, productionKeys (the private key is %s: keep it offline):\n\t%q: mustKey(%q),\n", path, name, base64.StdEncoding.EncodeToString(pub))
	return err
}

func publish(keyFile, from, root, channel string, allowTest bool, stdout io.Writer, now time.Time) error {
	name, key, err := signingKey(keyFile, allowTest)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	r, err := release.LoadDir(from, "")
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	e, err := release.Publish(root, channel, r, name, key, now)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	fmt.Fprintf(stdout, "published CARTO %s in channel %s (%s), digest %s, signed with %s\n", e.Version, channel, filepath.Join(root, channel), e.Digest, name)
	return warnUntrusted(root, channel, name, stdout)
}

// publishAppliance publishes carto-appliance binaries, each file named
// carto-appliance_<os>_<arch> as release.sh names them.
func publishAppliance(keyFile, version, root, channel string, files []string, allowTest bool, stdout io.Writer, now time.Time) error {
	name, key, err := signingKey(keyFile, allowTest)
	if err != nil {
		return fmt.Errorf("publish-appliance: %w", err)
	}
	bins := map[string][]byte{}
	for _, f := range files {
		platform, ok := strings.CutPrefix(filepath.Base(f), "carto-appliance_")
		if !ok || release.ParsePlatform(platform) != nil {
			return fmt.Errorf("publish-appliance: %s: a binary is named carto-appliance_<os>_<arch> (as release.sh builds it), e.g. carto-appliance_linux_amd64", f)
		}
		if _, dup := bins[platform]; dup {
			return fmt.Errorf("publish-appliance: two binaries for %s", platform)
		}
		b, err := boundedread.ReadFile(f, release.MaxApplianceBinary)
		if err != nil {
			return fmt.Errorf("publish-appliance: %w", err)
		}
		bins[platform] = b
	}
	e, err := release.PublishAppliance(root, channel, version, bins, name, key, now)
	if err != nil {
		return fmt.Errorf("publish-appliance: %w", err)
	}
	fmt.Fprintf(stdout, "published carto-appliance %s for %s in channel %s (%s), signed with %s\n", e.Version, strings.Join(slices.Sorted(maps.Keys(e.Binaries)), ", "), channel, filepath.Join(root, channel), name)
	return warnUntrusted(root, channel, name, stdout)
}

// signingKey reads a key file, refusing the tests' key unless allowed.
func signingKey(keyFile string, allowTest bool) (string, ed25519.PrivateKey, error) {
	name, key, err := readKey(keyFile)
	if err != nil {
		return "", nil, err
	}
	if !allowTest && (name == releasetest.KeyName || key.Equal(releasetest.Key)) {
		return "", nil, fmt.Errorf("-key %s is the tests' release key, which only test builds trust: use a release key (or -allow-test-key for a test channel)", keyFile)
	}
	return name, key, nil
}

// warnUntrusted says when the index was signed with a key not compiled
// into this build (new, or not yet in release/keys.go): appliances built
// like it refuse the channel.
func warnUntrusted(root, channel, name string, stdout io.Writer) error {
	sig, err1 := os.ReadFile(filepath.Join(root, channel, release.IndexSigFile))
	idx, err2 := os.ReadFile(filepath.Join(root, channel, release.IndexFile))
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("reading back the index: %w", err)
	}
	if err := release.VerifyIndex(idx, sig); err != nil {
		fmt.Fprintf(stdout, "warning: this carto-release does not trust key %s (%v): appliances built like it will refuse the channel until its public key is in release/keys.go\n", name, err)
	}
	return nil
}

// readKey reads a key file from keygen: its name and private key.
func readKey(path string) (string, ed25519.PrivateKey, error) {
	name, key, err := keyfile.Read(path)
	if err != nil {
		return "", nil, fmt.Errorf("-key: %w", err)
	}
	return name, key, nil
}
