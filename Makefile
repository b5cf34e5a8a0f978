# Two commands do everything on a fresh machine:
#   make run    start the local control plane, install Peon's CRDs and game catalogue, run
#               the operator and peon-api (the page) and an example game server: the test game
#               on the real node where the machine can (root, containerd), else on kwok
#   make test   unit tests, then integration tests against a real control plane
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test unit integration venv testbed cluster-up cluster-down bench clean manifests docker-deps browser-deps image images

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

testbed:
	tools/testbed/build >/dev/null
	tools/testbed/flux-crds >/dev/null

cluster-up: testbed
	tools/cluster up

cluster-down:
	tools/cluster down

unit: venv
	$(BIN)/pytest tests/unit -q

# Integration tests use KUBECONFIG when it is set; otherwise the test session starts the bed itself.
integration: venv testbed
	$(BIN)/pytest tests/integration -q

# The new-cluster test brings the bed down and makes a new one: a session of its own, after the rest.
test: venv testbed docker-deps browser-deps
	$(BIN)/pytest tests -q
	$(BIN)/pytest tests/integration/test_new_cluster.py -q

# As root, the real node's packages (docker-deps) too; tools/run says why when it goes without.
run: venv testbed
	@if [ "$$(id -u)" = 0 ] && [ "$${PEON_REAL_NODE:-}" != 0 ]; then $(MAKE) -s docker-deps; fi
	tools/run

bench: venv cluster-up
	$(BIN)/python bench/converge.py $(ARGS)

clean: cluster-down
	rm -rf $(VENV) .pytest_cache

manifests: testbed
	tools/render-manifests

# Docker Engine, debootstrap and the real node's runtime (containerd, runc, CNI plugins,
# iptables, conntrack) from Debian's packages, for the image and real-node tests (best effort:
# where they cannot be installed, those tests report skipped with the reason).
NODE_PKGS := docker.io debootstrap containerd runc containernetworking-plugins iptables conntrack
docker-deps:
	@command -v dockerd >/dev/null && command -v debootstrap >/dev/null && command -v conntrack >/dev/null \
	  && test -x /usr/lib/cni/bridge || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(NODE_PKGS) >/dev/null; } || \
	  echo "docker-deps: could not install $(NODE_PKGS); image and real-node tests will be skipped"

# Debian's chromium for the web page's browser tests (Playwright, from the test extras, drives
# it; Playwright's own browser download is not used). Best effort, as docker-deps: where it
# cannot be installed, those tests report skipped with the reason.
browser-deps:
	@command -v chromium >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "browser-deps: could not install chromium; the page's browser tests will be skipped"

image: venv
	tools/image

# The operator and test game images, imported into the bed's real node when it runs.
images: venv docker-deps
	tools/images
