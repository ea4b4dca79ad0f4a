package stack

import (
	"errors"
	"io"
	"strings"
	"syscall"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// Transient reports whether err is the engine going away under a call
// (its restart, a crash) rather than its answer to what was asked: the
// connection refused or cut, a container or exec the restart took, a
// command cut by its container's stop, a container not running again yet.
// Such a call is worth making again once the engine answers.
func Transient(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrInterrupted), errors.Is(err, ErrNotRunning), client.IsErrConnectionFailed(err), cerrdefs.IsNotFound(err):
		return true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ENOENT):
		return true
	}
	// An exec created before the engine restarted and started after it:
	// the client says so only in words (moby/client hijack.go).
	return strings.Contains(err.Error(), "unable to upgrade to tcp, received 404")
}
