// Package e2e holds the scenarios that run the built carto-appliance binary
// against real parts: a Docker engine, an authenticated registry, and the
// stand-in CARTO images (see testbed). They carry the `integration` build
// tag and run with `make integration`.
package e2e
