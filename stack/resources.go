package stack

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// ServiceHash is compose's config hash of a service
// (github.com/docker/compose/v2/pkg/compose/hash.go): the JSON of the service
// config without the fields that do not change the container. It equals
// compose's only when computed from the same compose-go version compose was
// built with, which is why go.mod pins compose-go to compose v2.40's.
func ServiceHash(s types.ServiceConfig) (string, error) {
	s.Build = nil
	s.PullPolicy = ""
	s.Scale = nil
	if s.Deploy != nil {
		s.Deploy.Replicas = nil
	}
	s.DependsOn = nil
	s.Profiles = nil
	b, err := json.Marshal(s)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// ensureNetworks creates the project's networks that do not exist, labelled
// as compose labels them, and returns their IDs by compose key. The
// config-hash label is left out on purpose: compose tolerates its absence,
// while a value computed differently from compose's would make `docker
// compose up` tear the network (and so the stack) down to recreate it.
func (e *Engine) ensureNetworks(ctx context.Context, p *types.Project) (map[string]string, error) {
	ids := map[string]string{}
	for key, n := range p.Networks {
		if n.External {
			insp, err := e.api.NetworkInspect(ctx, n.Name, client.NetworkInspectOptions{})
			if err != nil {
				return nil, fmt.Errorf("external network %s: %w", n.Name, err)
			}
			ids[key] = insp.Network.ID
			continue
		}
		list, err := e.api.NetworkList(ctx, client.NetworkListOptions{Filters: make(client.Filters).Add("name", n.Name)})
		if err != nil {
			return nil, fmt.Errorf("listing networks: %w", err)
		}
		var same []network.Summary
		for _, have := range list.Items {
			if have.Name == n.Name {
				same = append(same, have)
			}
		}
		found := ""
		if len(same) > 0 {
			if found, err = e.oneNetwork(ctx, n.Name, same); err != nil {
				return nil, err
			}
		}
		if found == "" {
			driver := n.Driver
			if driver == "" {
				driver = "bridge"
			}
			res, err := e.api.NetworkCreate(ctx, n.Name, client.NetworkCreateOptions{
				Driver: driver, Options: n.DriverOpts, Internal: n.Internal, Attachable: n.Attachable,
				Labels: mergeLabels(n.Labels, map[string]string{
					labelNetwork: key, labelProject: p.Name, labelComposeVer: composeVersion,
				}),
			})
			if err != nil {
				return nil, fmt.Errorf("creating network %s: %w", n.Name, err)
			}
			found = res.ID
		}
		ids[key] = found
	}
	return ids, nil
}

// oneNetwork is the network of those named name to use. The engine lets
// two networks share a name (two creations racing, or a leftover beside
// one made again: moby/moby#20648), and then refuses to start a container
// on it as ambiguous: the empty ones go, keeping one in use, else the
// newest.
func (e *Engine) oneNetwork(ctx context.Context, name string, same []network.Summary) (string, error) {
	if len(same) == 1 {
		return same[0].ID, nil
	}
	keep, used := same[0], false
	for _, n := range same {
		insp, err := e.api.NetworkInspect(ctx, n.ID, client.NetworkInspectOptions{})
		if err != nil {
			return "", fmt.Errorf("inspecting network %s (%s): %w", name, n.ID, err)
		}
		inUse := len(insp.Network.Containers) > 0
		switch {
		case inUse && used:
			return "", fmt.Errorf("networks %s and %s are both named %s and both in use: the engine cannot tell them apart; stop the containers on one (docker network inspect) and remove it (docker network rm ID), then run the command again", shortID(keep.ID), shortID(n.ID), name)
		case inUse, !used && n.Created.After(keep.Created):
			keep, used = n, inUse
		}
	}
	for _, n := range same {
		if n.ID == keep.ID {
			continue
		}
		if _, err := e.api.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			return "", fmt.Errorf("removing network %s, a duplicate of %s (%s): %w; remove it (docker network rm %s), then run the command again", shortID(n.ID), name, shortID(keep.ID), err, shortID(n.ID))
		}
	}
	return keep.ID, nil
}

// shortID is a Docker ID as docker ls shows it.
func shortID(id string) string { return id[:min(len(id), 12)] }

// ensureVolumes creates the project's missing named volumes. Existing
// volumes are used as they are: their data is the customer's. Like networks,
// they carry compose's labels but no config-hash (compose would offer to
// delete a volume whose hash it computes differently).
func (e *Engine) ensureVolumes(ctx context.Context, p *types.Project) error {
	for key, v := range p.Volumes {
		_, err := e.api.VolumeInspect(ctx, v.Name, client.VolumeInspectOptions{})
		if err == nil {
			continue
		}
		if !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("inspecting volume %s: %w", v.Name, err)
		}
		if v.External {
			return fmt.Errorf("external volume %s does not exist: create it first", v.Name)
		}
		if _, err := e.api.VolumeCreate(ctx, client.VolumeCreateOptions{
			Name: v.Name, Driver: v.Driver, DriverOpts: v.DriverOpts,
			Labels: mergeLabels(v.Labels, map[string]string{
				labelVolume: key, labelProject: p.Name, labelComposeVer: composeVersion,
			}),
		}); err != nil {
			return fmt.Errorf("creating volume %s: %w", v.Name, err)
		}
	}
	return nil
}

func mergeLabels(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// projectContainers returns the project's service containers (one-off
// `compose run` containers excluded) by service name, and the extra ones: a
// second container of a service, as a recreate interrupted between creating
// the replacement and removing the old one leaves behind. The container
// with the service's canonical name wins, else the lowest container number.
func (e *Engine) projectContainers(ctx context.Context, project string) (map[string]container.Summary, []container.Summary, error) {
	list, err := e.api.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: make(client.Filters).Add("label", labelProject+"="+project),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("listing the containers of project %s: %w", project, err)
	}
	out := map[string]container.Summary{}
	var extras []container.Summary
	for _, c := range list.Items {
		if c.Labels[labelOneoff] == "True" {
			continue
		}
		svc := c.Labels[labelService]
		prev, ok := out[svc]
		if ok && preferred(project, svc, prev, c) {
			extras = append(extras, c)
			continue
		}
		if ok {
			extras = append(extras, prev)
		}
		out[svc] = c
	}
	return out, extras, nil
}

// preferred reports whether a is to be kept over b as the service's container.
func preferred(project, svc string, a, b container.Summary) bool {
	canonical := "/" + containerName(project, svc)
	aCanon, bCanon := slices.Contains(a.Names, canonical), slices.Contains(b.Names, canonical)
	if aCanon != bCanon {
		return aCanon
	}
	return number(a) <= number(b)
}

func number(c container.Summary) int {
	n, err := strconv.Atoi(c.Labels[labelNumber])
	if err != nil {
		return 1 << 30
	}
	return n
}

// tail returns the last n lines of a container's output.
func (e *Engine) tail(ctx context.Context, id string, n int) ([]string, error) {
	rc, err := e.api.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Tail: strconv.Itoa(n)})
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := stdcopy.StdCopy(&buf, &buf, rc); err != nil {
		return nil, err
	}
	var lines []string
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		lines = append(lines, strings.TrimRight(sc.Text(), "\r"))
	}
	return lines, nil
}
