# aigw: build, run, test, package. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo
MUSL_TARGET := x86_64-unknown-linux-musl
STATIC_BIN := target/$(MUSL_TARGET)/release/aigw
# musl-tools: C parts of ring/mimalloc for the static build; protobuf-compiler:
# protoc for the gRPC code generation; file: the static-binary check.
APT_PACKAGES := musl-tools protobuf-compiler file
SUDO := $(shell if [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null; then echo sudo; fi)

.PHONY: help deps build static run test lint bench demo clean \
	package-deps package-assets deb rpm oci dist package-test

help:
	@echo "make run     start the gateway in the foreground with a development config"
	@echo "make test    formatting, clippy and the whole test suite"
	@echo "make build   debug build"
	@echo "make static  fully static x86_64 musl release binary: $(STATIC_BIN)"
	@echo "make bench   benchmarks (numbers go to BENCHMARKS.md)"
	@echo "make demo    gateway + mock model on loopback: a code completion, a generation and a chat answer"
	@echo "make deps    install the Rust musl target and the apt packages (idempotent)"
	@echo "make dist    deb + rpm + oci from the one static binary, into dist/ (see packaging/README.md)"
	@echo "make deb     $(DEB)"
	@echo "make rpm     $(RPM)"
	@echo "make oci     $(OCI) (OCI layout archive) and $(DOCKER_ARCHIVE) (docker load)"
	@echo "make package-test  install, upgrade, remove and purge the packages here, run the image (root)"
	@echo "make package-deps  install the packaging tools (idempotent)"

deps:
	@if ! command -v rustup >/dev/null; then echo "deps: rustup is required (https://rustup.rs)"; exit 1; fi
	@if rustup target list --installed | grep -qx '$(MUSL_TARGET)'; then \
		echo "deps: Rust target $(MUSL_TARGET) present"; \
	else \
		echo "deps: installing Rust target $(MUSL_TARGET)"; rustup target add $(MUSL_TARGET); \
	fi
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "deps: apt packages present ($(APT_PACKAGES))"; \
	else echo "deps: installing apt packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build: deps
	$(CARGO) build

static: deps
	$(CARGO) build --release --locked --target $(MUSL_TARGET)
	@# (not `tee /dev/stderr`: when stderr is a log file, tee truncates it)
	@out="$$(file $(STATIC_BIN))"; echo "$$out"; case "$$out" in *'static-pie linked'*) ;; *) echo "static: $(STATIC_BIN) is not static-pie"; exit 1;; esac
	@! readelf -l $(STATIC_BIN) | grep -q INTERP || { echo "static: $(STATIC_BIN) has an ELF interpreter"; exit 1; }
	@ls -l $(STATIC_BIN)

# A development configuration: throwaway signing keys (--dev), a local GitLab
# at http://127.0.0.1:3000, offline license, API docs on, readable logs.
# Override any variable on the command line, e.g. `make run AIGW_GITLAB_URL=https://gitlab.example.com`.
AIGW_GITLAB_URL ?= http://127.0.0.1:3000
run: deps
	AIGW_GITLAB_URL='$(AIGW_GITLAB_URL)' \
	AIGW_CUSTOMER_PORTAL_URL= \
	DUO_WORKFLOW_AUTH__OIDC_CUSTOMER_PORTAL_URL= \
	AIGW_FASTAPI__DOCS_URL=/docs AIGW_FASTAPI__OPENAPI_URL=/openapi.json \
	AIGW_LOGGING__FORMAT_JSON=false \
	PROMETHEUS_METRICS__ADDR=0.0.0.0 PROMETHEUS_METRICS__PORT=8083 \
	$(CARGO) run -- --dev

lint: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

test: lint
	$(CARGO) test --locked

# Measures the static binary that ships; the load generator is in-process.
bench: static
	AIGW_BENCH_BIN=$(CURDIR)/$(STATIC_BIN) $(CARGO) bench --locked --bench gateway

# The gateway and the mock model server on loopback, GitLab played by the
# demo itself (throwaway key, Rails-shaped requests): tests/demo.rs.
demo: deps
	$(CARGO) test --locked --test demo -- --ignored --nocapture --test-threads 1

clean:
	$(CARGO) clean
	rm -rf dist

# ---------------------------------------------------------------------------
# Packaging: .deb, .rpm and an OCI image, all around the one $(STATIC_BIN).
# Reproducible: every timestamp is SOURCE_DATE_EPOCH (default: the last
# commit's time), so the same commit gives the same digests.
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n1)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
export SOURCE_DATE_EPOCH
DIST := dist
DEB := $(DIST)/aigw_$(VERSION)_amd64.deb
RPM := $(DIST)/aigw-$(VERSION)-1.x86_64.rpm
OCI := $(DIST)/aigw-$(VERSION)-oci.tar
DOCKER_ARCHIVE := $(DIST)/aigw-$(VERSION)-docker.tar
PKG_ASSETS := target/packaging
# lintian, rpm, rpmlint: package checks; umoci, skopeo: image checks and the
# docker-archive; python3: the OCI layout writer and the notify listener;
# man-db: `systemd-analyze verify` runs `man aigw` for Documentation=;
# curl: packaging/test.sh probes the running gateway.
PKG_APT_PACKAGES := lintian rpm rpmlint umoci skopeo python3 man-db curl
CARGO_DEB_VERSION := 3.8.0
CARGO_GENERATE_RPM_VERSION := 0.21.1

package-deps: deps
	@missing=""; for p in $(PKG_APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "package-deps: apt packages present ($(PKG_APT_PACKAGES))"; \
	else echo "package-deps: installing apt packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@if $(CARGO) deb --version >/dev/null 2>&1; then \
		echo "package-deps: cargo-deb present ($$($(CARGO) deb --version 2>&1 | head -n1))"; \
	else echo "package-deps: installing cargo-deb $(CARGO_DEB_VERSION)"; \
		$(CARGO) install --locked cargo-deb@$(CARGO_DEB_VERSION); \
	fi
	@if $(CARGO) generate-rpm --version >/dev/null 2>&1; then \
		echo "package-deps: cargo-generate-rpm present ($$($(CARGO) generate-rpm --version 2>&1 | head -n1))"; \
	else echo "package-deps: installing cargo-generate-rpm $(CARGO_GENERATE_RPM_VERSION)"; \
		$(CARGO) install --locked cargo-generate-rpm@$(CARGO_GENERATE_RPM_VERSION); \
	fi

# The OCI image's CA bundle comes from the build host's ca-certificates.
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
# `make dist PACKAGE_BUILD=no` packages the binary already in target/ as is
# (packaging/test.sh uses it to rebuild the packages for the digest check).
PACKAGE_BUILD ?= yes
PKG_BIN := $(if $(filter no,$(PACKAGE_BUILD)),,static)

# Man page and completions, generated by the binary that ships.
package-assets: $(PKG_BIN)
	@rm -rf $(PKG_ASSETS) && mkdir -p $(PKG_ASSETS)/completions
	$(STATIC_BIN) manpage | gzip -9n > $(PKG_ASSETS)/aigw.1.gz
	gzip -9n < packaging/debian/changelog > $(PKG_ASSETS)/changelog.gz
	$(STATIC_BIN) completions bash > $(PKG_ASSETS)/completions/aigw.bash
	$(STATIC_BIN) completions zsh > $(PKG_ASSETS)/completions/_aigw
	$(STATIC_BIN) completions fish > $(PKG_ASSETS)/completions/aigw.fish

deb: $(PKG_BIN) package-deps package-assets
	@mkdir -p $(DIST)
	$(CARGO) deb --target $(MUSL_TARGET) --no-build --no-strip --output $(DEB)
	@ls -l $(DEB)

rpm: $(PKG_BIN) package-deps package-assets
	@mkdir -p $(DIST)
	$(CARGO) generate-rpm --target $(MUSL_TARGET) --output $(RPM)
	@ls -l $(RPM)

oci: $(PKG_BIN) package-deps
	@mkdir -p $(DIST)
	python3 packaging/oci/mkimage.py --binary $(STATIC_BIN) --ca-bundle $(CA_BUNDLE) --license LICENSE \
		--revision "$$(git rev-parse HEAD 2>/dev/null)$$(git diff --quiet HEAD 2>/dev/null || echo -dirty)" --out $(OCI)
	@rm -f $(DOCKER_ARCHIVE)
	skopeo copy -q oci-archive:$(OCI):$(VERSION) docker-archive:$(DOCKER_ARCHIVE):aigw:$(VERSION)
	@ls -l $(OCI) $(DOCKER_ARCHIVE)

dist: deb rpm oci
	@cd $(DIST) && sha256sum $(notdir $(DEB) $(RPM) $(OCI) $(DOCKER_ARCHIVE)) | tee SHA256SUMS

# Installs, upgrades, removes and purges the packages on THIS machine (root),
# and runs the image's rootfs in a chroot: CI only (packaging/README.md).
package-test: dist
	packaging/test.sh
