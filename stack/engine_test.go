package stack

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// An engine that never answers a request (a wedged one) makes the call
// fail once engineAnswerTimeout has passed, rather than wait for ever;
// an engine that answers at once and streams for longer is not cut.
func TestEngineAnswerIsBounded(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/_ping"):
			w.Header().Set("Api-Version", "1.41")
			w.Write([]byte("OK"))
		case strings.HasSuffix(r.URL.Path, "/events"):
			// Answered at once, then a body longer than the bound.
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			time.Sleep(600 * time.Millisecond)
			w.Write([]byte(`{"Type":"container","Action":"start","Actor":{"ID":"x"}}` + "\n"))
		default:
			select { // wedged
			case <-release:
			case <-r.Context().Done():
			}
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { close(release); srv.Close() })

	old := engineAnswerTimeout
	engineAnswerTimeout = 300 * time.Millisecond
	t.Cleanup(func() { engineAnswerTimeout = old })
	t.Setenv("DOCKER_HOST", "unix://"+sock)
	t.Setenv("DOCKER_API_VERSION", "")
	e, err := Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()

	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err = e.api.ContainerInspect(ctx, "maps-api", client.ContainerInspectOptions{})
	if err == nil || ctx.Err() != nil || time.Since(start) > 5*time.Second {
		t.Fatalf("a call to an engine that does not answer: %v after %s", err, time.Since(start))
	}
	t.Logf("ended with: %v", err)

	res := e.api.Events(ctx, client.EventsListOptions{})
	select {
	case m := <-res.Messages:
		if m.Action != "start" {
			t.Errorf("event %+v", m)
		}
	case err := <-res.Err:
		t.Fatalf("a stream longer than the bound was cut: %v", err)
	}
}
