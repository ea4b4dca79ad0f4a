# carto-appliance — build, test bed and checks.
#
#   make demo    build, start a sandbox fresh VM (systemd + its own Docker
#                engine), run the curl installer in it against a local release
#                server and registry, print the URL and status (demo-down
#                removes the VM)
#   make check   every test: unit, fuzz (short), integration against the real
#                engine, registry and compose (what .ci/run calls)
#   make release the directory a static HTTPS server hosts for the curl
#                installer (RELEASE_URL is where it will be served from,
#                RELEASE_KEY the ed25519 key SHA256SUMS is signed with)
#   make bench   cold start and no-op apply vs docker-compose 1.29 and compose
#                v2, upgrade and rollback, failed requests under load during an
#                upgrade and a .env change, air-gap bundle load; the agent's
#                reaction time, memory, idle CPU, status latency

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN      := bin/carto-appliance
# The benchmarks' binary also trusts the tests' licence key (license/licensetest).
TESTBIN  := bin/carto-appliance-licensetest
LDFLAGS  := -s -w -X main.version=$(VERSION)
RELEASE_URL ?= https://releases.example.invalid/carto-appliance
RELEASE_DIR ?= .cache/release
FUZZTIME ?= 10s
BENCH_RUNS ?= 1
# Time to minimize a new interesting input (go's default, 60 s, would run
# far past FUZZTIME).
FUZZMINIMIZE ?= 2s

export CGO_ENABLED := 0
SHELL := bash
.SHELLFLAGS := -o pipefail -ec

.PHONY: all build release release-keygen deps lint unit fuzz integration check demo demo-down bench clean license-keygen license-sign carto-release-keygen carto-release-publish carto-release-publish-appliance carto-release-bundle

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/carto-appliance
	$(GO) build -trimpath -tags licensetest -ldflags '$(LDFLAGS)' -o $(TESTBIN) ./cmd/carto-appliance

# Release team tooling: a licence signing key pair (KEYNAME, into KEYDIR;
# the public half goes into license/keys.go; SERVER=1 for the licence
# server's answer key) and signing a licence (LICENSE_IN: its fields as
# JSON; KEY: a key file) to stdout. The licence server signs its answers
# with license.SignAnswer (or `carto-license answer`).
KEYDIR ?= .
license-keygen:
	$(GO) run ./cmd/carto-license keygen -name $(KEYNAME) -out $(KEYDIR) $(if $(SERVER),-server)
license-sign:
	@$(GO) run ./cmd/carto-license sign -key $(KEY) -in $(LICENSE_IN)

# Release team tooling for CARTO releases (SPEC §9; not the appliance's own
# `make release` below): a release signing key pair (KEYNAME, into KEYDIR;
# the public half goes into release/keys.go, never a licence key), and
# publishing the CARTO release in FROM (manifest.yaml with every image's
# digest, docker-compose.yml, env.tpl) signed with KEY into the channel
# CHANNEL of CHANNEL_DIR, the directory a static HTTPS server hosts. No
# default key or directory, so none is used by accident.
CHANNEL ?= stable
carto-release-keygen:
	@[ -n "$(KEYNAME)" ] || { echo "make carto-release-keygen needs KEYNAME=NAME (e.g. carto-release-2027) [KEYDIR=DIR]" >&2; exit 2; }
	$(GO) run ./cmd/carto-release keygen -name '$(KEYNAME)' -out '$(KEYDIR)'
carto-release-publish:
	@[ -n "$(KEY)" ] && [ -n "$(FROM)" ] && [ -n "$(CHANNEL_DIR)" ] || { echo "make carto-release-publish needs KEY=FILE FROM=DIR CHANNEL_DIR=DIR [CHANNEL=stable]" >&2; exit 2; }
	$(GO) run ./cmd/carto-release publish -key '$(KEY)' -from '$(FROM)' -channel-dir '$(CHANNEL_DIR)' -channel '$(CHANNEL)'
# The carto-appliance binaries of a release directory (make release's
# RELEASE_DIR) offered in the channel, for nodes whose next CARTO release
# needs a newer appliance to update themselves to (VERSION: theirs).
carto-release-publish-appliance:
	@[ -n "$(KEY)" ] && [ -n "$(CHANNEL_DIR)" ] && [ -n "$(APPLIANCE_VERSION)" ] || { echo "make carto-release-publish-appliance needs KEY=FILE CHANNEL_DIR=DIR APPLIANCE_VERSION=V [RELEASE_DIR=$(RELEASE_DIR)] [CHANNEL=stable]" >&2; exit 2; }
	$(GO) run ./cmd/carto-release publish-appliance -key '$(KEY)' -version '$(APPLIANCE_VERSION)' -channel-dir '$(CHANNEL_DIR)' -channel '$(CHANNEL)' $(RELEASE_DIR)/carto-appliance_linux_*

# The air-gap bundle of the CARTO release in FROM: every image it pins,
# pulled from REGISTRY (HOST/PATH; REGISTRY_KEY: the key.json it takes) when
# the engine lacks it, into OUT (GZIP=1 compresses); APPLIANCE_VERSION adds
# the carto-appliance binaries of RELEASE_DIR (make release).
carto-release-bundle:
	@[ -n "$(KEY)" ] && [ -n "$(FROM)" ] && [ -n "$(REGISTRY)" ] && [ -n "$(OUT)" ] || { echo "make carto-release-bundle needs KEY=FILE FROM=DIR REGISTRY=HOST/PATH OUT=FILE [REGISTRY_KEY=key.json] [GZIP=1] [APPLIANCE_VERSION=V RELEASE_DIR=$(RELEASE_DIR)]" >&2; exit 2; }
	$(GO) run ./cmd/carto-release bundle -key '$(KEY)' -from '$(FROM)' -registry '$(REGISTRY)' -o '$(OUT)' \
		$(if $(REGISTRY_KEY),-registry-key '$(REGISTRY_KEY)') $(if $(GZIP),-gzip) \
		$(if $(APPLIANCE_VERSION),-appliance-version '$(APPLIANCE_VERSION)' $(RELEASE_DIR)/carto-appliance_linux_*)

# A release is signed: no default key, so none is used by accident
# (release.sh also refuses the tests' key).
release:
	@[ -n "$(RELEASE_KEY)" ] || { echo "make release needs RELEASE_KEY=FILE, the release signing key (ed25519, PEM; make release-keygen RELEASE_KEY=FILE makes one)" >&2; exit 2; }
	RELEASE_KEY='$(RELEASE_KEY)' packaging/release.sh $(RELEASE_DIR) $(RELEASE_URL) $(VERSION)

# Release team tooling: a release signing key (its public half goes into
# each release's install.sh); never overwrites one.
release-keygen:
	@[ -n "$(RELEASE_KEY)" ] || { echo "make release-keygen needs RELEASE_KEY=FILE, where to write the key" >&2; exit 2; }
	@[ ! -e "$(RELEASE_KEY)" ] || { echo "$(RELEASE_KEY) exists: not overwriting a key" >&2; exit 2; }
	(umask 077 && openssl genpkey -algorithm ed25519 -out '$(RELEASE_KEY)')
	openssl pkey -in '$(RELEASE_KEY)' -pubout

# The test bed: Debian packages, a running Docker engine, the compose v2 plugin.
deps:
	scripts/testbed-deps.sh
	scripts/ensure-dockerd.sh
	scripts/compose-v2.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./...

# Unit tests run as the tests' builds do: trusting the tests' licence key
# (license.TestTrustedKeys checks that the release's keys do not).
# The packages whose tests differ by tag run once more as the release
# build is: no stop hooks, the tests' keys not trusted.
unit: lint
	$(GO) test -count=1 -tags licensetest ./...
	$(GO) test -count=1 ./internal/steps/ ./release/ ./license/... ./cmd/carto-release/

# Short coverage-guided runs of every fuzz target (scripts/fuzz.sh).
fuzz:
	FUZZTIME=$(FUZZTIME) FUZZMINIMIZE=$(FUZZMINIMIZE) GO=$(GO) scripts/fuzz.sh

integration: deps build
	mkdir -p .cache
	st=0; $(GO) test -tags integration -count=1 -timeout 55m -v ./e2e/... 2>&1 | tee .cache/integration.log || st=$$?; \
	scripts/scenario-times.sh .cache/integration.log; exit $$st

check: unit fuzz integration bench

demo: deps build
	$(GO) run ./e2e/cmd/demo

demo-down: build
	$(GO) run ./e2e/cmd/demo -down

bench: deps build
	$(GO) run -tags licensetest ./e2e/cmd/bench -runs $(BENCH_RUNS) -bin $(TESTBIN)
	$(GO) run ./e2e/cmd/agentbench -bin $(TESTBIN)

clean:
	rm -rf bin .cache
