"""Local console accounts: a JSON file of user names, roles and argon2id password hashes.

    python -m streams console add-user amy --role curator          # password from stdin (or --password-file)

The file (ARTROUTE_CONSOLE_USERS_FILE) is written atomically and owner-only (0600); the console re-reads
it when it changes, so adding or removing a user needs no restart and a removed user's session ends at
its next request. Passwords are never stored or logged, only their argon2id hashes (argon2-cffi's
defaults: RFC 9106's low-memory profile); a hash made with older parameters is upgraded at the next login.
"""
from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from streams.contract.cli import UserError

Role = Literal["curator", "admin"]
ROLES: tuple[Role, ...] = ("curator", "admin")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD = 8


class AccountError(UserError):
    """A bad user name, role or password, or an unusable users file."""


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    via: str = "local"          # local | oidc

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise AccountError(f"user name {name!r}: 1-64 letters, digits and . _ @ - (starting with a letter or digit)")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password needs at least {MIN_PASSWORD} characters")
    return password


class UserStore:
    """The users file; `verify(name, password)` -> User or None (constant work for unknown names)."""

    def __init__(self, path: Path, hasher: PasswordHasher | None = None):
        self.path, self.hasher = Path(path), hasher or PasswordHasher()
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, dict] = {}
        self._dummy = self.hasher.hash("artroute: no such user")

    # --- reading -----------------------------------------------------------------------------------
    def _load(self) -> dict[str, dict]:
        with self._lock:
            try:
                st = self.path.stat()
            except FileNotFoundError:
                self._stamp, self._users = None, {}
                return self._users
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                try:
                    doc = json.loads(self.path.read_text(encoding="utf-8"))
                    users = doc["users"]
                    assert isinstance(users, dict)
                except (ValueError, KeyError, AssertionError, OSError) as e:
                    raise AccountError(f"{self.path}: not a console users file ({type(e).__name__})") from None
                self._stamp, self._users = stamp, users
            return self._users

    def get(self, name: str) -> User | None:
        entry = self._load().get(name)
        return User(name, entry["role"]) if entry and entry.get("role") in ROLES else None

    def names(self) -> list[str]:
        return sorted(self._load())

    def verify(self, name: str, password: str) -> User | None:
        entry = self._load().get(name)
        if not entry or entry.get("role") not in ROLES:
            try:  # the same work as for a real user: response time does not tell which names exist
                self.hasher.verify(self._dummy, password + "x")
            except VerificationError:
                pass
            return None
        try:
            self.hasher.verify(entry["hash"], password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if self.hasher.check_needs_rehash(entry["hash"]):
            try:
                self._update(name, lambda e: {**e, "hash": self.hasher.hash(password)})
            except OSError:   # a read-only users file (a Kubernetes Secret): keep the old hash, still log in
                pass
        return User(name, entry["role"])

    # --- writing -----------------------------------------------------------------------------------
    def add(self, name: str, role: str, password: str) -> bool:
        """Create or replace the account; True when it existed."""
        check_name(name)
        if role not in ROLES:
            raise AccountError(f"role {role!r}: curator or admin")
        hashed = self.hasher.hash(check_password(password))
        existed = name in self._load()
        self._update(name, lambda e: {"role": role, "hash": hashed,
                                      "created_at": (e or {}).get("created_at") or _now(), "updated_at": _now()})
        return existed

    def remove(self, name: str) -> bool:
        if name not in self._load():
            return False
        self._update(name, lambda e: None)
        return True

    def _update(self, name: str, change) -> None:
        users = dict(self._load())
        new = change(users.get(name))
        if new is None:
            users.pop(name, None)
        else:
            users[name] = new
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"users": users}, f, indent=2, sort_keys=True)
        os.replace(tmp, self.path)
        with self._lock:
            self._stamp = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
