"""The ai-gateway chart (charts/aigw), rendered by real Helm 3 and Helm 4 and
checked against Kubernetes' own schemas, for every install document's flags
and the scenarios users ask for. No cluster runs here: what is checked is the
rendered manifests, and that the gateway binary accepts the environment and
files a pod would get (`aigw check-config`)."""

import base64
import json
import os
import pathlib
import subprocess
import tarfile

import pytest
import yaml

from conftest import (
    AIGW,
    CHART,
    CRD_KINDS,
    KUBE_VERSIONS,
    TOOLS,
    HelmError,
    by_kind,
    container,
    env_map,
    env_of,
    helm,
    one,
    render,
    validate,
)

GITLAB = "https://gitlab.example.com"
GATEWAY_HOST = "ai-gateway.example.com"

# The `--set` flags of GitLab's install documents (002 and 003: chart 0.1.1
# and 0.5.0; 000: the current one), placeholders filled in.
DOC_002 = [
    "--set=image.tag=self-hosted-v18.2.1-ee",
    f"--set=gitlab.url={GITLAB}",
    f"--set=gitlab.apiUrl={GITLAB}/api/v4/",
    "--set", "ingress.enabled=true",
    "--set", f"ingress.hosts[0].host={GATEWAY_HOST}",
    "--set", "ingress.hosts[0].paths[0].path=/",
    "--set", "ingress.hosts[0].paths[0].pathType=ImplementationSpecific",
    "--set", "ingress.tls[0].secretName=ai-gateway-tls",
    "--set", f"ingress.tls[0].hosts[0]={GATEWAY_HOST}",
    "--set=ingress.className=nginx",
]


@pytest.fixture(scope="session")
def duo_workflow_key(tmp_path_factory):
    """`openssl genrsa` of the documents, done by the gateway itself."""
    assert AIGW.exists(), f"{AIGW} is missing: build the gateway first (cargo build)"
    path = tmp_path_factory.mktemp("keys") / "duo_workflow_jwt.pem"
    subprocess.run([str(AIGW), "keygen", str(path)], check=True, capture_output=True)
    return path.read_text()


def doc_003(key):
    return DOC_002 + [
        "--set", "extraEnvironmentVariables[0].name=DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY",
        "--set", f"extraEnvironmentVariables[0].value={key}",
    ]


def doc_000(key):
    digest = "sha256:" + "ab" * 32
    return doc_003(key) + [f"--set=image.tag=self-hosted-v18.2.1-ee@{digest}", "--set=image.pullPolicy=Always"]


# Doc 003's values-file snippets: a CA bundle Secret over /tmp with
# REQUESTS_CA_BUNDLE and SSL_CERT_FILE, OpenShift's /tmp emptyDir and HF_HOME,
# and its sizing example.
DOC_003_VALUES = {
    "volumes": [{"name": "cacerts", "secret": {"secretName": "ca-certificates", "optional": False}}],
    "volumeMounts": [{"name": "cacerts", "mountPath": "/tmp", "readOnly": True}],
    "extraEnvironmentVariables": [
        {"name": "REQUESTS_CA_BUNDLE", "value": "/tmp/ca-certificates.crt"},
        {"name": "SSL_CERT_FILE", "value": "/tmp/ca-certificates.crt"},
    ],
    "resources": {"requests": {"memory": "16Gi", "cpu": "4"}, "limits": {"memory": "32Gi", "cpu": "8"}},
}

CI = CHART / "ci"
# Helm can only generate 4096-bit RSA keys, a second of CPU each: the scenarios
# that are not about keys bring their own Secrets (the install documents'
# scenarios generate theirs).
OWN = ["-f", str(CI / "own-secrets-values.yaml")]


def scenarios(key, tmp):
    values = tmp / "doc003-values.yaml"
    values.write_text(yaml.safe_dump(DOC_003_VALUES))
    ci = lambda name: OWN + ["-f", str(CI / f"{name}-values.yaml")]
    return {
        "doc-002": DOC_002,
        "doc-003": doc_003(key),
        "doc-003-values": DOC_002 + ["-f", str(values)],
        "doc-003-openshift-set": DOC_002 + [
            "--set", "extraEnvironmentVariables[0].name=HF_HOME",
            "--set", "extraEnvironmentVariables[0].value=/var/tmp/huggingface",
        ],
        "doc-000": doc_000(key),
        "own-secrets": OWN,
        "grpc-tls-proxy": ci("grpc-tls-proxy"),
        "ca-bundle": ci("ca-bundle"),
        "tls": ci("tls"),
        "openshift": ci("openshift"),
        "observability": ci("observability"),
        "ha": OWN + ["-f", str(CHART / "values-ha.yaml")] + ci("ha"),
    }


@pytest.fixture(scope="session")
def all_scenarios(duo_workflow_key, tmp_path_factory):
    return scenarios(duo_workflow_key, tmp_path_factory.mktemp("values"))


SCENARIO_NAMES = [
    "doc-002", "doc-003", "doc-003-values", "doc-003-openshift-set", "doc-000", "own-secrets",
    "grpc-tls-proxy", "ca-bundle", "tls", "openshift", "observability", "ha",
]


# --- lint, render, validate -------------------------------------------------

@pytest.mark.parametrize("values", [None, "values-ha.yaml"] + sorted(p.name for p in CI.glob("*.yaml")))
def test_lint_strict(helm_name, values):
    args = ["lint", "--strict", str(CHART)]
    if values:
        args += OWN + ["-f", str(CHART / values if values == "values-ha.yaml" else CI / values)]
    out = helm(helm_name, *args)
    assert "0 chart(s) failed" in out, out


def check_crd(obj):
    spec = obj["spec"]
    if obj["kind"] == "ServiceMonitor":
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        assert spec["selector"]["matchLabels"]
        for ep in spec["endpoints"]:
            assert ep["port"] in {"metrics", "workflow-metrics"} and ep["path"] == "/metrics"
            assert set(ep) <= {"port", "path", "scheme", "interval", "scrapeTimeout", "relabelings",
                               "metricRelabelings"}
    else:
        assert obj["apiVersion"] == "gateway.networking.k8s.io/v1"
        assert spec["parentRefs"] and all("name" in p for p in spec["parentRefs"])
        for rule in spec["rules"]:
            for ref in rule["backendRefs"]:
                assert set(ref) == {"name", "port"} and isinstance(ref["port"], int)


@pytest.mark.parametrize("scenario", SCENARIO_NAMES)
def test_every_scenario_renders_and_validates(helm_name, all_scenarios, scenario):
    # Only .Capabilities.KubeVersion differs between renders (preStop sleep
    # from 1.30): one render below 1.30, one at Helm's default (1.32/1.37).
    for version in KUBE_VERSIONS:
        docs = render(helm_name, *all_scenarios[scenario], kube_version="1.27.0" if version < "1.30" else None)
        kinds = {d["kind"] for d in docs}
        assert {"Deployment", "Service", "ServiceAccount"} <= kinds, kinds
        for obj in docs:
            if obj["kind"] in CRD_KINDS:
                check_crd(obj)
            else:
                validate(obj, version)
        assert one(docs, "Deployment")["metadata"]["name"] == "ai-gateway"


# --- the install documents ---------------------------------------------------

def test_install_documents_env_and_objects(helm_name, duo_workflow_key):
    docs = render(helm_name, *DOC_002)
    env = env_map(docs)
    assert env["AIGW_GITLAB_URL"] == GITLAB
    assert env["AIGW_GITLAB_API_URL"] == f"{GITLAB}/api/v4/"
    # The install documents' offline license.
    assert env["DUO_WORKFLOW_AUTH__OIDC_CUSTOMER_PORTAL_URL"] == ""
    assert env["AIGW_CUSTOMER_PORTAL_URL"] == ""
    assert env["AIGW_FASTAPI__API_PORT"] == "5052" and env["DUO_WORKFLOW_SERVICE_PORT"] == "50052"
    assert container(docs)["image"] == "aigw:self-hosted-v18.2.1-ee"
    ing = [i for i in by_kind(docs, "Ingress") if i["metadata"]["name"] == "ai-gateway"][0]
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"hosts": [GATEWAY_HOST], "secretName": "ai-gateway-tls"}]
    rule = ing["spec"]["rules"][0]
    assert rule["host"] == GATEWAY_HOST
    assert rule["http"]["paths"][0]["path"] == "/"
    assert rule["http"]["paths"][0]["pathType"] == "ImplementationSpecific"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "ai-gateway", "port": {"name": "http"}}
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    grpc = [i for i in by_kind(docs, "Ingress") if i["metadata"]["name"] == "ai-gateway-grpc"][0]
    assert grpc["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    assert grpc["spec"]["rules"][0]["host"] == f"grpc-{GATEWAY_HOST}"
    assert grpc["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] == {"name": "grpc"}

    # Doc 003/000: the user's inline key replaces the chart's file for that key only.
    docs = render(helm_name, *doc_000(duo_workflow_key))
    env = env_map(docs)
    assert env["DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY"] == duo_workflow_key
    assert "DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY_FILE" not in env
    assert env["AIGW_SELF_SIGNED_JWT__SIGNING_KEY_FILE"] == "/etc/aigw/keys/aigw-signing-key.pem"
    assert env_of(docs)[-1]["name"] == "DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY", "user entries come last"
    assert container(docs)["image"] == "aigw:self-hosted-v18.2.1-ee@sha256:" + "ab" * 32
    assert container(docs)["imagePullPolicy"] == "Always"


def materialize(docs, root, secrets=None):
    """The files a pod would see, under `root`: the generated keys Secret and
    `secrets` ({name: {key: text}}, Secrets and ConfigMaps), mounted where
    the Deployment mounts them.
    Returns the container env with mount paths rewritten under `root`."""
    secrets = dict(secrets or {})
    for s in by_kind(docs, "Secret"):
        secrets[s["metadata"]["name"]] = {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {}
    for m in container(docs)["volumeMounts"]:
        vol = volumes[m["name"]]
        target = root / m["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        sources = vol.get("projected", {}).get("sources", []) or [vol]
        for src in sources:
            sec = src.get("secret") or src.get("configMap")
            if not sec:
                continue
            data = secrets.get(sec.get("name") or sec.get("secretName"), {})
            items = sec.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                (target / item["path"]).write_text(data[item["key"]])
        mounts[m["mountPath"]] = target
    env = {}
    for e in env_of(docs):
        value = e.get("value", "")
        for mount, target in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
            if value.startswith(mount + "/"):
                value = str(target) + value[len(mount):]
                break
        env[e["name"]] = value
    return env


def check_config(env):
    clean = {"PATH": os.environ.get("PATH", "")}
    proc = subprocess.run([str(AIGW), "check-config"], env={**clean, **env}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout)


@pytest.mark.parametrize("doc", ["doc-002", "doc-003", "doc-000"])
def test_the_gateway_accepts_what_the_install_documents_render(all_scenarios, duo_workflow_key, tmp_path, doc):
    # Helm's genPrivateKey keys (PKCS#1, 4096 bit) and the file layout, read by the real binary.
    docs = render("helm4", *all_scenarios[doc])
    config = check_config(materialize(docs, tmp_path))
    for side in ("gateway_auth", "workflow_auth"):
        assert config[side]["gitlab_url"] == GITLAB + "/"
        assert config[side]["offline_license"] is True
    assert "file " in config["gateway_auth"]["signing_key"]
    expected = "env DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY" if doc != "doc-002" else "file "
    assert expected in config["workflow_auth"]["signing_key"]
    assert config["grpc"]["max_connection_age"]["max_s"] == 300
    assert config["file_watch_interval_s"] == 5
    assert duo_workflow_key not in json.dumps(config)


def test_custom_cas_are_added_to_the_public_roots(tmp_path, duo_workflow_key):
    docs = render("helm4", *OWN, "-f", str(CI / "ca-bundle-values.yaml"))
    env = env_map(docs)
    assert env["SSL_CERT_FILE"] == "/etc/ssl/certs/ca-certificates.crt"
    assert env["SSL_CERT_DIR"] == "/etc/aigw/ca.d/0:/etc/aigw/ca.d/1:/etc/aigw/ca.d/2"
    for name in ("REQUESTS_CA_BUNDLE", "AIGW_CA_BUNDLE", "CURL_CA_BUNDLE"):
        assert name not in env, f"{name} would replace the public roots"
    # The gateway unions the two (trust precedence, option 4).
    bundle = pathlib.Path("/etc/ssl/certs/ca-certificates.crt")
    if bundle.exists():
        first = bundle.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
        files = materialize(docs, tmp_path, {
            "internal-ca": {"ca.crt": first}, "gitlab-wildcard-ca": {"ca.crt": first},
            "model-server-ca": {"ca.crt": first},
            "model-client-cert": {"tls.crt": "", "tls.key": ""},
            "aigw-keys": {"signing.pem": duo_workflow_key, "previous.pem": duo_workflow_key},
            "duo-workflow-keys": {"signing.pem": duo_workflow_key, "previous.pem": duo_workflow_key},
        })
        files = {k: v for k, v in files.items() if not k.startswith("AIGW_MTLS")}
        files["SSL_CERT_DIR"] = ":".join(str(tmp_path / d.lstrip("/")) for d in env["SSL_CERT_DIR"].split(":"))
        files["SSL_CERT_FILE"] = str(bundle)
        config = check_config(files)
        source = json.dumps(config["ca_bundle"])
        assert f"SSL_CERT_FILE={bundle}" in source or f'"file": "{bundle}"' in source, source
        assert "SSL_CERT_DIR" in source and "ca.d/2" in source, source


# --- properties every scenario keeps ----------------------------------------

@pytest.mark.parametrize("scenario", SCENARIO_NAMES)
def test_env_names_are_unique_and_keys_are_files(all_scenarios, duo_workflow_key, scenario):
    docs = render("helm3", *all_scenarios[scenario])
    names = [e["name"] for e in env_of(docs)]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    env = env_map(docs)
    for e in env_of(docs):
        value = str(e.get("value", ""))
        if "PRIVATE KEY" in value:
            # Only ever because the user put it there (doc 003's inline key).
            assert value == duo_workflow_key and scenario in {"doc-003", "doc-000"}, e["name"]
    assert env["AIGW_SELF_SIGNED_JWT__SIGNING_KEY_FILE"] == "/etc/aigw/keys/aigw-signing-key.pem"
    for name, value in env.items():
        if name.endswith("_KEY_FILE") and "JWT" in name:
            assert value.startswith("/etc/aigw/keys/"), name
    mounts = {m["mountPath"]: m for m in container(docs)["volumeMounts"]}
    assert mounts["/etc/aigw/keys"]["readOnly"] is True
    for secret in by_kind(docs, "Secret"):
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        for key in secret["data"].values():
            assert base64.b64decode(key).startswith(b"-----BEGIN RSA PRIVATE KEY-----")


def test_several_gitlab_instances(helm_name):
    docs = render(helm_name, *OWN, "--set", "gitlab.additionalUrls={https://a.example.com,https://b.example.com}")
    assert env_map(docs)["AIGW_ADDITIONAL_GITLAB_URLS"] == "https://a.example.com, https://b.example.com"
    assert "AIGW_ADDITIONAL_GITLAB_URLS" not in env_map(render(helm_name, *OWN))


def test_own_secrets_generate_nothing(helm_name):
    docs = render(helm_name, "-f", str(CI / "own-secrets-values.yaml"))
    assert not by_kind(docs, "Secret")
    sources = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"]
    assert [(s["secret"]["name"], s["secret"]["items"][0]["key"]) for s in sources] == [
        ("aigw-keys", "signing.pem"), ("aigw-keys", "previous.pem"),
        ("duo-workflow-keys", "signing.pem"), ("duo-workflow-keys", "previous.pem"),
    ]
    # Mixed: one given, the rest generated.
    docs = render(helm_name, "--set", "duoWorkflowSigningKey.secret=mine", "--set", "duoWorkflowSigningKey.key=k")
    assert set(one(docs, "Secret")["data"]) == {"aigw-signing-key"}, "only signing keys are generated"
    env = env_map(docs)
    assert "AIGW_SELF_SIGNED_JWT__VALIDATION_KEY_FILE" not in env


def probes(docs):
    c = container(docs)
    return c["livenessProbe"]["httpGet"], c["readinessProbe"]["httpGet"]


def test_probe_paths_and_schemes(helm_name):
    live, ready = probes(render(helm_name, *OWN))
    assert (live["path"], live["port"], live["scheme"]) == ("/monitoring/healthz", "http", "HTTP")
    assert (ready["path"], ready["port"], ready["scheme"]) == ("/monitoring/ready", "http", "HTTP")
    live, ready = probes(render(helm_name, *OWN, "-f", str(CI / "tls-values.yaml")))
    assert live["scheme"] == ready["scheme"] == "HTTPS"
    # gRPC-only TLS leaves the HTTP probes on HTTP; a user's scheme wins.
    live, _ = probes(render(helm_name, *OWN, "-f", str(CI / "grpc-tls-proxy-values.yaml")))
    assert live["scheme"] == "HTTP"
    live, _ = probes(render(helm_name, *OWN, "--set", "tls.secretName=t", "--set", "livenessProbe.httpGet.scheme=HTTP"))
    assert live["scheme"] == "HTTP"


def test_ports(helm_name):
    docs = render(helm_name, *OWN)
    ports = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
    assert ports == {"http": 5052, "grpc": 50052, "metrics": 8082, "workflow-metrics": 8083}
    svc = {p["name"]: (p["port"], p["targetPort"]) for p in one(docs, "Service")["spec"]["ports"]}
    assert svc == {"http": (80, "http"), "grpc": (50052, "grpc"), "metrics": (8082, "metrics"),
                   "workflow-metrics": (8083, "workflow-metrics")}
    docs = render(helm_name, *OWN, "-f", str(CI / "tls-values.yaml"))
    svc = {p["name"]: p["port"] for p in one(docs, "Service")["spec"]["ports"]}
    assert svc["https"] == 443 and "http" not in svc
    docs = render(helm_name, *OWN, "--set", "duoWorkflow.enabled=false", "--set", "ingress.enabled=true")
    assert "grpc" not in {p["name"] for p in one(docs, "Service")["spec"]["ports"]}
    assert [i["metadata"]["name"] for i in by_kind(docs, "Ingress")] == ["ai-gateway"]


def test_no_replicas_under_an_hpa_and_pdb_only_with_more_than_one_pod(helm_name):
    docs = render(helm_name, *OWN, "-f", str(CHART / "values-ha.yaml"))
    assert "replicas" not in one(docs, "Deployment")["spec"]
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == 3 and hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    for args, pdb in [((), False), (("--set", "replicaCount=2"), True),
                      (("--set", "autoscaling.enabled=true", "--set", "autoscaling.minReplicas=1"), False),
                      (("--set", "replicaCount=3", "--set", "podDisruptionBudget.enabled=false"), False)]:
        docs = render(helm_name, *OWN, *args)
        assert bool(by_kind(docs, "PodDisruptionBudget")) == pdb, args


@pytest.mark.parametrize("scenario", SCENARIO_NAMES)
def test_restricted_security_context(all_scenarios, scenario):
    docs = render("helm4", *all_scenarios[scenario])
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = container(docs)
    psc, sc = pod["securityContext"], c["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    if scenario == "openshift":
        assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(psc), "restricted-v2 assigns the IDs"
    else:
        assert psc["runAsUser"] == psc["runAsGroup"] == psc["fsGroup"] == 65532


def annotations(*args):
    return one(render("helm4", *args), "Deployment")["spec"]["template"]["metadata"]["annotations"]


def test_checksums_follow_their_inputs():
    base = ["-f", str(CI / "own-secrets-values.yaml")]
    a = annotations(*base)
    assert annotations(*base) == a, "stable for the same inputs"
    b = annotations(*base, "--set", "aigwSigningKey.secret=rotated")
    assert b["checksum/jwt-keys"] != a["checksum/jwt-keys"]
    assert (b["checksum/ca"], b["checksum/tls"]) == (a["checksum/ca"], a["checksum/tls"])
    c = annotations(*base, "--set", "certificates.customCAs[0].secret=ca")
    assert c["checksum/ca"] != a["checksum/ca"] and c["checksum/jwt-keys"] == a["checksum/jwt-keys"]
    d = annotations(*base, "--set", "tls.secretName=t")
    assert d["checksum/tls"] != a["checksum/tls"] and d["checksum/ca"] == a["checksum/ca"]
    e = annotations(*base, "--set", "mtls.enabled=true", "--set", "mtls.secretName=m")
    assert e["checksum/tls"] not in (a["checksum/tls"], d["checksum/tls"])
    # Generated keys are part of the key checksum: a fresh render, fresh keys.
    assert annotations()["checksum/jwt-keys"] != annotations("--set", "logging.level=debug")["checksum/jwt-keys"]


def test_graceful_shutdown_fits_the_termination_grace(helm_name):
    for version, sleep in [("1.29.0", False), ("1.30.0", True), ("1.37.0", True)]:
        docs = render(helm_name, *OWN, kube_version=version)
        c, pod = container(docs), one(docs, "Deployment")["spec"]["template"]["spec"]
        env = env_map(docs)
        if sleep:
            assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
            assert "AIGW_SHUTDOWN_DELAY_S" not in env
        else:
            assert "lifecycle" not in c
            assert env["AIGW_SHUTDOWN_DELAY_S"] == "5"
        assert env["AIGW_SHUTDOWN_GRACE_PERIOD_S"] == "30"
        assert pod["terminationGracePeriodSeconds"] > 5 + 30
    docs = render(helm_name, *OWN, "--set", "shutdown.gracePeriodSeconds=100", "--set", "shutdown.delaySeconds=0")
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 110
    assert "lifecycle" not in container(docs)
    strategy = one(docs, "Deployment")["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_tls_and_grpc_tls_proxy_map_to_native_tls(helm_name):
    env = env_map(render(helm_name, *OWN, "-f", str(CI / "tls-values.yaml")))
    assert env["AIGW_FASTAPI__TLS__CERT_FILE"] == "/etc/aigw/tls/http/tls.crt"
    assert env["DUO_WORKFLOW_TLS__KEY_FILE"] == "/etc/aigw/tls/grpc/tls.key"
    docs = render(helm_name, *OWN, "-f", str(CI / "grpc-tls-proxy-values.yaml"))
    env = env_map(docs)
    assert "AIGW_FASTAPI__TLS__ENABLED" not in env and env["DUO_WORKFLOW_TLS__ENABLED"] == "true"
    vols = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert vols["tls-grpc"]["secret"]["secretName"] == "grpc-tls"
    grpc = [i for i in by_kind(docs, "Ingress") if i["metadata"]["name"].endswith("-grpc")][0]
    assert grpc["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPCS"
    assert grpc["spec"]["rules"][0]["host"] == "grpc-chart-example.local"
    assert not [d for d in docs if "proxy" in d["metadata"]["name"]], "no NGINX proxy is deployed"
    names = [c["name"] for c in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]]
    assert names == ["ai-gateway", "log-shipper"]


def test_observability_objects(helm_name):
    docs = render(helm_name, *OWN, "-f", str(CI / "observability-values.yaml"))
    sm = one(docs, "ServiceMonitor")
    assert sm["metadata"]["namespace"] == "monitoring"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["ai-gateway"]}
    assert [e["port"] for e in sm["spec"]["endpoints"]] == ["metrics", "workflow-metrics"]
    np = one(docs, "NetworkPolicy")
    api, metrics = np["spec"]["ingress"][0], np["spec"]["ingress"][1]
    assert {p["port"] for p in api["ports"]} == {"http", "grpc"}
    assert api["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "gitlab"}
    assert {p["port"] for p in metrics["ports"]} == {"metrics", "workflow-metrics"}
    assert np["spec"]["egress"][0]["ports"][0]["port"] == 53
    assert one(docs, "GRPCRoute")["spec"]["rules"][0]["backendRefs"] == [{"name": "ai-gateway", "port": 50052}]
    assert one(docs, "HTTPRoute")["spec"]["rules"][0]["timeouts"] == {"request": "0s"}
    env = env_map(docs)
    assert env["AIGW_DOCS_SEARCH__DB_PATH"] == "/var/lib/aigw/docs/docs.db"
    # Defaults: open egress (GitLab and model servers are anywhere).
    docs = render(helm_name, *OWN, "--set", "networkPolicy.enabled=true")
    assert one(docs, "NetworkPolicy")["spec"]["egress"] == [{}]


# --- the schema refuses what cannot work ------------------------------------

BAD_VALUES = [
    "replicaCount=-1",
    "image.pullPolicy=Sometimes",
    "image.digest=latest",
    "gitlab.url=gitlab.example.com",
    "service.port=70000",
    "scaleOut.grpcMaxConnectionAgeSeconds=-5",
    "scaleOut.maxAge=300",
    "shutdown.delaySeconds=3.5",
    "autoscaling.minReplicas=0",
    "autoscaling.targetCPUUtilizationPercentage=150",
    "podDisruptionBudget.maxUnavailabl=1",
    "metrics.serviceMonitor.interval=often",
    "extraEnvironmentVariables[0].value=no-name",
    "certificates.customCAs[0].keys[0]=ca.crt",
    "ingress.hosts[0].paths[0].pathType=Anything",
    "docsSearch.dbPath=relative/docs.db",
    "gitlab.additionalUrls[0]=gitlab-staging.example.com",
]


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_schema_rejects(helm_name, bad):
    with pytest.raises(HelmError) as err:
        render(helm_name, *OWN, "--set", bad)
    assert "schema" in str(err.value), err.value


def test_unknown_upstream_keys_are_accepted(helm_name):
    # Values files written for the upstream chart carry keys we do not use.
    docs = render(helm_name, *OWN, "--set", "someFutureUpstreamKey=1", "--set", "grpc-tls-proxy.nginxConfig=x")
    assert one(docs, "Deployment")


def test_cloud_model_credentials_stay_in_a_secret(helm_name, tmp_path):
    key, sa = "sk-ant-test-0123456789", '{"type": "service_account", "project_id": "p"}'
    values = tmp_path / "cloud.yaml"
    values.write_text(yaml.safe_dump({"anthropicApiKey": {"value": key}, "vertexTextModel": {
        "project": "p", "location": "europe-west4", "jsonKey": {"value": sa}}}))
    docs = render(helm_name, *OWN, "-f", str(values))
    secret = one(docs, "Secret")
    assert base64.b64decode(secret["data"]["anthropic-api-key"]).decode() == key
    assert base64.b64decode(secret["data"]["vertex-credentials.json"]).decode() == sa
    deployment = yaml.safe_dump(one(docs, "Deployment"))
    assert key not in deployment and "service_account" not in deployment
    env = {e["name"]: e for e in env_of(docs)}
    assert env["ANTHROPIC_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "ai-gateway-provider-keys",
                                                                     "key": "anthropic-api-key"}
    assert env["VERTEXAI_PROJECT"]["value"] == "p" and env["VERTEXAI_LOCATION"]["value"] == "europe-west4"
    assert env["GOOGLE_APPLICATION_CREDENTIALS"]["value"] == "/etc/aigw/vertex/credentials.json"
    mounts = {m["mountPath"]: m["name"] for m in container(docs)["volumeMounts"]}
    assert mounts["/etc/aigw/vertex"] == "vertex-credentials"
    for obj in docs:
        validate(obj, "1.37.0")


# --- packaging, air-gapped ----------------------------------------------------

def test_package_and_install_from_the_archive(helm_name, tmp_path):
    out = helm(helm_name, "package", str(CHART), "--destination", str(tmp_path))
    archive = next(tmp_path.glob("ai-gateway-*.tgz"))
    assert archive.name in out
    with tarfile.open(archive) as t:
        names = t.getnames()
    assert "ai-gateway/values.schema.json" in names and "ai-gateway/values-ha.yaml" in names
    shown = yaml.safe_load(helm(helm_name, "show", "values", str(archive)))
    assert shown == yaml.safe_load((CHART / "values.yaml").read_text())
    docs = [d for d in yaml.safe_load_all(helm(helm_name, "template", "ai-gateway", str(archive), *OWN, *DOC_002)) if d]
    assert one(docs, "Deployment")["metadata"]["name"] == "ai-gateway"


def test_yamllint():
    files = [CHART / "Chart.yaml", CHART / "values.yaml", CHART / "values-ha.yaml", *sorted(CI.glob("*.yaml"))]
    config = "{extends: default, rules: {line-length: {max: 120}, document-start: disable, comments: {min-spaces-from-content: 1}, truthy: {check-keys: false}}}"
    proc = subprocess.run([str(TOOLS / "venv" / "bin" / "yamllint"), "-s", "-d", config, *map(str, files)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
