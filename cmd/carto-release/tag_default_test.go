//go:build !licensetest

package main

const licensetestBuild = false
