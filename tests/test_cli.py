"""The command lines: --help everywhere, the README's settings table, one-line errors."""
from __future__ import annotations

import subprocess
import sys

import pytest

from streams.__main__ import COMMANDS as STREAMS_COMMANDS
from streams.worker.settings_cli import settings_table
from trainer.__main__ import COMMANDS as TRAINER_COMMANDS

PY = sys.executable


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("prog,commands", [("streams", STREAMS_COMMANDS), ("trainer", TRAINER_COMMANDS)])
def test_top_level_help_lists_every_command(prog, commands):
    r = run(prog, "--help")
    assert r.returncode == 0
    for name in {c.split(" ")[0] for c in commands}:
        assert name in r.stdout


@pytest.mark.parametrize("prog,command", [("streams", c) for c in STREAMS_COMMANDS] +
                         [("trainer", c) for c in TRAINER_COMMANDS])
def test_every_command_has_help(prog, command):
    r = run(prog, *command.split(" "), "--help")
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout and len(r.stdout.splitlines()) > 3


def test_unknown_command_is_an_error():
    r = run("streams", "fly")
    assert r.returncode == 2 and "unknown command 'fly'" in r.stderr


def test_readme_settings_table_matches_the_settings(repo_root):
    readme = (repo_root / "README.md").read_text()
    block = readme.split("<!-- settings-table:begin -->\n")[1].split("\n<!-- settings-table:end -->")[0]
    assert block == settings_table(), "README settings table is stale: python -m streams settings"


def test_bad_setting_is_a_one_line_error(tmp_path):
    import os
    env = dict(os.environ, ARTROUTE_MAX_BATCH="zero", ARTROUTE_STACK_FILE=str(tmp_path / "none.json"))
    r = subprocess.run([PY, "-m", "streams", "worker"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == ("python -m streams worker: error: ARTROUTE_MAX_BATCH: Input should be a valid "
                                "integer, unable to parse string as an integer")


def test_stack_down_without_a_stack_is_a_one_line_error(tmp_path):
    import os
    env = dict(os.environ, ARTROUTE_STACK_FILE=str(tmp_path / "none.json"))
    r = subprocess.run([PY, "-m", "streams", "stack", "down"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no stack endpoints" in r.stderr


def test_bench_without_a_model_is_a_one_line_error(tmp_path):
    (tmp_path / "repo").mkdir()
    r = run("streams", "bench", "--model-repository", str(tmp_path / "repo"), "--out", str(tmp_path / "b.json"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "is empty" in r.stderr
    assert not (tmp_path / "b.json").exists()
