"""Docker Compose (deploy/compose): the worker's settings, topics, MinIO notifications, Triton, profiles."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.deploy.deployfiles import (COMPOSE_DIR, COMPOSE_FILE, DEFAULTS, PLACEHOLDER, REPO, TOPIC_FIELDS,
                                      command_text, commands, host_port, service_env, settings_from)


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
