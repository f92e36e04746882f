# aigw: build, run, test, package. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo
MUSL_TARGET := x86_64-unknown-linux-musl
STATIC_BIN := target/$(MUSL_TARGET)/release/aigw
# musl-tools: C parts of ring/mimalloc for the static build; protobuf-compiler:
# protoc for the gRPC code generation; file: the static-binary check.
APT_PACKAGES := musl-tools protobuf-compiler file
SUDO := $(shell if [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null; then echo sudo; fi)

.PHONY: help deps build static run test lint bench clean

help:
	@echo "make run     start the gateway in the foreground with a development config"
	@echo "make test    formatting, clippy and the whole test suite"
	@echo "make build   debug build"
	@echo "make static  fully static x86_64 musl release binary: $(STATIC_BIN)"
	@echo "make bench   benchmarks (numbers go to BENCHMARKS.md)"
	@echo "make deps    install the Rust musl target and the apt packages (idempotent)"

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
	@file $(STATIC_BIN) | tee /dev/stderr | grep -q 'static-pie linked' || { echo "static: $(STATIC_BIN) is not static-pie"; exit 1; }
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

clean:
	$(CARGO) clean
	rm -rf dist
