package testbed

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// pushParallel bounds concurrent pushes: the engine uploads layers of each
// push in parallel already; more would only contend for the registry.
const pushParallel = 4

// PushRelease pushes every image name of a release (the manifest's images,
// e.g. templates.Default().Manifest.Images) as <Host>/<name>:<version>,
// authenticating with KeyJSONPath. Each is images.For(name) with
// STANDIN_IMAGE=name and STANDIN_VERSION=version added, built once and
// cached under carto-testbed/release/<name>:<hash>; so two versions are
// two different images, as in a real release.
func (r *Registry) PushRelease(ctx context.Context, cli *client.Client, images Images, version string, names []string) error {
	return r.pushRelease(ctx, cli, images, version, names, nil)
}

// pushRelease is PushRelease with environment variables baked into some
// images, by name.
func (r *Registry) pushRelease(ctx context.Context, cli *client.Client, images Images, version string, names []string, env map[string]map[string]string) error {
	// The engine does not share an upload between pushes to different
	// repositories (20.10 keys uploads by repository and layer), but a push
	// that comes after one with the same layer mounts it from that
	// repository instead of uploading it again. So the first image of each
	// local base goes alone, in turn (the Debian base layer is then uploaded
	// once, not three times), and the rest in parallel.
	var first, rest []string
	seen := map[string]bool{}
	for _, name := range names {
		ref, err := r.tagRelease(ctx, cli, images, name, version, env[name])
		if err != nil {
			return err
		}
		if base := images.For(name); !seen[base] {
			seen[base] = true
			first = append(first, ref)
		} else {
			rest = append(rest, ref)
		}
	}
	for _, ref := range first {
		if err := r.push(ctx, cli, ref); err != nil {
			return err
		}
	}

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		sem      = make(chan struct{}, pushParallel)
	)
	for _, ref := range rest {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := r.push(ctx, cli, ref); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return firstErr
}

// PushVariant pushes <Host>/<name>:<version> built like PushRelease's image
// for name plus env (for example {"STANDIN_FAIL": "exit"} for a version
// whose service fails to start), replacing what the registry had under that
// tag.
func (r *Registry) PushVariant(ctx context.Context, cli *client.Client, images Images, name, version string, env map[string]string) error {
	ref, err := r.tagRelease(ctx, cli, images, name, version, env)
	if err != nil {
		return err
	}
	return r.push(ctx, cli, ref)
}

// Pull pulls <Host>/<name>:<version> into the engine with the key.json at
// keyJSONPath, returning the failure the engine reports inside the pull's
// progress stream when there is one (401 for a wrong key).
func (r *Registry) Pull(ctx context.Context, cli *client.Client, name, version, keyJSONPath string) error {
	ref := r.Ref(name, version)
	auth, err := r.EncodedAuth(keyJSONPath)
	if err != nil {
		return err
	}
	resp, err := cli.ImagePull(ctx, ref, client.ImagePullOptions{RegistryAuth: auth})
	if err != nil {
		return fmt.Errorf("pulling %s: %w", ref, err)
	}
	defer resp.Close()
	if err := resp.Wait(ctx); err != nil {
		return fmt.Errorf("pulling %s: %w", ref, err)
	}
	return nil
}

// RemoveLocalTags removes the engine's references to this registry's
// images (<Host>/…), which pushes and pulls leave behind; the images stay
// under their carto-testbed/… names. References that a container still
// uses are kept. For a test's cleanup.
func (r *Registry) RemoveLocalTags(ctx context.Context, cli *client.Client) error {
	list, err := cli.ImageList(ctx, client.ImageListOptions{All: false})
	if err != nil {
		return fmt.Errorf("listing images: %w", err)
	}
	var errs []error
	for _, img := range list.Items {
		for _, tag := range img.RepoTags {
			if !strings.HasPrefix(tag, r.Host+"/") {
				continue
			}
			if _, err := cli.ImageRemove(ctx, tag, client.ImageRemoveOptions{}); err != nil && !cerrdefs.IsConflict(err) && !cerrdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("removing %s: %w", tag, err))
			}
		}
	}
	return errors.Join(errs...)
}

// tagRelease builds (or finds) the image for name at version with env and
// tags it as the registry's reference, which it returns.
func (r *Registry) tagRelease(ctx context.Context, cli *client.Client, images Images, name, version string, env map[string]string) (string, error) {
	base := images.For(name)
	if base == "" {
		return "", fmt.Errorf("no local image plays %q: run EnsureImages first", name)
	}
	all := map[string]string{"STANDIN_IMAGE": name, "STANDIN_VERSION": version}
	maps.Copy(all, env)
	dockerfile, err := releaseDockerfile(base, all)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", name, err)
	}
	bc := newBuildContext()
	if err := bc.file("Dockerfile", 0o644, dockerfile); err != nil {
		return "", err
	}
	tarCtx, err := bc.bytes()
	if err != nil {
		return "", err
	}
	local := "carto-testbed/release/" + name + ":" + contentTag(dockerfile)
	unlock, err := lockBuilds(ctx)
	if err != nil {
		return "", err
	}
	_, err = buildImage(ctx, cli, local, tarCtx, nil)
	unlock()
	if err != nil {
		return "", err
	}
	ref := r.Ref(name, version)
	if _, err := cli.ImageTag(ctx, client.ImageTagOptions{Source: local, Target: ref}); err != nil {
		return "", fmt.Errorf("tagging %s as %s: %w", local, ref, err)
	}
	return ref, nil
}

var envKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// releaseDockerfile is `FROM base` plus one ENV line with env, sorted.
func releaseDockerfile(base string, env map[string]string) ([]byte, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "FROM %s\nENV", base)
	for _, k := range slices.Sorted(maps.Keys(env)) {
		v := env[k]
		if !envKey.MatchString(k) {
			return nil, fmt.Errorf("environment variable name %q: want letters, digits and _", k)
		}
		if strings.ContainsAny(v, "\n\r") {
			return nil, fmt.Errorf("environment variable %s: a line break cannot be baked into an image", k)
		}
		// Inside double quotes a Dockerfile takes \ as the escape and
		// expands $VAR: escape both, and the quote.
		q := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `\$`).Replace(v)
		fmt.Fprintf(&b, " %s=\"%s\"", k, q)
	}
	b.WriteString("\n")
	return []byte(b.String()), nil
}

// push pushes ref with the right key and drains the progress stream: the
// engine answers 200 and reports a failed push only inside it.
func (r *Registry) push(ctx context.Context, cli *client.Client, ref string) error {
	auth, err := r.EncodedAuth(r.KeyJSONPath)
	if err != nil {
		return err
	}
	start := time.Now()
	resp, err := cli.ImagePush(ctx, ref, client.ImagePushOptions{RegistryAuth: auth})
	if err != nil {
		return fmt.Errorf("pushing %s: %w", ref, err)
	}
	defer resp.Close()
	if err := resp.Wait(ctx); err != nil {
		return fmt.Errorf("pushing %s: %w", ref, err)
	}
	if r.Logf != nil {
		r.Logf("pushed %s in %s", ref, time.Since(start).Round(100*time.Millisecond))
	}
	return nil
}
