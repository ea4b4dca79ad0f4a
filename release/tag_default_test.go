//go:build !licensetest

package release

const licensetestBuild = false
