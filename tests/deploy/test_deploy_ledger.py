"""The routing ledger's deployment (compose services postgres + ledger; kustomize component
components/ledger, enabled in the production overlay) agrees with the code and holds no secrets."""
from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from streams.__main__ import COMMANDS
from streams.ledger.db import database_url
from streams.worker.settings import Settings
from tests.deploy.deployfiles import host_port, render
from tests.deploy.deployfiles import settings_from as settings_of  # noqa: F401 - test_deploy_console imports it from here

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "deploy" / "compose"
K8S = REPO / "deploy" / "k8s"
COMPONENT = K8S / "components" / "ledger"
OVERLAY = K8S / "overlays" / "production"
PLACEHOLDER = "change-me"
FIELDS = set(Settings.model_fields)


def env_file(path: Path) -> dict[str, str]:
    pairs = [ln.split("=", 1) for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return {k.strip(): v.strip() for k, v in pairs}


def defaults(value: str) -> str:
    """Compose interpolation with an empty environment: ${X:-default} -> default."""
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())


def test_compose_ledger_runs_on_the_postgres_service(compose, monkeypatch, tmp_path):
    svcs = compose["services"]
    ledger, pg = svcs["ledger"], svcs["postgres"]
    assert ledger["command"] == ["ledger", "run", "--api"] and "ledger run" in COMMANDS
    env = {**env_file(COMPOSE_DIR / ledger["env_file"]),
           **{k: defaults(str(v)) for k, v in ledger["environment"].items() if not k.startswith("<")}}
    s = settings_of(env, monkeypatch, tmp_path)
    url = database_url(s.ledger_url, s.ledger_password.get_secret_value())
    assert url.drivername == "postgresql+psycopg" and url.password == PLACEHOLDER and "change-me" not in s.ledger_url
    assert (url.host, url.port) == ("postgres", 5432)
    assert (url.username, url.database) == (pg["environment"]["POSTGRES_USER"], pg["environment"]["POSTGRES_DB"])
    assert pg["environment"]["POSTGRES_PASSWORD"] == "${ARTROUTE_LEDGER_PASSWORD:-change-me}"
    assert ledger["environment"]["ARTROUTE_LEDGER_PASSWORD"] == "${ARTROUTE_LEDGER_PASSWORD:-change-me}"
    assert s.ledger_api_token.get_secret_value() == PLACEHOLDER
    assert ledger["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    # The API: listens on all interfaces in its container, published on the host's loopback, health-checked.
    assert s.ledger_api_host == "0.0.0.0" and f"127.0.0.1:{s.ledger_api_port}:{s.ledger_api_port}" in ledger["ports"]
    assert f"127.0.0.1:{s.ledger_api_port}/healthz" in " ".join(ledger["healthcheck"]["test"])
    assert ledger["build"]["dockerfile"] == svcs["worker"]["build"]["dockerfile"]  # the worker image runs it
    assert "postgres-data" in compose["volumes"]
    # Its topic exists before it starts; its secrets are placeholders in the committed .env template.
    assert "$$ARTROUTE_VERDICTS_TOPIC" in " ".join(svcs["topic-init"]["command"])
    assert s.verdicts_topic == Settings.model_construct().verdicts_topic
    example = env_file(COMPOSE_DIR / ".env.example")
    assert example["ARTROUTE_LEDGER_PASSWORD"] == example["ARTROUTE_LEDGER_API_TOKEN"] == PLACEHOLDER


def test_ledger_env_files_set_only_settings_fields():
    for path in (COMPONENT / "ledger.env", OVERLAY / "secrets" / "ledger.env.example"):
        for key in env_file(path):
            assert key.startswith("ARTROUTE_") and key[len("ARTROUTE_"):].lower() in FIELDS, f"{path}: {key}"
    assert not [k for k in env_file(COMPONENT / "ledger.env") if re.search(r"SECRET|PASSWORD|TOKEN", k)]
    for value in env_file(OVERLAY / "secrets" / "ledger.env.example").values():
        assert value == PLACEHOLDER


def test_the_production_overlay_enables_the_ledger_with_its_own_secret_file():
    overlay = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    assert overlay["components"] == ["../../components/ledger", "../../components/console", "secrets"]
    secrets = yaml.safe_load((OVERLAY / "secrets" / "kustomization.yaml").read_text())
    assert secrets["kind"] == "Component"
    gen = secrets["secretGenerator"][0]
    assert (gen["name"], gen["behavior"], gen["envs"]) == ("artroute-ledger", "replace", ["ledger.env"])
    component = yaml.safe_load((COMPONENT / "kustomization.yaml").read_text())
    assert [g["name"] for g in component["secretGenerator"]] == ["artroute-ledger"]
    assert all(lit.endswith("=" + PLACEHOLDER) for lit in component["secretGenerator"][0]["literals"])
    if shutil.which("git") and (REPO / ".git").exists():
        ignored = lambda rel: subprocess.run(["git", "check-ignore", "-q", rel], cwd=REPO).returncode == 0  # noqa: E731
        assert ignored("deploy/k8s/overlays/production/secrets/ledger.env")
        assert not ignored("deploy/k8s/overlays/production/secrets/ledger.env.example")
        assert not ignored("deploy/k8s/overlays/production/secrets/kustomization.yaml")


def render_production(root: Path, secrets: dict[str, str]) -> dict[tuple[str, str], dict]:
    """The production overlay rendered from a copy of deploy/k8s under `root`, the secrets templates standing
    in for the real files except `secrets` ({file name in secrets/: content})."""
    shutil.copytree(K8S, root)
    folder = root / "overlays" / "production" / "secrets"
    for example in folder.glob("*.example"):
        shutil.copy(example, example.with_suffix(""))
    for name, content in secrets.items():
        (folder / name).write_text(content)
    return {(d["kind"], d["metadata"]["name"]): d for d in render(root / "overlays" / "production")}


def env_from(rendered: dict, container: dict) -> dict[str, str]:
    """What a container's envFrom ConfigMaps and Secrets (decoded) put into its environment."""
    data = {}
    for src in container["envFrom"]:
        ref = src.get("configMapRef") or src.get("secretRef")
        values = rendered[("ConfigMap" if "configMapRef" in src else "Secret", ref["name"])]["data"]
        data.update(values if "configMapRef" in src else {k: base64.b64decode(v).decode() for k, v in values.items()})
    return data


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[tuple[str, str], dict]:
    """The production overlay rendered with the templates as secrets, the ledger's holding real-looking values."""
    return render_production(tmp_path_factory.mktemp("k8s") / "k8s", {
        "ledger.env": "ARTROUTE_LEDGER_PASSWORD=pw-from-file\nARTROUTE_LEDGER_API_TOKEN=tok-from-file\n"})


def _named(rendered: dict, kind: str, prefix: str) -> dict:
    [doc] = [d for (k, n), d in rendered.items() if k == kind and n.startswith(prefix)]
    return doc


def test_rendered_ledger_parses_into_settings_and_reaches_postgres(rendered, monkeypatch, tmp_path):
    dep = rendered[("Deployment", "artroute-ledger")]
    pg = rendered[("StatefulSet", "artroute-postgres")]
    svc = rendered[("Service", "artroute-postgres")]
    api_svc = rendered[("Service", "artroute-ledger")]
    assert dep["metadata"]["namespace"] == pg["metadata"]["namespace"] == "artroute"
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["args"] == ["ledger", "run", "--api"] and c["image"].startswith("registry.example.org/artroute/worker:")
    s = settings_of(env_from(rendered, c), monkeypatch, tmp_path)
    assert s.kafka_security_protocol == "SASL_SSL" and s.ledger_api_token.get_secret_value() == "tok-from-file"
    url = database_url(s.ledger_url, s.ledger_password.get_secret_value())
    assert url.password == "pw-from-file" and url.host == svc["metadata"]["name"]
    assert url.port == svc["spec"]["ports"][0]["port"] == pg["spec"]["template"]["spec"]["containers"][0]["ports"][0][
        "containerPort"]
    # PostgreSQL's own password is the same key of the same (replaced) Secret.
    pg_env = {e["name"]: e for e in pg["spec"]["template"]["spec"]["containers"][0]["env"]}
    ref = pg_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    secret = rendered[("Secret", ref["name"])]
    assert base64.b64decode(secret["data"][ref["key"]]).decode() == "pw-from-file"
    assert ref["key"] == "ARTROUTE_LEDGER_PASSWORD" and ref["name"].startswith("artroute-ledger-")
    assert (url.username, url.database) == (pg_env["POSTGRES_USER"]["value"], pg_env["POSTGRES_DB"]["value"])
    # The API port: container port = ARTROUTE_LEDGER_API_PORT = probes = Service target = Prometheus annotation.
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["api"] == s.ledger_api_port and s.ledger_api_host == "0.0.0.0"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "api"}
    assert api_svc["spec"]["ports"][0]["targetPort"] == "api"
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(s.ledger_api_port)
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"  # the one outbox drainer
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_the_topics_job_creates_the_verdicts_topic(rendered):
    job = _named(rendered, "Job", "artroute-topics")
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert '"$ARTROUTE_VERDICTS_TOPIC"' in script
    config = _named(rendered, "ConfigMap", "artroute-config-")
    assert config["data"]["ARTROUTE_VERDICTS_TOPIC"] == Settings.model_construct().verdicts_topic


def test_the_serving_image_installs_what_the_ledger_imports():
    reqs = {re.split(r"[=<>\[]", ln)[0].lower() for ln in (REPO / "deploy" / "docker" / "worker-requirements.txt")
            .read_text().splitlines() if ln.strip() and not ln.startswith("#")}
    assert {"sqlalchemy", "alembic", "psycopg", "fastapi", "uvicorn", "pyarrow"} <= reqs
    dockerfile = (REPO / "deploy" / "docker" / "worker.Dockerfile").read_text()
    assert "streams.ledger.service" in dockerfile and "streams.ledger.api" in dockerfile
