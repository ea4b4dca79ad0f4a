package stack

import (
	"context"
	"fmt"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// Diagnostics is what a support bundle shows of the engine: its info, as
// `docker info` has it, and every container of the project (one-offs and
// leftovers included) as `docker inspect` has it. Secrets are the
// caller's to mask: an inspect holds the containers' environment.
type Diagnostics struct {
	Info       any                         `json:"info"`
	Containers []container.InspectResponse `json:"containers"`
}

// Diagnose collects the engine's Diagnostics for project.
func (e *Engine) Diagnose(ctx context.Context, project string) (*Diagnostics, error) {
	info, err := e.api.Info(ctx, client.InfoOptions{})
	if err != nil {
		return nil, fmt.Errorf("asking the Docker engine for its info: %w", err)
	}
	d := &Diagnostics{Info: info.Info}
	list, err := e.api.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: make(client.Filters).Add("label", labelProject+"="+project),
	})
	if err != nil {
		return d, fmt.Errorf("listing the containers of project %s: %w", project, err)
	}
	for _, c := range list.Items {
		insp, err := e.api.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
		if err != nil {
			return d, fmt.Errorf("inspecting container %s: %w", c.ID, err)
		}
		d.Containers = append(d.Containers, insp.Container)
	}
	return d, nil
}
