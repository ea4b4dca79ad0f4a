//go:build licensetest

package release

const licensetestBuild = true
