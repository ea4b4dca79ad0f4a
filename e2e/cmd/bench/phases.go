package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"
)

// phases says where a cold start's time went, the same way for every
// flow: from the engine's own events, when the
// last image was pulled, the last container created, the last started and
// the last turned healthy, each counted from start.
type phases struct {
	pulled, created, started, healthy time.Duration
}

func (p phases) String() string {
	s := func(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) }
	return s(p.pulled) + " / " + s(p.created) + " / " + s(p.started) + " / " + s(p.healthy)
}

// watchPhases follows the engine's events of project's containers and of
// image pulls from now until the returned function is called, which says
// the phases. Followed live: the engine keeps only its last 256 events.
func watchPhases(ctx context.Context, cli *client.Client, project string) func() (phases, error) {
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	var (
		mu   sync.Mutex
		p    phases
		errs = make(chan error, 2)
	)
	follow := func(f client.Filters, each func(events.Message, time.Duration)) {
		res := cli.Events(ctx, client.EventsListOptions{Filters: f})
		for {
			select {
			case m := <-res.Messages:
				mu.Lock()
				each(m, time.Unix(0, m.TimeNano).Sub(start))
				mu.Unlock()
			case err := <-res.Err:
				if ctx.Err() != nil {
					err = nil
				}
				errs <- err
				return
			}
		}
	}
	go follow(make(client.Filters).Add("type", "image").Add("event", "pull"), func(_ events.Message, at time.Duration) {
		p.pulled = max(p.pulled, at)
	})
	go follow(make(client.Filters).Add("type", "container").Add("label", "com.docker.compose.project="+project), func(m events.Message, at time.Duration) {
		switch a := string(m.Action); {
		case a == "create":
			p.created = max(p.created, at)
		case a == "start":
			p.started = max(p.started, at)
		case strings.HasPrefix(a, "health_status") && strings.HasSuffix(a, " healthy"):
			p.healthy = max(p.healthy, at)
		}
	})
	return func() (phases, error) {
		time.Sleep(500 * time.Millisecond) // the last events on their way
		cancel()
		err := errors.Join(<-errs, <-errs)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			return p, fmt.Errorf("following the engine's events: %w", err)
		}
		return p, nil
	}
}
