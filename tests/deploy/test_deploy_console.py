"""The curator console's deployment (compose service `console`; kustomize component components/console,
enabled in the production overlay, behind a TLS Ingress) agrees with the code and holds no secrets."""
from __future__ import annotations

import base64
import json
import shutil
import subprocess

import pytest
import yaml

from streams.__main__ import COMMANDS
from streams.console.users import UserStore
from streams.ledger.db import database_url
from tests.deploy.test_deploy_ledger import (COMPOSE_DIR, K8S, OVERLAY, PLACEHOLDER, REPO, defaults, env_file,
                                             env_from, render_production, settings_of)

COMPONENT = K8S / "components" / "console"


def test_compose_console_reads_the_ledger_database(monkeypatch, tmp_path):
    compose = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    svcs = compose["services"]
    console = svcs["console"]
    assert console["command"] == ["console"] and "console" in COMMANDS
    assert console["image"] == svcs["ledger"]["image"]                 # the worker image runs it
    env = {**env_file(COMPOSE_DIR / console["env_file"]),
           **{k: defaults(str(v)) for k, v in console["environment"].items() if not k.startswith("<")}}
    s = settings_of(env, monkeypatch, tmp_path)
    url = database_url(s.ledger_url, s.ledger_password.get_secret_value())
    assert (url.host, url.port, url.password) == ("postgres", 5432, PLACEHOLDER)
    assert s.console_secret_key.get_secret_value() == PLACEHOLDER and s.console_host == "0.0.0.0"
    assert f"127.0.0.1:{s.console_port}:{s.console_port}" in console["ports"]
    assert f"127.0.0.1:{s.console_port}/healthz" in " ".join(console["healthcheck"]["test"])
    assert console["depends_on"]["ledger"]["condition"] == "service_healthy"
    # The users file lives on a volume (add-user writes it), at the path the settings name.
    [mount] = console["volumes"]
    assert mount.split(":")[1] == str(s.console_users_file.parent) and mount.split(":")[0] in compose["volumes"]
    example = env_file(COMPOSE_DIR / ".env.example")
    assert example["ARTROUTE_CONSOLE_SECRET_KEY"] == PLACEHOLDER


def test_console_env_files_set_only_settings_fields_and_no_secrets(monkeypatch, tmp_path):
    env = env_file(COMPONENT / "console.env")
    s = settings_of(env, monkeypatch, tmp_path)      # every key parses
    assert s.console_public_url.startswith("https://")   # behind TLS: Secure cookies
    assert not [k for k in env if any(w in k for w in ("SECRET", "PASSWORD", "TOKEN"))]
    for value in env_file(OVERLAY / "secrets" / "console.env.example").values():
        assert value == PLACEHOLDER
    # The users-file templates are what UserStore reads: no accounts.
    for path in (COMPONENT / "users.json.example", OVERLAY / "secrets" / "console-users.json.example"):
        assert json.loads(path.read_text()) == {"users": {}}
        copy = tmp_path / path.name
        shutil.copy(path, copy)
        assert UserStore(copy).names() == []
    if shutil.which("git") and (REPO / ".git").exists():
        ignored = lambda rel: subprocess.run(["git", "check-ignore", "-q", rel], cwd=REPO).returncode == 0  # noqa: E731
        assert ignored("deploy/k8s/overlays/production/secrets/console.env")
        assert ignored("deploy/k8s/overlays/production/secrets/console-users.json")
        assert not ignored("deploy/k8s/overlays/production/secrets/console.env.example")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[tuple[str, str], dict]:
    return render_production(tmp_path_factory.mktemp("k8s") / "k8s", {
        "console.env": "ARTROUTE_CONSOLE_SECRET_KEY=key-from-file\nARTROUTE_CONSOLE_OIDC_CLIENT_SECRET=oidc-from-file\n"})


def test_rendered_console_behind_tls_with_the_overlays_secrets(rendered, monkeypatch, tmp_path):
    dep = rendered[("Deployment", "artroute-console")]
    svc = rendered[("Service", "artroute-console")]
    ing = rendered[("Ingress", "artroute-console")]
    spec = dep["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert c["args"] == ["console"] and c["image"].startswith("registry.example.org/artroute/worker:")
    s = settings_of(env_from(rendered, c), monkeypatch, tmp_path)
    assert s.console_secret_key.get_secret_value() == "key-from-file"
    assert s.console_oidc_client_secret.get_secret_value() == "oidc-from-file"
    assert database_url(s.ledger_url, s.ledger_password.get_secret_value()).host == "artroute-postgres"
    # Port: ARTROUTE_CONSOLE_PORT = container port = probes = Service = Ingress backend = Prometheus annotation.
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == s.console_port and s.console_host == "0.0.0.0"
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    [rule] = ing["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "artroute-console", "port": {"name": "http"}}
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(s.console_port)
    # TLS: the Ingress terminates it for the host the console's public URL names.
    [tls] = ing["spec"]["tls"]
    assert rule["host"] in tls["hosts"] and s.console_public_url == f"https://{rule['host']}"
    # The users file: a (replaced) Secret mounted read-only where the settings look for it.
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in spec["volumes"]}
    assert str(s.console_users_file.parent) == mounts["users"]["mountPath"] and mounts["users"]["readOnly"]
    users = rendered[("Secret", vols["users"]["secret"]["secretName"])]
    assert json.loads(base64.b64decode(users["data"][s.console_users_file.name])) == {"users": {}}
    assert spec["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["readOnlyRootFilesystem"] is True
    assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}   # exports are written there


def test_the_serving_image_installs_what_the_console_imports():
    reqs = {ln.split("==")[0].lower() for ln in (REPO / "deploy" / "docker" / "worker-requirements.txt")
            .read_text().splitlines() if ln.strip() and not ln.startswith("#")}
    assert {"jinja2", "python-multipart", "itsdangerous", "argon2-cffi", "authlib", "httpx"} <= reqs
    assert "streams.console.app" in (REPO / "deploy" / "docker" / "worker.Dockerfile").read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"streams.console" = ["templates/*.html", "static/*.js", "static/*.css"]' in pyproject
