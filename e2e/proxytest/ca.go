package proxytest

import "github.com/cartodb/carto-appliance/internal/testca"

// CA is the test CA, which lives in internal/testca so that unit tests
// outside the test bed use it without importing e2e.
type CA = testca.CA

// NewCA makes a test CA named name.
func NewCA(name string) (*CA, error) { return testca.NewCA(name) }
