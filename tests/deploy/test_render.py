"""The deploy files rendered by the real tools and checked against offline schemas, not skipped.

Kubernetes: the kustomize base and production overlay rendered by `kustomize build` or `kubectl kustomize`,
every object validated by kubernetes-validate (PyPI, offline JSON schemas, strict: unknown fields fail)
against the Kubernetes version the schemas go up to; KEDA's custom resources have no schema there and are
checked for their required fields. Compose: Debian's docker-compose `config` (`make venv` installs it with
apt when it is missing; the fixture below does the same when run as root).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
COMPOSE = REPO / "deploy" / "compose" / "compose.yaml"
CUSTOM_KINDS = {"ScaledObject": ("scaleTargetRef", "triggers"), "TriggerAuthentication": ("secretTargetRef",)}


def apt_install(package: str, binary: str) -> str | None:
    """The binary's path, installing the Debian package first when it is missing and we may (root, apt)."""
    if not shutil.which(binary) and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "install", "-y", "-q", package], ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", package]):
            if subprocess.run(cmd, env=env, capture_output=True, timeout=600).returncode == 0 and shutil.which(binary):
                break
    return shutil.which(binary)


def kustomize_cmd() -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    pytest.skip("neither kustomize nor kubectl is installed (Debian's kubernetes-client is too old for `labels`)")


def render(directory: Path) -> list[dict]:
    r = subprocess.run([*kustomize_cmd(), str(directory)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    root = tmp_path_factory.mktemp("render") / "k8s"
    shutil.copytree(K8S, root)
    for example in (root / "overlays" / "production" / "secrets").glob("*.example"):
        shutil.copy(example, example.with_suffix(""))  # the committed templates stand in for the real secrets
    return {"base": render(root / "base"), "production": render(root / "overlays" / "production")}


@pytest.mark.parametrize("variant", ["base", "production"])
def test_every_rendered_kubernetes_object_validates_against_the_offline_schemas(rendered, variant):
    version = kubernetes_validate.utils.latest_version()
    checked = 0
    for doc in rendered[variant]:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in CUSTOM_KINDS:
            assert doc["apiVersion"].startswith("keda.sh/"), name
            assert all(doc["spec"].get(f) for f in CUSTOM_KINDS[doc["kind"]]), name
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{variant}: {name} is not a valid Kubernetes {version} object: {e.message} at "
                        f"{'/'.join(map(str, e.path))}")
        checked += 1
    assert checked >= 10, f"only {checked} objects validated"


def test_the_worker_probes_readiness_and_liveness_on_their_own_paths(rendered):
    worker = next(d for d in rendered["production"] if d["kind"] == "Deployment" and "worker" in d["metadata"]["name"])
    c = worker["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz" and c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert c["resources"]["limits"]["memory"] == "1Gi"


def test_docker_compose_renders_the_compose_file():
    compose = apt_install("docker-compose", "docker-compose")
    if compose is None:
        pytest.skip("docker-compose is missing and cannot be installed here (not root or no apt-get)")
    env = {k: v for k, v in os.environ.items() if k not in ("ARTROUTE_S3_SECRET_KEY", "COMPOSE_PROFILES")}
    r = subprocess.run([compose, "-f", str(COMPOSE), "--profile", "train", "config"], capture_output=True,
                       text=True, timeout=120, cwd=COMPOSE.parent, env=env)
    assert r.returncode == 0, r.stderr
    services = yaml.safe_load(r.stdout)["services"]
    assert {"kafka", "minio", "triton", "worker", "train"} <= set(services)
    assert services["worker"]["deploy"]["resources"]["limits"]["memory"] in ("1g", "1073741824", 1073741824)
