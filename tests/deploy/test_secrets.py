"""No secrets in the repository: no keys or high-entropy strings, placeholders only, real files ignored."""
from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections import Counter

import pytest

from tests.deploy.deployfiles import (BASE, COMPOSE_DIR, COMPOSE_FILE, OVERLAY, PLACEHOLDER, REPO, generated,
                                      load_docs, read_env_file, text_files, yaml_files)


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
