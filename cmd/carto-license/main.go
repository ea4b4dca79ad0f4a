// carto-license is the release team's and the licence server team's
// tooling (SPEC §8), not part of the appliance: it makes signing key
// pairs, signs licences, and signs licence server answers.
//
//	carto-license keygen -name carto-2027 -out DIR [-server]
//	    writes DIR/carto-2027.key (the private key, 0600) and prints the
//	    public key line for license/keys.go: productionKeys for a licence
//	    key, productionAnswerKeys with -server (the licence server's key;
//	    never use one key for both)
//	carto-license sign -key DIR/carto-2027.key -in license.json > signed.json
//	    signs the licence fields in license.json (license.License as JSON)
//	carto-license answer -key DIR/server.key -status valid|revoked [-in request.json]
//	    the licence server's signed answer (the response body) to the
//	    appliance's request (license.Request as JSON; stdin without -in),
//	    dated now: the wire format is in the license package's doc, and a
//	    server written in Go calls license.SignAnswer itself
package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cartodb/carto-appliance/internal/boundedread"
	"github.com/cartodb/carto-appliance/internal/keyfile"
	"github.com/cartodb/carto-appliance/license"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "carto-license:", err)
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: carto-license keygen|sign|answer [flags]")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	switch args[0] {
	case "keygen":
		name := fs.String("name", "", "the key's name, e.g. carto-2027")
		out := fs.String("out", ".", "directory for NAME.key")
		server := fs.Bool("server", false, "a licence server key (signs answers), not a licence key")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if !keyfile.ValidName(*name) {
			return errors.New("keygen: -name is required (letters, digits, '-')")
		}
		pub, _, err := keyfile.Generate(*out, *name)
		if err != nil {
			return fmt.Errorf("keygen: %w", err)
		}
		where := "productionKeys"
		if *server {
			where = "productionAnswerKeys"
		}
		fmt.Fprintf(stdout, "// license/keys.go, %s:\n\t%q: mustKey(%q),\n", where, *name, base64.StdEncoding.EncodeToString(pub))
		return nil
	case "sign":
		keyFile := fs.String("key", "", "a key file from keygen")
		in := fs.String("in", "", "the licence's fields as JSON")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		name, key, err := readKey(*keyFile)
		if err != nil {
			return fmt.Errorf("sign: %w", err)
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
		signed, err := license.Sign(l, name, key)
		if err != nil {
			return fmt.Errorf("sign: %w", err)
		}
		_, err = stdout.Write(signed)
		return err
	case "answer":
		keyFile := fs.String("key", "", "the licence server's key file from keygen -server")
		status := fs.String("status", "", "valid or revoked")
		in := fs.String("in", "", "the appliance's request as JSON (default: stdin)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		name, key, err := readKey(*keyFile)
		if err != nil {
			return fmt.Errorf("answer: %w", err)
		}
		var body []byte
		if *in == "" {
			body, err = io.ReadAll(io.LimitReader(stdin, 1<<16))
		} else {
			body, err = os.ReadFile(*in)
		}
		if err != nil {
			return fmt.Errorf("answer: reading the request: %w", err)
		}
		var req license.Request
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil || req.ID == "" || req.Nonce == "" {
			return fmt.Errorf("answer: the request is not an appliance's licence check (id, tenant_id, nonce): %v", err)
		}
		signed, err := license.SignAnswer(license.Answer{ID: req.ID, Status: *status, Time: time.Now().UTC(), Nonce: req.Nonce}, name, key)
		if err != nil {
			return fmt.Errorf("answer: %w", err)
		}
		_, err = stdout.Write(append(signed, '\n'))
		return err
	}
	return fmt.Errorf("unknown command %q: keygen, sign or answer", args[0])
}

// readKey reads a key file from keygen: its name and private key.
func readKey(path string) (string, ed25519.PrivateKey, error) {
	name, key, err := keyfile.Read(path)
	if err != nil {
		return "", nil, fmt.Errorf("-key: %w", err)
	}
	return name, key, nil
}
