"""Every deploy file parses, every image is pinned, every ARTROUTE_* name is a setting and every CLI
command and flag the files name exists."""
from __future__ import annotations

import re
from collections import Counter

from tests.deploy.deployfiles import (BASE, COMPOSE_DIR, COMPOSE_FILE, DOCKER, DOCS, FIELDS, K8S, OVERLAY, REPO,
                                      assert_pinned, commands, container, find, interpolate_defaults,
                                      kustomization, load_docs, read_env_file, text_files, walk, yaml_files)


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
