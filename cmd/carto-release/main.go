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
//	carto-release bundle -key DIR/carto-release-2027.key -from RELEASE_DIR \
//	        -registry HOST/PATH [-registry-key key.json] -o FILE [-gzip] \
//	        [-appliance-version V carto-appliance_linux_amd64 ...]
//	    writes the air-gap bundle of the release in RELEASE_DIR: the signed
//	    release and every image it pins, saved from the Docker engine
//	    (pulled from HOST/PATH/<name>@<digest> when missing, with the
//	    customer package's key.json when given), and optionally
//	    carto-appliance binaries; its index signed with the key.
package main

import (
	"context"
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
	"github.com/cartodb/carto-appliance/release/bundler"
	"github.com/cartodb/carto-appliance/release/releasetest"
	"github.com/cartodb/carto-appliance/stack"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, time.Now); err != nil {
		fmt.Fprintln(os.Stderr, "carto-release:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer, now func() time.Time) error {
	if len(args) == 0 {
		return errors.New("usage: carto-release keygen|publish|publish-appliance|bundle [flags]")
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
	case "bundle":
		keyFile := fs.String("key", "", "a key file from keygen")
		from := fs.String("from", "", "the release's directory: manifest.yaml (every image pinned), docker-compose.yml, env.tpl")
		registry := fs.String("registry", "", "where the images are pulled from when the engine lacks them: HOST/PATH")
		registryKey := fs.String("registry-key", "", "the key.json the registry takes as the password of _json_key")
		out := fs.String("o", "", "the bundle file to write")
		gz := fs.Bool("gzip", false, "compress the bundle (gzip)")
		applianceVersion := fs.String("appliance-version", "", "the version of the carto-appliance binaries given as arguments")
		allowTest := fs.Bool("allow-test-key", false, "allow the tests' release key (test bundles only)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *keyFile == "" || *from == "" || *registry == "" || *out == "" {
			return errors.New("bundle: -key, -from, -registry and -o are required")
		}
		if (fs.NArg() > 0) != (*applianceVersion != "") {
			return errors.New("bundle: carto-appliance binaries and -appliance-version go together")
		}
		return bundle(context.Background(), *keyFile, *from, *registry, *registryKey, *out, *gz, *applianceVersion, fs.Args(), *allowTest, stdout, now())
	}
	return fmt.Errorf("unknown command %q: keygen, publish, publish-appliance or bundle", args[0])
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
	bins, err := readBinaries(files)
	if err != nil {
		return fmt.Errorf("publish-appliance: %w", err)
	}
	e, err := release.PublishAppliance(root, channel, version, bins, name, key, now)
	if err != nil {
		return fmt.Errorf("publish-appliance: %w", err)
	}
	fmt.Fprintf(stdout, "published carto-appliance %s for %s in channel %s (%s), signed with %s\n", e.Version, strings.Join(slices.Sorted(maps.Keys(e.Binaries)), ", "), channel, filepath.Join(root, channel), name)
	return warnUntrusted(root, channel, name, stdout)
}

// bundle writes the air-gap bundle of the release in from.
func bundle(ctx context.Context, keyFile, from, registry, registryKey, out string, gz bool, applianceVersion string, files []string, allowTest bool, stdout io.Writer, now time.Time) error {
	name, key, err := signingKey(keyFile, allowTest)
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	r, err := release.LoadDir(from, "")
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	bins, err := readBinaries(files)
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	var auth *stack.RegistryAuth
	if registryKey != "" {
		b, err := boundedread.ReadFile(registryKey, boundedread.KeyJSON)
		if err != nil {
			return fmt.Errorf("bundle: -registry-key: %w", err)
		}
		host, _, _ := strings.Cut(registry, "/")
		auth = &stack.RegistryAuth{Registry: host, Username: "_json_key", Password: string(b), Source: registryKey}
	}
	eng, err := stack.Connect(ctx)
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	defer eng.Close()
	err = bundler.Build(ctx, eng, bundler.Options{Release: r, Registry: strings.TrimSuffix(registry, "/"), Auth: auth, ApplianceVersion: applianceVersion, Appliances: bins,
		KeyName: name, Key: key, Gzip: gz, Out: out, Now: now})
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	fi, err := os.Stat(out)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "wrote the air-gap bundle of CARTO %s (%d images) to %s, %d MiB, signed with %s\n", r.Manifest.Version, len(r.Manifest.Images), out, fi.Size()>>20, name)
	return err
}

// readBinaries reads carto-appliance binaries named as release.sh names
// them (carto-appliance_<os>_<arch>), by platform.
func readBinaries(files []string) (map[string][]byte, error) {
	bins := map[string][]byte{}
	for _, f := range files {
		platform, ok := strings.CutPrefix(filepath.Base(f), "carto-appliance_")
		if !ok || release.ParsePlatform(platform) != nil {
			return nil, fmt.Errorf("%s: a binary is named carto-appliance_<os>_<arch> (as release.sh builds it), e.g. carto-appliance_linux_amd64", f)
		}
		if _, dup := bins[platform]; dup {
			return nil, fmt.Errorf("two binaries for %s", platform)
		}
		b, err := boundedread.ReadFile(f, release.MaxApplianceBinary)
		if err != nil {
			return nil, err
		}
		bins[platform] = b
	}
	return bins, nil
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
