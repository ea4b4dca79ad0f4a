package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/peer"
)

// peerRetry is how often the agent tries again to serve its peers: until
// the node is installed in a tier layout, or while its private address
// is not up yet (early at boot).
const peerRetry = 5 * time.Second

// servePeers answers the other nodes of a tier layout on this node's
// private address, until ctx ends: their install, upgrade and status ask
// whether this node is up and on which version, and the app node's
// upgrade has the data node back up (and restore) the database. A
// standard node serves nothing.
func (s *sup) servePeers(ctx context.Context) {
	logged := ""
	for {
		ep, ok, err := installer.PeerAPI(s.opts.Paths)
		if ok && err == nil {
			var ln net.Listener
			if ln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", ep.Addr); err == nil {
				s.opts.Logf("event=peer-api-listening addr=%s", ep.Addr)
				s.servePeerAPI(ctx, &nodesOnly{Listener: ln, from: ep.From, logf: s.opts.Logf}, ep.Secret)
				return
			}
		}
		if err != nil && err.Error() != logged {
			logged = err.Error()
			s.opts.Logf("event=peer-api-unavailable err=%q action=retry", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(peerRetry):
		}
	}
}

func (s *sup) servePeerAPI(ctx context.Context, ln net.Listener, secret []byte) {
	paths := s.opts.Paths
	srv := &http.Server{
		Handler: peer.Serve(secret, peer.Ops{
			Status: func(ctx context.Context) (*peer.Status, error) { return installer.NodeStatus(ctx, paths) },
			// The app node's upgrade has this data node dump the database
			// first, and restore it when it rolls back.
			Backup: func(ctx context.Context, r peer.BackupRequest) (*peer.Backup, error) {
				s.opts.Logf("event=peer-database-backup from=%s to=%s", r.From, r.To)
				return installer.BackupDatabaseForPeer(ctx, paths, r)
			},
			Restore: func(ctx context.Context, r peer.RestoreRequest) error {
				s.opts.Logf("event=peer-database-restore backup=%s", r.Name)
				return installer.RestoreDatabaseForPeer(ctx, paths, r)
			},
			// An app or web node's upgrade --rehearse runs here, where
			// the database is.
			Rehearse: func(ctx context.Context, r peer.RehearseRequest) (json.RawMessage, error) {
				s.opts.Logf("event=peer-rehearse from=%s to=%s", r.From, r.To)
				return installer.RehearseForPeer(ctx, paths, r)
			},
		}),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.opts.Logf("event=peer-api-stopped err=%q", err)
		}
	}()
	<-ctx.Done()
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	srv.Shutdown(shutdown)
	<-done
}

// nodesOnly accepts connections from the layout's nodes only: every
// request is authenticated anyway, but nothing else on the network need
// reach the peer API at all (its port is the agent's own, which the
// DOCKER-USER rules of the stack's ports do not cover).
type nodesOnly struct {
	net.Listener
	from []netip.Addr
	logf func(string, ...any)
	// logged are the addresses refused so far, logged once each.
	logged map[netip.Addr]bool
}

func (l *nodesOnly) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, perr := netip.ParseAddrPort(c.RemoteAddr().String())
		ip := ap.Addr().Unmap()
		if perr == nil && slices.Contains(l.from, ip) {
			return c, nil
		}
		if l.logged == nil {
			l.logged = map[netip.Addr]bool{}
		}
		if !l.logged[ip] && len(l.logged) < 100 {
			l.logged[ip] = true
			l.logf("event=peer-api-refused from=%s reason=%q", ip, "not a node of the layout")
		}
		c.Close()
	}
}
