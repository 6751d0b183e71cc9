"""Kubernetes (deploy/k8s): the worker's settings, probes, KEDA, Triton GPU, the training job, and the
rendered base and overlay (kustomize, skipped when absent)."""
from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml

from streams.worker.settings import Settings
from tests.deploy.deployfiles import (BASE, DEFAULTS, K8S, OVERLAY, PLACEHOLDER, TOPIC_FIELDS, assert_pinned,
                                      commands, container, find, generated, host_port, kustomization, pod_env,
                                      settings_from, walk)


def test_k8s_worker_settings_with_sasl_ssl(base_objects, base_config, monkeypatch, tmp_path):
    secrets = generated(BASE, "Secret")
    worker = find(base_objects, "Deployment", "artroute-worker")
    env = pod_env(worker, {"artroute-config": base_config}, secrets)
    s = settings_from(env, monkeypatch, tmp_path)
    assert s.kafka_security_protocol == "SASL_SSL" and s.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert s.kafka_enable_idempotence is True
    assert s.kafka_sasl_username == "artroute" and s.kafka_sasl_password.get_secret_value() == PLACEHOLDER
    for field in TOPIC_FIELDS + ("consumer_group",):
        assert getattr(s, field) == getattr(DEFAULTS, field), field

    # The CA file lies in a mounted Secret volume, under a key that Secret has.
    c = container(worker)
    volumes = {v["name"]: v for v in worker["spec"]["template"]["spec"]["volumes"]}
    mount = next(m for m in c["volumeMounts"] if str(s.kafka_ssl_cafile).startswith(m["mountPath"] + "/"))
    secret_name = volumes[mount["name"]]["secret"]["secretName"]
    assert s.kafka_ssl_cafile.name in secrets[secret_name]

    # aiokafka kwargs: SASL wired through, TLS context built from the CA file. The real CA is not in git,
    # so a real CA bundle (certifi's) stands in for the mounted file.
    certifi = pytest.importorskip("certifi")
    monkeypatch.setenv("ARTROUTE_KAFKA_SSL_CAFILE", certifi.where())
    kw = Settings().kafka_client_kwargs()
    assert kw["bootstrap_servers"] == base_config["ARTROUTE_KAFKA_BROKERS"].split(",")
    assert kw["security_protocol"] == "SASL_SSL" and kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kw["sasl_plain_username"] == "artroute" and kw["sasl_plain_password"] == PLACEHOLDER
    assert kw["ssl_context"].verify_mode.name == "CERT_REQUIRED"
    # Without the Secret's password the worker refuses to start instead of connecting unauthenticated.
    monkeypatch.delenv("ARTROUTE_KAFKA_SASL_PASSWORD")
    with pytest.raises(ValueError, match="SASL"):
        Settings().kafka_client_kwargs()


def test_k8s_overlay_secret_templates_parse_into_settings(base_config, monkeypatch, tmp_path):
    examples = {"secrets/kafka.env": "secrets/kafka.env.example", "secrets/s3.env": "secrets/s3.env.example",
                "secrets/minio-admin.env": "secrets/minio-admin.env.example",
                "secrets/kafka-ca.crt": "secrets/kafka-ca.crt.example"}
    secrets = generated(OVERLAY, "Secret", examples)
    assert set(secrets) == set(generated(BASE, "Secret")), "the overlay must replace every base Secret"
    assert all(g["behavior"] == "replace" for g in kustomization(OVERLAY)["secretGenerator"])
    env = {**base_config, **secrets["artroute-kafka"], **secrets["artroute-s3"]}
    s = settings_from(env, monkeypatch, tmp_path)
    assert s.kafka_sasl_password.get_secret_value() == PLACEHOLDER
    assert s.s3_secret_key.get_secret_value() == PLACEHOLDER


def test_k8s_worker_probes_and_metrics_port(base_objects, base_config):
    port = int(base_config["ARTROUTE_METRICS_PORT"])
    assert port == 9100
    worker = find(base_objects, "Deployment", "artroute-worker")
    c = container(worker)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = c[probe]["httpGet"]
        path = "/livez" if probe == "livenessProbe" else "/healthz"
        assert get["path"] == path and ports.get(get["port"], get["port"]) == port, probe
    ann = worker["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/port"] == str(port) and ann["prometheus.io/path"] == "/metrics"
    assert c["args"] == ["worker"] and "worker" in commands("streams")
    assert "replicas" not in worker["spec"], "KEDA owns the replica count"
    sec = worker["spec"]["template"]["spec"]["securityContext"]
    assert sec["runAsNonRoot"] is True and sec["runAsUser"] != 0


def test_k8s_keda_scaler_matches_the_worker_settings(base_objects, base_config):
    so = find(base_objects, "ScaledObject", "artroute-worker")
    worker = find(base_objects, "Deployment", "artroute-worker")
    assert so["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    (trigger,) = so["spec"]["triggers"]
    md = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert md["consumerGroup"] == base_config["ARTROUTE_CONSUMER_GROUP"] == DEFAULTS.consumer_group
    assert md["topic"] == base_config["ARTROUTE_INTAKE_TOPIC"] == DEFAULTS.intake_topic
    assert md["bootstrapServers"] == base_config["ARTROUTE_KAFKA_BROKERS"]
    assert int(md["lagThreshold"]) > 0
    mech = base_config["ARTROUTE_KAFKA_SASL_MECHANISM"]
    assert md["sasl"] == {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256",
                          "SCRAM-SHA-512": "scram_sha512"}[mech]
    assert md["tls"] == ("enable" if base_config["ARTROUTE_KAFKA_SECURITY_PROTOCOL"].endswith("SSL") else "disable")
    # More replicas than intake partitions would sit idle.
    assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"] \
        <= int(base_config["ARTROUTE_TOPIC_PARTITIONS"])
    # The TriggerAuthentication reads keys the generated Secrets actually have.
    auth = find(base_objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    secrets = generated(BASE, "Secret")
    params = {}
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["key"] in secrets[ref["name"]], ref
        params[ref["parameter"]] = ref
    assert {"username", "password", "ca"} <= set(params)


def test_k8s_triton_gpu_probes_and_service(base_objects, base_config):
    dep = find(base_objects, "Deployment", "artroute-triton")
    c = container(dep)
    res = c["resources"]
    assert int(res["limits"]["nvidia.com/gpu"]) >= 1
    assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8000}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8000}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    args = c["args"]
    assert args[0] == "tritonserver"
    repo_dir = next(a for a in args if a.startswith("--model-repository=")).split("=", 1)[1]
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == repo_dir)
    vol = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    claim = vol["persistentVolumeClaim"]["claimName"]
    find(base_objects, "PersistentVolumeClaim", claim)
    assert any(a.startswith("--model-control-mode=") for a in args)
    # Workers reach Triton through the Service on its gRPC port.
    svc = find(base_objects, "Service", "artroute-triton")
    host, port = host_port(base_config["ARTROUTE_TRITON_URL"])
    assert host == svc["metadata"]["name"]
    assert any(p["port"] == port and p["targetPort"] == "grpc" for p in svc["spec"]["ports"])
    # The export Job writes into the same repository volume Triton reads.
    export = find(base_objects, "Job", "artroute-export")
    ec = container(export)
    evols = {v["name"]: v for v in export["spec"]["template"]["spec"]["volumes"]}
    emount = next(m for m in ec["volumeMounts"] if m["mountPath"].endswith("/model_repository"))
    assert evols[emount["name"]]["persistentVolumeClaim"]["claimName"] == claim
    assert f"--model-name {base_config['ARTROUTE_MODEL_NAME']}" in ec["args"][0]


def test_k8s_training_job_rendezvous(base_objects):
    job = find(base_objects, "Job", "artroute-train")
    svc = find(base_objects, "Service", "artroute-train")
    spec = job["spec"]
    pod = spec["template"]["spec"]
    c = container(job)
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert spec["suspend"] is True, "applying the kustomization must not start a training run"
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == int(env["NNODES"])
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert pod["subdomain"] == svc["metadata"]["name"]
    assert svc["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    script = c["args"][0]
    endpoint = re.search(r"--rdzv_endpoint=(\S+)", script).group(1)
    host, port = host_port(endpoint)
    assert host == f"{job['metadata']['name']}-0.{pod['subdomain']}"
    assert port == svc["spec"]["ports"][0]["port"] == c["ports"][0]["containerPort"]
    assert "--rdzv_backend=c10d" in script and "--nproc_per_node=gpu" in script
    assert "-m trainer train" in script and "--resume" in script
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1


def test_k8s_every_referenced_configmap_and_secret_is_generated(base_objects):
    names = set(generated(BASE, "ConfigMap")) | set(generated(BASE, "Secret"))
    refs = set()
    for obj in base_objects:
        refs |= {r["name"] for r in walk(obj, "configMapRef")} | {r["name"] for r in walk(obj, "secretRef")}
        refs |= set(walk(obj, "secretName"))
    assert refs and refs <= names, refs - names


def _kustomize_cmd() -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    pytest.skip("neither kustomize nor kubectl is installed")


def _render(directory: Path) -> list[dict]:
    r = subprocess.run([*_kustomize_cmd(), str(directory)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


@pytest.fixture(scope="module")
def rendered_overlay(tmp_path_factory) -> list[dict]:
    """The production overlay rendered with the committed templates standing in for the real secrets."""
    root = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, root)
    secrets = root / "overlays" / "production" / "secrets"
    for example in secrets.glob("*.example"):
        shutil.copy(example, example.with_suffix(""))
    return _render(root / "overlays" / "production")


def test_kustomize_renders_base():
    docs = _render(BASE)
    kinds = Counter(d["kind"] for d in docs)
    assert kinds["Deployment"] == 2 and kinds["ScaledObject"] == 1 and kinds["Job"] == 4
    names = {d["metadata"]["name"] for d in docs}
    auth = next(d for d in docs if d["kind"] == "TriggerAuthentication")
    # Hash-suffixed Secret names propagated into the KEDA TriggerAuthentication (kustomizeconfig.yaml).
    assert all(ref["name"] in names for ref in auth["spec"]["secretTargetRef"])


def test_kustomize_renders_production_overlay(rendered_overlay, monkeypatch, tmp_path):
    docs = rendered_overlay
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    names = {n for _, n in by}
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == "artroute", d["metadata"]["name"]
    for ref in (r for d in docs for r in walk(d, "image")):
        assert_pinned(ref, "rendered overlay")
    # Every envFrom / volume / KEDA reference resolves to a rendered object (hash suffixes included).
    for d in docs:
        for r in list(walk(d, "configMapRef")) + list(walk(d, "secretRef")):
            assert r["name"] in names, r
        for n in walk(d, "secretName"):
            assert n in names, n
        for n in walk(d, "claimName"):
            assert ("PersistentVolumeClaim", n) in by, n
    so = next(d for d in docs if d["kind"] == "ScaledObject")
    assert ("Deployment", so["spec"]["scaleTargetRef"]["name"]) in by
    assert ("TriggerAuthentication", so["spec"]["triggers"][0]["authenticationRef"]["name"]) in by
    # Overlay patches: 2 Triton replicas; 8 GPUs per training node.
    assert by[("Deployment", "artroute-triton")]["spec"]["replicas"] == 2
    train = by[("Job", "artroute-train")]
    assert container(train)["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert all(d["spec"].get("storageClassName") for d in docs if d["kind"] == "PersistentVolumeClaim")
    # The worker's rendered environment parses into Settings.
    import base64
    worker = by[("Deployment", "artroute-worker")]
    cms = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    secs = {d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in d["data"].items()}
            for d in docs if d["kind"] == "Secret"}
    s = settings_from(pod_env(worker, cms, secs), monkeypatch, tmp_path)
    assert s.kafka_security_protocol == "SASL_SSL" and s.kafka_sasl_password.get_secret_value() == PLACEHOLDER
