"""`python -m streams console add-user / remove-user` as a user runs them: the password from stdin or a
file (the command line has no way to take one), argon2 hashes in an owner-only file, one-line errors."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

from streams.console.users import UserStore


def streams(*args: str, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams", "console", *args], input=stdin, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def test_add_user_reads_the_password_from_stdin_or_a_file(tmp_path):
    users = tmp_path / "users.json"
    env = {"ARTROUTE_CONSOLE_USERS_FILE": str(users), "ARTROUTE_STACK_FILE": str(tmp_path / "none.json")}
    r = streams("add-user", "amy", "--role", "curator", stdin="a long enough password\n", env=env)
    assert r.returncode == 0, r.stderr
    assert "added console user amy (curator)" in r.stdout
    (tmp_path / "pw").write_text("another good password\n")
    r = streams("add-user", "root", "--role", "admin", "--password-file", str(tmp_path / "pw"), env=env)
    assert r.returncode == 0, r.stderr
    store = UserStore(users)
    assert store.verify("amy", "a long enough password").role == "curator"
    assert store.verify("root", "another good password").role == "admin"
    assert store.verify("amy", "a long enough password\n") is None          # the newline is not the password
    text = users.read_text()
    assert "a long enough password" not in text and json.loads(text)["users"]["amy"]["hash"].startswith("$argon2id$")
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    # No password on the command line: refused, and not echoed (argparse would have taken `--password` for
    # --password-file and printed the password in its error: failed before this fix).
    for args in (["--password", "secret-secret"], ["--password=secret-secret"]):
        r = streams("add-user", "eve", *args, env=env)
        assert r.returncode == 2 and "secret-secret" not in r.stderr + r.stdout, r.stderr
    assert "no passwords on the command line" in streams("add-user", "eve", "--password", "x", env=env).stderr
    assert "eve" not in UserStore(users).names()
    # One-line errors: a short password, a bad name, a missing file, an unknown user to remove.
    for args, stdin, message in [(["add-user", "eve"], "short\n", "at least 8 characters"),
                                 (["add-user", "e v e"], "long enough pw\n", "user name"),
                                 (["add-user", "eve", "--password-file", str(tmp_path / "nope")], "", "--password-file"),
                                 (["remove-user", "nobody"], "", "no console user 'nobody'")]:
        r = streams(*args, stdin=stdin, env=env)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = streams("remove-user", "amy", env=env)
    assert r.returncode == 0 and UserStore(users).names() == ["root"]
