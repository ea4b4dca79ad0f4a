package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"
	"golang.org/x/sync/errgroup"
)

// PullPolicy says when Apply pulls an image.
type PullPolicy string

const (
	PullMissing PullPolicy = "missing" // default: only images not present locally
	PullAlways  PullPolicy = "always"  // every image, e.g. to pick up a re-pushed tag
	PullNever   PullPolicy = "never"   // fail if an image is missing (air-gapped, preloaded)
)

// RegistryAuth holds the credentials for the registry the stack's images
// come from: for CARTO's registry the user is "_json_key" and the password
// the customer package's key.json.
type RegistryAuth struct {
	Registry string // host[:port] the credentials are for
	Username string
	Password string
	Source   string // where the credentials came from (e.g. the key.json path), for errors
}

// PullOptions configures Pull.
type PullOptions struct {
	Policy   PullPolicy
	Auth     *RegistryAuth
	Progress io.Writer // receives the pulls' JSON-message stream (jsonmessage renders it); nil discards
	Reporter Reporter
	// Parallel is how many images are pulled at once; 0 means 4.
	Parallel int
}

// ErrUnauthorized is wrapped by pull errors the registry refused for the
// credentials given.
var ErrUnauthorized = errors.New("unauthorized")

// pullRetries is the backoff between pull attempts: registries and proxies
// drop connections under load, and a first install must not fail for one
// reset. Authentication and missing-image errors are not retried.
var pullRetries = []time.Duration{2 * time.Second, 5 * time.Second}

// Pull makes every image of the project present locally, per the policy,
// pulling in parallel. It returns once all are present or the first error.
func (e *Engine) Pull(ctx context.Context, p *types.Project, opts PullOptions) error {
	rep := reporterOrDiscard(opts.Reporter)
	policy := opts.Policy
	if policy == "" {
		policy = PullMissing
	}
	images := map[string]bool{}
	for _, s := range p.Services {
		images[s.Image] = true
	}
	refs := make([]string, 0, len(images))
	for ref := range images {
		refs = append(refs, ref)
	}
	sort.Strings(refs)

	var mu sync.Mutex // serialises writes to opts.Progress
	progress := func(m jsonstream.Message) {
		if opts.Progress == nil {
			return
		}
		b, _ := json.Marshal(m)
		mu.Lock()
		defer mu.Unlock()
		opts.Progress.Write(append(b, '\n'))
	}

	g, gctx := errgroup.WithContext(ctx)
	limit := opts.Parallel
	if limit <= 0 {
		limit = 4
	}
	g.SetLimit(limit)
	for _, ref := range refs {
		g.Go(func() error {
			if policy != PullAlways {
				_, err := e.api.ImageInspect(gctx, ref)
				if err == nil {
					return nil
				}
				if !cerrdefs.IsNotFound(err) {
					return fmt.Errorf("inspecting image %s: %w", ref, err)
				}
				if policy == PullNever {
					return fmt.Errorf("image %s is not present and the pull policy is %q: load it first (docker load) or allow pulls", ref, policy)
				}
			}
			rep.Report(Event{Service: ref, Action: ActionPulling})
			if err := e.pullWithRetries(gctx, ref, opts.Auth, progress); err != nil {
				return err
			}
			rep.Report(Event{Service: ref, Action: ActionPulled})
			return nil
		})
	}
	return g.Wait()
}

func (e *Engine) pullWithRetries(ctx context.Context, ref string, auth *RegistryAuth, progress func(jsonstream.Message)) error {
	for attempt := 0; ; attempt++ {
		err := e.pullOnce(ctx, ref, auth, progress)
		if err == nil || errors.Is(err, ErrUnauthorized) || cerrdefs.IsNotFound(err) || attempt >= len(pullRetries) || ctx.Err() != nil {
			return err
		}
		progress(jsonstream.Message{Status: fmt.Sprintf("Retrying %s after: %v", ref, err)})
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pullRetries[attempt]):
		}
	}
}

func (e *Engine) pullOnce(ctx context.Context, ref string, auth *RegistryAuth, progress func(jsonstream.Message)) error {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return fmt.Errorf("image reference %q: %w", ref, err)
	}
	var opts client.ImagePullOptions
	useAuth := auth != nil && reference.Domain(named) == auth.Registry
	if useAuth {
		enc, err := encodeAuth(auth)
		if err != nil {
			return err
		}
		opts.RegistryAuth = enc
	}
	resp, err := e.api.ImagePull(ctx, ref, opts)
	if err != nil {
		return e.pullError(ref, named, auth, useAuth, err)
	}
	defer resp.Close()
	// ImagePull succeeds even when the pull fails: the failure comes inside
	// the stream, so every message is read and checked.
	for m, err := range resp.JSONMessages(ctx) {
		if err != nil {
			return e.pullError(ref, named, auth, useAuth, err)
		}
		if m.Error != nil {
			return e.pullError(ref, named, auth, useAuth, errors.New(m.Error.Message))
		}
		if m.ID == "" || m.ID == named.Name() || strings.Contains(m.Status, "Pulling from") {
			m.ID = ref
		}
		progress(m)
	}
	return nil
}

func (e *Engine) pullError(ref string, named reference.Named, auth *RegistryAuth, useAuth bool, err error) error {
	msg := strings.ToLower(err.Error())
	if cerrdefs.IsUnauthorized(err) || strings.Contains(msg, "unauthorized") || strings.Contains(msg, "authentication required") || strings.Contains(msg, "denied") {
		host := reference.Domain(named)
		if useAuth {
			return fmt.Errorf("pulling %s: registry %s refused the credentials from %s (%w): use the key.json of your customer package; the engine said: %v", ref, host, auth.Source, ErrUnauthorized, err)
		}
		return fmt.Errorf("pulling %s: registry %s wants credentials (%w), and the key.json is for %q: check the registry setting; the engine said: %v", ref, host, ErrUnauthorized, registryOf(auth), err)
	}
	if unreachable(msg) {
		// An air-gapped node has no route to any registry: what it
		// lacks comes from the release's bundle.
		return fmt.Errorf("pulling %s: %w (the registry %s cannot be reached; on a node without internet, load the release's images from its air-gap bundle first: carto-appliance bundle load FILE)", ref, err, reference.Domain(named))
	}
	return fmt.Errorf("pulling %s: %w", ref, err)
}

// unreachable says whether a pull's error is the network's, not the
// registry's answer.
func unreachable(msg string) bool {
	for _, s := range []string{"dial tcp", "no such host", "i/o timeout", "connection refused", "network is unreachable", "no route to host", "tls handshake timeout", "proxyconnect"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

func registryOf(auth *RegistryAuth) string {
	if auth == nil {
		return ""
	}
	return auth.Registry
}

func encodeAuth(a *RegistryAuth) (string, error) {
	enc, err := authconfig.Encode(registry.AuthConfig{Username: a.Username, Password: a.Password, ServerAddress: a.Registry})
	if err != nil {
		return "", fmt.Errorf("encoding registry credentials: %w", err)
	}
	return enc, nil
}
