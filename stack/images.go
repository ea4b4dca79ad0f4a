package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"
)

// LoadImage loads an image file as `docker save` writes it (r) through
// the Engine API, unless the engine already has the image id, and tags
// the image as each of refs (the references the compose file names, so
// that no pull is needed). The load's progress goes to progress as JSON
// lines, as a pull's does. It reports whether it loaded the file. A file
// that holds another image than id is refused: what it loaded is removed
// when nothing else uses it. Air-gap installs load their bundle's images
// so.
func (e *Engine) LoadImage(ctx context.Context, r io.Reader, id string, refs []string, progress io.Writer) (loaded bool, err error) {
	if _, err := e.api.ImageInspect(ctx, id); err == nil {
		return false, e.tagImage(ctx, id, refs)
	} else if !cerrdefs.IsNotFound(err) {
		return false, fmt.Errorf("inspecting image %s: %w", id, err)
	}
	resp, err := e.api.ImageLoad(ctx, r, client.ImageLoadWithQuiet(false))
	if err != nil {
		return false, fmt.Errorf("loading image %s: %w", id, err)
	}
	defer resp.Close()
	// The load's outcome is in its stream: every message is read.
	var got []string
	dec := json.NewDecoder(resp)
	for {
		var m jsonstream.Message
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return false, fmt.Errorf("loading image %s: reading the engine's answer: %w", id, err)
		}
		if m.Error != nil {
			return false, fmt.Errorf("loading image %s: the engine says: %s", id, m.Error.Message)
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(m.Stream), "Loaded image ID: "); ok {
			got = append(got, v)
		}
		if progress != nil {
			if b, err := json.Marshal(m); err == nil {
				progress.Write(append(b, '\n'))
			}
		}
	}
	if _, err := e.api.ImageInspect(ctx, id); err != nil {
		for _, other := range got {
			// Not forced: an image a container or a tag uses stays.
			e.api.ImageRemove(ctx, other, client.ImageRemoveOptions{})
		}
		return true, fmt.Errorf("the image file held %v, not image %s: the bundle is not the one the release team built; get it again from them", got, id)
	}
	return true, e.tagImage(ctx, id, refs)
}

func (e *Engine) tagImage(ctx context.Context, id string, refs []string) error {
	for _, ref := range refs {
		if _, err := e.api.ImageTag(ctx, client.ImageTagOptions{Source: id, Target: ref}); err != nil {
			return fmt.Errorf("tagging image %s as %s: %w", id, ref, err)
		}
	}
	return nil
}

// ImageID is the ID of the image ref names; "" when the engine has none.
func (e *Engine) ImageID(ctx context.Context, ref string) (string, error) {
	res, err := e.api.ImageInspect(ctx, ref)
	if cerrdefs.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("inspecting image %s: %w", ref, err)
	}
	return res.ID, nil
}

// UntagImage removes ref, a tag; the image stays while another tag or a
// container uses it.
func (e *Engine) UntagImage(ctx context.Context, ref string) error {
	_, err := e.api.ImageRemove(ctx, ref, client.ImageRemoveOptions{})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("removing the tag %s: %w", ref, err)
	}
	return nil
}

// SaveImage pulls ref (pinned by digest: <repo>@sha256:…) unless the
// engine has it, and writes the image as `docker save` does, by ID (no
// tag in the file: the loader tags it as the node's compose file names
// it), to w; it returns the image's ID. Release-team tooling: the air-gap
// bundle's images.
func (e *Engine) SaveImage(ctx context.Context, ref string, auth *RegistryAuth, w io.Writer) (string, error) {
	if _, err := e.api.ImageInspect(ctx, ref); cerrdefs.IsNotFound(err) {
		if err := e.pullWithRetries(ctx, ref, auth, func(jsonstream.Message) {}); err != nil {
			return "", err
		}
	} else if err != nil {
		return "", fmt.Errorf("inspecting image %s: %w", ref, err)
	}
	res, err := e.api.ImageInspect(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("inspecting image %s: %w", ref, err)
	}
	rc, err := e.api.ImageSave(ctx, []string{res.ID})
	if err != nil {
		return "", fmt.Errorf("saving image %s: %w", ref, err)
	}
	defer rc.Close()
	if _, err := io.Copy(w, rc); err != nil {
		return "", fmt.Errorf("saving image %s: %w", ref, err)
	}
	return res.ID, nil
}
