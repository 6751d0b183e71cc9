"""The Docker images: COPY sources, non-root users, pinned worker dependencies, and that everything the
worker imports is installed by deploy/docker/worker-requirements.txt (the import graph from grimp)."""
from __future__ import annotations

import fnmatch
import glob
import re
import shlex
import sys
from pathlib import Path

import pytest

from tests.deploy.deployfiles import DOCKER, REPO, commands


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


def _worker_imports() -> tuple[set[str], dict[str, str]]:
    """(our modules the worker and replay commands import, even indirectly; third-party top-level package ->
    a chain of imports that reaches it), from grimp's import graph (import-linter's; imports under
    `if TYPE_CHECKING:` excluded)."""
    import grimp

    graph = grimp.build_graph("streams", "trainer", include_external_packages=True,
                              exclude_type_checking_imports=True, cache_dir=None)
    roots = [commands("streams")[c][0] for c in ("worker", "replay")]
    ours, third = set(roots), {}
    for root in roots:
        ours |= {m for m in graph.find_upstream_modules(root) if m.split(".")[0] in ("streams", "trainer")}
    for module in sorted(ours):
        for imported in graph.find_modules_directly_imported_by(module):
            top = imported.split(".")[0]
            if top not in ("streams", "trainer", "__future__") and top not in sys.stdlib_module_names:
                chains = [graph.find_shortest_chain(importer=r, imported=module) for r in roots if r != module]
                chain = min((c for c in chains if c), key=len, default=(module,))
                third.setdefault(top, " -> ".join([*chain, top]))
    return ours, third


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

    ours, third = _worker_imports()
    assert {"streams.worker.settings", "streams.contract.model", commands("streams")["worker"][0]} <= ours
    assert not [m for m in ours if m.startswith("trainer")], "the worker image copies no trainer/"
    for top, via in third.items():
        assert top not in FORBIDDEN_IN_WORKER, f"{via}: the worker image has no {top}"
    installed = _installed_by(read_lines(DOCKER / "worker-requirements.txt"))
    provides = metadata.packages_distributions()
    for top, via in third.items():
        dists = {canonicalize_name(d) for d in provides.get(top, [])}
        assert dists, f"{via}: no installed distribution provides {top}"
        assert dists & installed, f"{via}: {top} ({dists}) is not installed by worker-requirements.txt"
