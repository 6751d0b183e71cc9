"""What the deployment tests share: paths of deploy/, parsers of its files (YAML, env files, Compose
interpolation, kustomize generators) and small checks. The tests are split by concern: test_files.py
(parsing, pinning, settings names, CLI names), test_compose.py, test_k8s.py, test_images.py (Dockerfiles,
the worker image's imports), test_secrets.py."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

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
