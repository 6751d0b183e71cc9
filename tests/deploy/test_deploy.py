"""Deployment files (deploy/, .dockerignore, docs/deploy.md) agree with the code and hold no secrets.

Fast and offline: YAML parsing, cross-checks against streams.worker.settings.Settings and the CLI registries,
and, where the tools are installed, `kubectl kustomize` / `kustomize build` and `docker compose config`
(each such test skips when its tool is absent).
"""
from __future__ import annotations

import ast
import fnmatch
import glob
import importlib
import math
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from streams.worker.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
K8S = DEPLOY / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "production"
DOCKER = DEPLOY / "docker"
DOCS = REPO / "docs" / "deploy.md"

PLACEHOLDER = "change-me"
FIELDS = {name.upper() for name in Settings.model_fields}
DEFAULTS = Settings.model_construct()   # field defaults, without reading env or the stack endpoints file
TOPIC_FIELDS = ("intake_topic", "decisions_topic", "review_topic", "deadletter_topic")


# --- helpers ---------------------------------------------------------------------------------------------

def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def text_files() -> list[Path]:
    """Every committed-or-committable text file of this deploy set."""
    files = [p for p in DEPLOY.rglob("*") if p.is_file()]
    return sorted(files + [REPO / ".dockerignore", DOCS])


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path}: not KEY=VALUE: {line!r}"
            env[key.strip()] = value.strip()
    return env


_INTERP = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate_defaults(value: str) -> str:
    """Compose interpolation with an empty environment: ${X:-default} -> default, ${X} -> ''."""
    return _INTERP.sub(lambda m: m.group(2) or "", value)


def settings_from(env: dict[str, str], monkeypatch, tmp_path) -> Settings:
    """Settings as a process with exactly this environment would see them (no stack endpoints file)."""
    import os
    for key in list(os.environ):
        if key.startswith("ARTROUTE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("ARTROUTE_STACK_FILE", str(tmp_path / "no-endpoints.json"))
    for key, value in env.items():
        if key.startswith("ARTROUTE_"):
            monkeypatch.setenv(key, value)
    return Settings()


def commands(package: str) -> dict:
    return importlib.import_module(f"{package}.__main__").COMMANDS


def host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host, int(port)


def walk(node, key: str):
    """Every value stored under `key` anywhere in a YAML tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from walk(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item, key)


def assert_pinned(ref: str, where: str) -> None:
    assert ref and "${" not in ref and "$" not in ref, f"{where}: unresolved image {ref!r}"
    name, _, digest = ref.partition("@")
    if digest:
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{where}: bad digest in {ref!r}"
        return
    last = name.rsplit("/", 1)[-1]
    assert ":" in last, f"{where}: image {ref!r} has no tag"
    tag = last.split(":", 1)[1]
    assert tag and tag != "latest", f"{where}: image {ref!r} is not pinned"


# --- compose model ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose_env() -> dict[str, str]:
    return read_env_file(COMPOSE_DIR / "artroute.env")


def service_env(svc: dict) -> dict[str, str]:
    env: dict[str, str] = {}
    files = svc.get("env_file", [])
    for f in [files] if isinstance(files, str) else files:
        env.update(read_env_file(COMPOSE_DIR / f))
    raw = svc.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    env.update({k: interpolate_defaults(str(v)) for k, v in raw.items()})
    return env


def command_text(svc: dict) -> str:
    cmd = svc.get("command", "")
    return " ".join(cmd) if isinstance(cmd, list) else str(cmd)


# --- kustomize model (raw files; the render tests below check the same through kustomize) ----------------

def kustomization(directory: Path) -> dict:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def generated(directory: Path, kind: str, overlay_files: dict[str, str] | None = None) -> dict[str, dict]:
    """name -> data of the ConfigMaps/Secrets a kustomization generates (envs, literals, files)."""
    spec = kustomization(directory).get("configMapGenerator" if kind == "ConfigMap" else "secretGenerator", [])
    out = {}
    for gen in spec:
        data: dict[str, str] = {}
        for env_file in gen.get("envs", []):
            data.update(read_env_file(directory / (overlay_files or {}).get(env_file, env_file)))
        for lit in gen.get("literals", []):
            key, _, value = lit.partition("=")
            data[key] = value
        for f in gen.get("files", []):
            key, _, src = f.partition("=")
            src = src or key
            data[Path(key).name] = (directory / (overlay_files or {}).get(src, src)).read_text()
        out[gen["name"]] = data
    return out


@pytest.fixture(scope="module")
def base_objects() -> list[dict]:
    docs = []
    for res in kustomization(BASE)["resources"]:
        docs += load_docs(BASE / res)
    return docs


def find(objs: list[dict], kind: str, name: str) -> dict:
    hits = [o for o in objs if o["kind"] == kind and o["metadata"]["name"].endswith(name)]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} found"
    return hits[0]


def container(obj: dict, name: str | None = None) -> dict:
    spec = obj["spec"]["template"]["spec"]
    cs = spec["containers"]
    return cs[0] if name is None else next(c for c in cs if c["name"] == name)


def pod_env(obj: dict, configmaps: dict[str, dict], secrets: dict[str, dict]) -> dict[str, str]:
    """The environment a container gets: envFrom ConfigMaps/Secrets, then literal env values."""
    env: dict[str, str] = {}
    c = container(obj)
    for src in c.get("envFrom", []):
        if "configMapRef" in src:
            env.update(configmaps[src["configMapRef"]["name"]])
        if "secretRef" in src:
            env.update(secrets[src["secretRef"]["name"]])
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    return env


@pytest.fixture(scope="module")
def base_config() -> dict[str, str]:
    return generated(BASE, "ConfigMap")["artroute-config"]


# ==========================================================================================================
# Parsing and pinning
# ==========================================================================================================

def test_every_yaml_document_parses_and_k8s_documents_are_objects():
    files = yaml_files()
    assert COMPOSE_FILE in files and (BASE / "kustomization.yaml") in files
    for path in files:
        docs = load_docs(path)
        assert docs, f"{path}: empty"
        for doc in docs:
            assert isinstance(doc, dict), f"{path}: a document is not a mapping"
            if path.is_relative_to(K8S) and path.name not in ("kustomization.yaml", "kustomizeconfig.yaml"):
                assert {"apiVersion", "kind", "metadata"} <= doc.keys(), f"{path}: not a Kubernetes object"
                assert doc["metadata"].get("name"), f"{path}: {doc['kind']} without a name"


def test_every_kustomization_resource_and_generator_source_exists():
    for directory, example_ok in ((BASE, False), (OVERLAY, True)):
        k = kustomization(directory)
        for res in k.get("resources", []):
            assert (directory / res).exists(), f"{directory}: resource {res} missing"
        for f in k.get("configurations", []):
            assert (directory / f).is_file()
        for gen in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
            for src in gen.get("envs", []) + [f.partition("=")[2] or f for f in gen.get("files", [])]:
                # Overlay secrets are gitignored; their committed templates are <name>.example.
                path = directory / src
                assert path.is_file() or (example_ok and path.with_name(path.name + ".example").is_file()), \
                    f"{directory}: generator source {src} missing (and no .example)"


def test_images_are_pinned_everywhere(compose):
    refs: list[tuple[str, str]] = []
    for path in yaml_files():
        for doc in load_docs(path):
            refs += [(str(path), v) for v in walk(doc, "image") if isinstance(v, str)]
    assert len(refs) >= 10
    for where, ref in refs:
        assert_pinned(interpolate_defaults(ref), where)
    # The overlay retags our images: the new tags must be pinned too.
    for img in kustomization(OVERLAY)["images"]:
        assert_pinned(f"{img['newName']}:{img['newTag']}", "overlay images")
    # Dockerfile bases, with ARG defaults resolved.
    for df in DOCKER.glob("*.Dockerfile"):
        args = dict(re.findall(r"^ARG (\w+)=(\S+)", df.read_text(), re.M))
        froms = re.findall(r"^FROM (\S+)", df.read_text(), re.M)
        assert froms, df
        for ref in froms:
            ref = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], ref)
            if re.fullmatch(r"\w+", ref) and ref not in args:   # a stage name (FROM build)
                continue
            assert_pinned(ref, str(df))
    # Triton: 24.10 is the release that matches Triton 2.51 (the contract in docs/model-repository.md).
    assert compose["services"]["triton"]["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"


# ==========================================================================================================
# Environment variable names and values
# ==========================================================================================================

def test_every_artroute_variable_in_deploy_files_is_a_settings_field():
    seen = Counter()
    for path in text_files():
        for name in re.findall(r"\bARTROUTE_([A-Z0-9_]*[A-Z0-9])\b", path.read_text()):
            assert name in FIELDS, f"{path.relative_to(REPO)}: ARTROUTE_{name} is not a field of Settings"
            seen[name] += 1
    # The deploy set configures (at least) Kafka security, topics, S3, Triton and the metrics port.
    assert {"KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_PASSWORD", "KAFKA_SSL_CAFILE", "INTAKE_TOPIC",
            "S3_SECRET_KEY", "TRITON_URL", "METRICS_PORT", "KAFKA_ENABLE_IDEMPOTENCE"} <= set(seen)


def test_env_files_only_set_settings_fields():
    for path in (COMPOSE_DIR / "artroute.env", BASE / "artroute.env",
                 *OVERLAY.glob("secrets/kafka.env.example"), *OVERLAY.glob("secrets/s3.env.example")):
        for key in read_env_file(path):
            assert key.startswith("ARTROUTE_") and key[len("ARTROUTE_"):] in FIELDS, f"{path}: {key}"


def test_compose_worker_settings_parse_and_match_the_services(compose, compose_env, monkeypatch, tmp_path):
    svcs = compose["services"]
    s = settings_from(service_env(svcs["worker"]), monkeypatch, tmp_path)
    # Real Kafka: idempotent producer on; plaintext inside the compose network.
    assert s.kafka_enable_idempotence is True
    assert s.kafka_security_protocol == "PLAINTEXT"
    kw = s.kafka_client_kwargs()
    assert kw == {"bootstrap_servers": ["kafka:9092"], "security_protocol": "PLAINTEXT"}
    assert "PLAINTEXT://kafka:9092" in svcs["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    # Topic names are Settings' defaults (the names the rest of the code and docs use).
    for field in TOPIC_FIELDS + ("consumer_group",):
        assert getattr(s, field) == getattr(DEFAULTS, field), field
    # S3 -> the minio service's API port; Triton -> the triton service's gRPC port.
    host, port = host_port(s.s3_endpoint)
    assert host == "minio" and f"{port}:{port}" in " ".join(svcs["minio"]["ports"])
    host, port = host_port(s.triton_url)
    assert host == "triton" and port == 8001 and any(p.endswith(":8001:8001") for p in svcs["triton"]["ports"])
    assert s.model_name == DEFAULTS.model_name and s.model_version == ""
    # The S3 secret is a placeholder from the environment, never a literal.
    assert s.s3_secret_key.get_secret_value() == PLACEHOLDER
    assert "${ARTROUTE_S3_SECRET_KEY" in COMPOSE_FILE.read_text()
    # Health check hits GET /healthz on ARTROUTE_METRICS_PORT.
    assert s.metrics_port == 9100
    assert f"127.0.0.1:{s.metrics_port}/healthz" in " ".join(svcs["worker"]["healthcheck"]["test"])


def test_compose_topics_partitions_and_bucket_notifications(compose, compose_env):
    svcs = compose["services"]
    init = svcs["topic-init"]
    script = command_text(init)
    assert init["env_file"] == "artroute.env"
    for field in TOPIC_FIELDS:
        assert f"$${'ARTROUTE_' + field.upper()}" in script, field
    assert "--partitions \"$$ARTROUTE_TOPIC_PARTITIONS\"" in script and "--if-not-exists" in script
    partitions = int(compose_env["ARTROUTE_TOPIC_PARTITIONS"])
    assert partitions >= 2
    assert svcs["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    # Workers start only after the topics exist.
    assert svcs["worker"]["depends_on"]["topic-init"]["condition"] == "service_completed_successfully"

    # MinIO publishes bucket events to the intake topic through target PRIMARY...
    menv = svcs["minio"]["environment"]
    assert menv["MINIO_NOTIFY_KAFKA_ENABLE_PRIMARY"] == "on"
    assert menv["MINIO_NOTIFY_KAFKA_TOPIC_PRIMARY"] == compose_env["ARTROUTE_INTAKE_TOPIC"]
    assert menv["MINIO_NOTIFY_KAFKA_BROKERS_PRIMARY"] == compose_env["ARTROUTE_KAFKA_BROKERS"]
    # ...and minio-init adds the s3:ObjectCreated:* rule (mc --event put) with image suffix filters.
    init_sh = (COMPOSE_DIR / "minio" / "init.sh").read_text()
    mount = svcs["minio-init"]["volumes"][0]
    assert mount.split(":")[0] == "./minio" and mount.split(":")[1] == "/init"
    assert svcs["minio-init"]["entrypoint"][-1] == "/init/init.sh"
    assert "arn:minio:sqs::PRIMARY:kafka" in init_sh and "--event put" in init_sh
    suffixes = set(re.search(r"for suffix in ([^;]+);", init_sh).group(1).split())
    assert {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".JPG"} <= suffixes
    # The worker's least-privilege policy is for the configured bucket.
    policy = (COMPOSE_DIR / "minio" / "worker-policy.json").read_text()
    buckets = set(re.findall(r"arn:aws:s3:::([^/\"]+)", policy))
    assert buckets == {compose_env["ARTROUTE_BUCKET"]}


def test_compose_triton_serves_the_repository_with_explicit_control(compose, compose_env):
    t = compose["services"]["triton"]
    cmd = t["command"]
    repo_arg = next(a for a in cmd if a.startswith("--model-repository="))
    src, target = t["volumes"][0].split(":")[:2]
    assert (COMPOSE_DIR / src).resolve() == REPO / "model_repository"
    assert target == repo_arg.split("=", 1)[1]
    assert "--model-control-mode=explicit" in cmd
    assert f"--load-model={compose_env['ARTROUTE_MODEL_NAME']}" in cmd
    devices = t["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and devices[0]["driver"] == "nvidia"
    assert "http://localhost:8000/v2/health/ready" in t["healthcheck"]["test"]


def test_compose_worker_and_train_profile(compose):
    svcs = compose["services"]
    w = svcs["worker"]
    assert (COMPOSE_DIR / w["build"]["context"]).resolve() == REPO
    assert (REPO / w["build"]["dockerfile"]).is_file()
    assert w["command"] == ["worker"] and "worker" in commands("streams")
    assert str(w["deploy"]["replicas"]).startswith("${WORKER_REPLICAS")
    t = svcs["train"]
    assert t["profiles"] == ["train"]
    script = command_text(t)
    assert "torchrun" in script and "--nproc_per_node=gpu" in script and "-m trainer train" in script
    assert t["deploy"]["resources"]["reservations"]["devices"][0]["count"] == "all"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in t["volumes"]}
    assert (COMPOSE_DIR / mounts["/work/model_repository"]).resolve() == REPO / "model_repository"
    assert "tensorboard" in svcs and "train" in svcs["tensorboard"]["profiles"]


# ==========================================================================================================
# Kubernetes
# ==========================================================================================================

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


# ==========================================================================================================
# Code paths the deploy files name
# ==========================================================================================================

CLI_RE = re.compile(r"(?:python -m|-m) (streams|trainer)((?: [a-z][a-z-]*){1,2})")


def test_cli_commands_named_in_deploy_files_exist():
    registries = {"streams": commands("streams"), "trainer": commands("trainer")}
    seen = set()
    for path in text_files():
        for pkg, words in CLI_RE.findall(path.read_text()):
            w = words.split()
            name = " ".join(w[:2]) if " ".join(w[:2]) in registries[pkg] else w[0]
            assert name in registries[pkg], f"{path.relative_to(REPO)}: `{pkg} {words.strip()}` is no command"
            seen.add(f"{pkg} {name}")
    assert {"streams worker", "streams replay", "trainer train", "trainer export"} <= seen


def _declared_flags(module: str) -> set[str]:
    src = (REPO / (module.replace(".", "/") + ".py")).read_text()
    return set(re.findall(r"add_argument\(\s*\"(--[a-z-]+)\"", src))


def test_cli_flags_used_by_deploy_files_exist():
    train = _declared_flags(commands("trainer")["train"][0])
    export = _declared_flags(commands("trainer")["export"][0])
    replay = _declared_flags(commands("streams")["replay"][0])
    assert {"--corpus", "--out", "--resume"} <= train
    assert {"--run", "--repository", "--model-name"} <= export
    export_cmd = container(find(load_docs(BASE / "export-job.yaml"), "Job", "artroute-export"))["args"][0]
    assert set(re.findall(r"--[a-z-]+", export_cmd)) <= export
    doc = DOCS.read_text()
    for cmd in re.findall(r"python -m streams replay[^`\n]*", doc):
        assert set(re.findall(r"--[a-z-]+", cmd)) <= replay, cmd


# ==========================================================================================================
# Docker images
# ==========================================================================================================

def _dockerignore() -> list[tuple[bool, str]]:
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            neg = line.startswith("!")
            rules.append((neg, line.lstrip("!").rstrip("/")))
    return rules


def _ignored(rel: str, rules) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent excludes the children."""
    parts = rel.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for neg, pat in rules:
        pats = {pat, pat.removeprefix("**/")} if pat.startswith("**/") else {pat}
        hit = any(fnmatch.fnmatchcase(c, p) or (p != pat and fnmatch.fnmatchcase(c.rsplit("/", 1)[-1], p))
                  for c in candidates for p in pats)
        if hit:
            ignored = not neg
    return ignored


def _copies(dockerfile: Path) -> list[list[str]]:
    out = []
    for line in re.sub(r"\\\n", " ", dockerfile.read_text()).splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            out.append([w for w in shlex.split(line)[1:-1] if not w.startswith("--")])
    return out


@pytest.mark.parametrize("dockerfile", ["worker.Dockerfile", "trainer.Dockerfile"])
def test_dockerfile_copy_sources_exist_and_reach_the_build_context(dockerfile):
    rules = _dockerignore()
    copies = _copies(DOCKER / dockerfile)
    assert copies
    for sources in copies:
        for src in sources:
            matches = glob.glob(src, root_dir=REPO)
            if not any(ch in src for ch in "*?["):
                assert matches, f"{dockerfile}: COPY source {src} does not exist"
            for m in matches:
                assert not _ignored(m, rules), f"{dockerfile}: COPY source {m} is excluded by .dockerignore"
    # The package sources and the lock file reach both images (the worker's without trainer/: the serving
    # side never imports it); local state and secrets never do.
    flat = {s for srcs in copies for s in srcs}
    assert {"streams", "requirements.lock"} <= flat
    assert ("trainer" in flat) == (dockerfile == "trainer.Dockerfile")
    for never in (".venv", ".git", "model_repository", "deploy/compose/.env", "runs", ".artroute",
                  "deploy/k8s/overlays/production/secrets/kafka.env"):
        assert _ignored(never, rules), never


@pytest.mark.parametrize("dockerfile", ["worker.Dockerfile", "trainer.Dockerfile"])
def test_dockerfile_runs_as_non_root(dockerfile):
    text = (DOCKER / dockerfile).read_text()
    final_stage = text[text.rindex("\nFROM "):]
    users = re.findall(r"^USER (\S+)", final_stage, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "stack" not in re.sub(r"#.*", "", text), "the embedded-stack extra never goes into an image"


def _pyproject_pins() -> dict[str, str]:
    import tomllib
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {re.split(r"[=<>\[]", d)[0].lower(): d for d in deps}


def test_worker_image_installs_pinned_worker_deps_without_torch():
    text = (DOCKER / "worker.Dockerfile").read_text()
    assert "pip install --no-deps ." in text
    assert "-c requirements.lock -r deploy/docker/worker-requirements.txt" in text
    pins = _pyproject_pins()
    reqs = [r for r in read_lines(DOCKER / "worker-requirements.txt")]
    names = {re.split(r"[=<>\[]", r)[0].lower() for r in reqs}
    assert not names & {"torch", "torchvision", "timm", "tensorboard", "matplotlib"}
    for r in reqs:
        name = re.split(r"[=<>\[]", r)[0].lower()
        assert name in pins and pins[name] == r, f"{r} differs from pyproject's {pins.get(name)}"
    # Every runtime module the streaming side imports must be installed by that list (checked below).
    assert {"faust-streaming", "tritonclient", "minio", "aiokafka", "pillow", "numpy"} <= names


def read_lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


FORBIDDEN_IN_WORKER = {"torch", "torchvision", "timm", "tensorboard", "matplotlib", "pytriton"}


def _imports(path: Path) -> set[str]:
    """Modules a file imports, except under `if TYPE_CHECKING:` and in try-blocks catching ImportError."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for b in node.body for n in ast.walk(b)}
        if isinstance(node, ast.Try) and any("ImportError" in ast.unparse(h.type or ast.Name("x"))
                                             or "ModuleNotFoundError" in ast.unparse(h.type or ast.Name("x"))
                                             for h in node.handlers):
            skip |= {id(n) for b in node.body for n in ast.walk(b)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _worker_closure() -> tuple[set[str], dict[str, str]]:
    """(modules of streams/trainer reachable from the worker and replay commands, third-party import -> importer)."""
    roots = [commands("streams")[c][0] for c in ("worker", "replay")]
    todo, seen, third, chain = list(roots), set(), {}, {}
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        for cand in (REPO / (mod.replace(".", "/") + ".py"), REPO / mod.replace(".", "/") / "__init__.py"):
            if cand.is_file():
                break
        else:
            continue
        for imp in _imports(cand):
            top = imp.split(".")[0]
            if top in ("streams", "trainer"):
                chain.setdefault(imp, mod)
                todo.append(imp)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third.setdefault(top, " <- ".join(_chain(mod, chain)))
    return seen, third


def _installed_by(requirements: list[str]) -> set[str]:
    """Normalised names of the distributions `pip install -r requirements` installs (transitively)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    todo = [Requirement(r) for r in requirements]
    out: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        extras = set(req.extras)
        key = (name, frozenset(extras))
        if key in out:
            continue
        out.add(key)
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue
        for r in map(Requirement, requires):
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in extras | {""}):
                todo.append(r)
    return {n for n, _ in out}


def test_worker_code_path_imports_only_what_the_worker_image_installs():
    """The worker image has no torch and only worker-requirements.txt: nothing reachable from the
    worker/replay commands may import anything else."""
    from importlib import metadata

    from packaging.utils import canonicalize_name

    seen, third = _worker_closure()
    assert {"streams.worker.settings", commands("streams")["worker"][0]} <= seen
    for top, via in third.items():
        assert top not in FORBIDDEN_IN_WORKER, f"{via} imports {top}; the worker image has no {top}"
    installed = _installed_by(read_lines(DOCKER / "worker-requirements.txt"))
    provides = metadata.packages_distributions()
    for top, via in third.items():
        dists = {canonicalize_name(d) for d in provides.get(top, [])}
        assert dists, f"{via} imports {top}, which no installed distribution provides"
        assert dists & installed, f"{via} imports {top} ({dists}), not installed by worker-requirements.txt"


def _chain(mod: str, chain: dict) -> list[str]:
    out = [mod]
    while out[-1] in chain:
        out.append(chain[out[-1]])
    return out


# ==========================================================================================================
# No secrets in the repository
# ==========================================================================================================

def _entropy(s: str) -> float:
    counts = Counter(s)
    return -sum(n / len(s) * math.log2(n / len(s)) for n in counts.values())


def test_no_private_keys_or_high_entropy_strings_in_deploy_files():
    for path in text_files():
        text = path.read_text()
        rel = path.relative_to(REPO)
        assert not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", text), f"{rel}: private key"
        assert not re.search(r"-----BEGIN CERTIFICATE-----", text), f"{rel}: a certificate (keep it out of git)"
        assert not re.search(r"\bAKIA[0-9A-Z]{16}\b", text), f"{rel}: AWS access key id"
        for token in re.findall(r"[A-Za-z0-9+/_\-]{32,}={0,2}", text):
            if re.fullmatch(r"[a-z0-9-]+|[A-Z0-9_]+", token):   # kebab-case names, CONSTANT_NAMES
                continue
            assert _entropy(token) < 4.0, f"{rel}: high-entropy string {token[:8]}..."


def _is_placeholder(key: str, value: str) -> bool:
    """Secret values must be change-me; only user names / access key ids may be plain identifiers."""
    if value == PLACEHOLDER or (PLACEHOLDER in value and len(value) < 400):   # the CA template prose
        return True
    return bool(re.search(r"USER|ACCESS_KEY", key)) and bool(re.fullmatch(r"[a-z][a-z0-9-]{0,30}", value))


def test_every_secret_value_is_a_placeholder():
    checked = 0
    for directory, files in ((BASE, None), (OVERLAY, {
            "secrets/kafka.env": "secrets/kafka.env.example", "secrets/s3.env": "secrets/s3.env.example",
            "secrets/minio-admin.env": "secrets/minio-admin.env.example",
            "secrets/kafka-ca.crt": "secrets/kafka-ca.crt.example"})):
        for name, data in generated(directory, "Secret", files).items():
            for key, value in data.items():
                assert _is_placeholder(key, value), f"{directory.name}: Secret {name} key {key} is not a placeholder"
                checked += 1
    # No Secret manifests with inline data; overlays generate them from gitignored files.
    for path in yaml_files():
        for doc in load_docs(path):
            assert doc.get("kind") != "Secret", f"{path}: inline Secret; use the secretGenerator"
    # Compose: every secret-looking variable defaults to the placeholder.
    for key, default in re.findall(r"\$\{(\w*(?:SECRET|PASSWORD)\w*):-([^}]*)\}", COMPOSE_FILE.read_text()):
        assert default == PLACEHOLDER, key
        checked += 1
    for key, value in read_env_file(COMPOSE_DIR / ".env.example").items():
        if re.search(r"SECRET|PASSWORD", key):
            assert value == PLACEHOLDER, key
            checked += 1
    # Non-secret env files hold no secret-looking keys at all.
    for path in (COMPOSE_DIR / "artroute.env", BASE / "artroute.env"):
        assert not [k for k in read_env_file(path) if re.search(r"SECRET|PASSWORD", k)], path
    assert checked >= 12


def test_real_secret_files_are_gitignored():
    if not shutil.which("git") or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for rel in ("deploy/compose/.env", "deploy/k8s/overlays/production/secrets/kafka.env",
                "deploy/k8s/overlays/production/secrets/s3.env",
                "deploy/k8s/overlays/production/secrets/minio-admin.env",
                "deploy/k8s/overlays/production/secrets/kafka-ca.crt"):
        r = subprocess.run(["git", "check-ignore", "-q", rel], cwd=REPO)
        assert r.returncode == 0, f"{rel} is not gitignored"
    r = subprocess.run(["git", "check-ignore", "-q", "deploy/k8s/overlays/production/secrets/kafka.env.example"],
                       cwd=REPO)
    assert r.returncode == 1, "the committed templates must not be ignored"


# ==========================================================================================================
# Rendering with the real tools (skipped when absent)
# ==========================================================================================================

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


def _compose_cmd() -> list[str]:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.skip("neither `docker compose` nor docker-compose is installed")


def test_docker_compose_config_validates(monkeypatch):
    cmd = _compose_cmd()
    for var in ("ARTROUTE_S3_SECRET_KEY", "MINIO_ROOT_PASSWORD", "WORKER_REPLICAS", "COMPOSE_PROFILES"):
        monkeypatch.delenv(var, raising=False)
    r = subprocess.run([*cmd, "-f", str(COMPOSE_FILE), "--profile", "train", "config"], capture_output=True,
                       text=True, timeout=60, cwd=COMPOSE_DIR)
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load(r.stdout)
    svcs = cfg["services"]
    assert {"kafka", "topic-init", "minio", "minio-init", "triton", "worker", "train", "tensorboard"} <= set(svcs)
    env = svcs["worker"]["environment"]
    assert env["ARTROUTE_S3_SECRET_KEY"] == PLACEHOLDER and env["ARTROUTE_KAFKA_ENABLE_IDEMPOTENCE"] == "true"
    assert int(svcs["worker"]["deploy"]["replicas"]) == 2
