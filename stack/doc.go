// Package stack is the engine that runs CARTO's container stack through the
// Docker Engine API: it renders the release's compose template for a node,
// loads it with compose-go exactly as `docker compose` would, pulls images,
// and converges containers, networks and volumes to it, labelled as compose
// labels them so that `docker compose -p <project>` sees the same stack.
//
// The engine never prints: progress goes to a Reporter and pull progress to
// a JSON-message stream that the caller renders.
package stack
