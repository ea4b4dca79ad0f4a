// carto-license is the release team's licence tooling (SPEC §8), not part
// of the appliance: it makes signing key pairs and signs licences.
//
//	carto-license keygen -name carto-2027 -out DIR
//	    writes DIR/carto-2027.key (the private key, 0600) and prints the
//	    public key line for license/keys.go
//	carto-license sign -key DIR/carto-2027.key -in license.json > signed.json
//	    signs the licence fields in license.json (license.License as JSON)
package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cartodb/carto-appliance/internal/boundedread"
	"github.com/cartodb/carto-appliance/license"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "carto-license:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: carto-license keygen|sign [flags]")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	switch args[0] {
	case "keygen":
		name := fs.String("name", "", "the key's name, e.g. carto-2027")
		out := fs.String("out", ".", "directory for NAME.key")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *name == "" || strings.ContainsAny(*name, "/ ") {
			return errors.New("keygen: -name is required (letters, digits, '-')")
		}
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		path := filepath.Join(*out, *name+".key")
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("keygen: %w (an existing key is never overwritten)", err)
		}
		fmt.Fprintf(f, "%s %s\n", *name, base64.StdEncoding.EncodeToString(priv.Seed()))
		if err := f.Close(); err != nil {
			return err
		}
		fmt.Printf("\t%q: mustKey(%q),\n", *name, base64.StdEncoding.EncodeToString(pub))
		return nil
	case "sign":
		keyFile := fs.String("key", "", "a key file from keygen")
		in := fs.String("in", "", "the licence's fields as JSON")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		b, err := boundedread.ReadFile(*keyFile, boundedread.KeyJSON)
		if err != nil {
			return fmt.Errorf("sign: -key: %w", err)
		}
		name, seed64, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
		seed, err := base64.StdEncoding.DecodeString(seed64)
		if !ok || err != nil || len(seed) != ed25519.SeedSize {
			return fmt.Errorf("sign: -key %s is not a key file from keygen", *keyFile)
		}
		fields, err := boundedread.ReadFile(*in, boundedread.License)
		if err != nil {
			return fmt.Errorf("sign: -in: %w", err)
		}
		var l license.License
		dec := json.NewDecoder(strings.NewReader(string(fields)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			return fmt.Errorf("sign: -in %s: %w", *in, err)
		}
		signed, err := license.Sign(l, name, ed25519.NewKeyFromSeed(seed))
		if err != nil {
			return fmt.Errorf("sign: %w", err)
		}
		_, err = os.Stdout.Write(signed)
		return err
	}
	return fmt.Errorf("unknown command %q: keygen or sign", args[0])
}
