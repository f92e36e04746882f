"""Shared helpers for the chart tests: the real Helm 3 and Helm 4 binaries,
rendering with caching, and Kubernetes schema validation (the JSON schemas
bundled with kubernetes-validate, strict: unknown fields are errors).

The tools come from tests/chart/install-tools.sh (`make chart-deps`)."""

import functools
import os
import pathlib
import subprocess

import kubernetes_validate
import kubernetes_validate.utils as kv_utils
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "aigw"
TOOLS = pathlib.Path(os.environ.get("CHART_TOOLS", ROOT / "target" / "chart-tools"))
HELMS = {"helm3": TOOLS / "bin" / "helm3", "helm4": TOOLS / "bin" / "helm4"}
AIGW = pathlib.Path(os.environ.get("AIGW_BIN", ROOT / "target" / "debug" / "aigw"))

# Oldest supported (the chart's kubeVersion), the preStop sleep boundary, and
# the newest schema kubernetes-validate bundles.
KUBE_VERSIONS = ["1.27.0", "1.29.0", "1.30.0", "1.33.0", kv_utils.latest_version()]

# The schemas are large; load each file once per run.
kv_utils.schema_contents = functools.lru_cache(maxsize=None)(kv_utils.schema_contents)

# Kinds that are CustomResourceDefinitions: no bundled schema; checked by
# structure in the tests instead.
CRD_KINDS = {"ServiceMonitor", "HTTPRoute", "GRPCRoute"}


class HelmError(Exception):
    pass


@functools.lru_cache(maxsize=None)
def _helm(helm, args):
    proc = subprocess.run(
        [str(HELMS[helm]), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(TOOLS), "HELM_CACHE_HOME": str(TOOLS / "cache"),
             "HELM_CONFIG_HOME": str(TOOLS / "config"), "HELM_DATA_HOME": str(TOOLS / "data")},
    )
    return proc.returncode, proc.stdout, proc.stderr


def helm(helm_name, *args):
    """Runs helm; returns stdout, raises HelmError with stderr on failure."""
    rc, out, err = _helm(helm_name, tuple(args))
    if rc != 0:
        raise HelmError(err.strip())
    return out


def render(helm_name, *args, release="ai-gateway", namespace="ai-gateway", kube_version=None, show_only=None):
    cmd = ["template", release, str(CHART), "--namespace", namespace, *args]
    if kube_version:
        cmd += ["--kube-version", kube_version]
    if show_only:
        cmd += ["--show-only", show_only]
    return [d for d in yaml.safe_load_all(helm(helm_name, *cmd)) if d]


def validate(obj, version):
    kubernetes_validate.validate(obj, version, strict=True)


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind):
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(docs):
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "ai-gateway")


def env_of(docs):
    return container(docs)["env"]


def env_map(docs):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in env_of(docs)}


@pytest.fixture(params=sorted(HELMS))
def helm_name(request):
    if not HELMS[request.param].exists():
        pytest.fail(f"{HELMS[request.param]} is missing: run `make chart-deps`")
    return request.param
