"""Reading the worker's messages, tolerant of their evolution.

The ledger reads only the fields it keeps in columns; everything else stays in the raw JSON beside them.
Unknown fields are ignored, `review_reason` and `stage` are plain strings (new reasons such as
``unfamiliar`` or ``audit`` need no ledger release), `schema_version` may grow, and a dead letter may carry
the original message or only a reference to it. A message that still does not parse is counted and
skipped (logged with its topic/partition/offset): it can never stall the ledger's partitions.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

DEAD_LETTER_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:artroute:ledger-dead-letter")
MAX_RAW_BYTES = 64 * 1024
"""Dead letters larger than this are stored without their embedded original (size and sha256 kept)."""
BULKY_FIELDS = ("original_b64", "original_json")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ScoredLabelIn(_Lenient):
    label: str
    score: float


class ModelIn(_Lenient):
    name: str
    version: str


class DecisionIn(_Lenient):
    """What the ledger needs of a `RoutingDecision` (streams/worker/decisions.py)."""
    schema_version: int = 1
    decision_id: str = Field(min_length=1, max_length=36)
    bucket: str
    key: str
    etag: str
    version_id: str | None = None
    department_id: int | None = None
    department: str
    confidence: float
    margin: float = 0.0
    top3: list[ScoredLabelIn] = Field(min_length=1)
    model: ModelIn
    event_time: AwareDatetime
    decided_at: AwareDatetime
    needs_review: bool
    review_reason: str | None = None


class DeadLetterIn(_Lenient):
    """What the ledger needs of a `DeadLetter` (streams/worker/decisions.py)."""
    schema_version: int = 1
    error_kind: str
    message: str = ""
    stage: str
    bucket: str | None = None
    key: str | None = None
    etag: str | None = None
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    failed_at: AwareDatetime


@dataclass(frozen=True)
class Decision:
    msg: DecisionIn
    text: str                       # the message as it came (stored as the raw JSON)

    def without_raw(self, why: str) -> "Decision":
        return Decision(self.msg, json.dumps({"ledger_raw_unstorable": why[:300]}))


@dataclass(frozen=True)
class DeadLetter:
    id: str
    msg: DeadLetterIn
    text: str

    def without_raw(self, why: str) -> "DeadLetter":
        return DeadLetter(self.id, self.msg, json.dumps({"ledger_raw_unstorable": why[:300]}))


@dataclass(frozen=True)
class Rejected:
    reason: str


def dead_letter_id(dl: DeadLetterIn, raw: dict[str, Any]) -> str:
    """Deterministic: a redelivered intake event dead-lettered again (same source offset, same object,
    same error) gets the same id, so it is stored once. Without source coordinates the raw message
    (less its time) identifies it."""
    parts: list[Any] = [dl.source_topic, dl.source_partition, dl.source_offset, dl.bucket, dl.key, dl.etag,
                        dl.error_kind, dl.stage]
    if dl.source_topic is None and dl.source_offset is None:
        rest = {k: v for k, v in raw.items() if k != "failed_at"}
        parts.append(hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest())
    name = json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
    return str(uuid.uuid5(DEAD_LETTER_NAMESPACE, name))


def slim(raw: dict[str, Any], size: int) -> dict[str, Any]:
    """The raw dead letter, without its embedded original when the message is large."""
    if size <= MAX_RAW_BYTES or not any(f in raw for f in BULKY_FIELDS):
        return raw
    out = {k: v for k, v in raw.items() if k not in BULKY_FIELDS}
    b64 = raw.get("original_b64") or ""
    out["ledger_stripped"] = {"fields": [f for f in BULKY_FIELDS if f in raw], "message_bytes": size,
                              "original_b64_sha256": hashlib.sha256(b64.encode()).hexdigest()}
    return out


def parse(value: bytes | None, kind: str) -> Decision | DeadLetter | Rejected:
    """One Kafka message of the decisions/review topics (kind "decision") or dead-letter topic."""
    if not value:
        return Rejected("empty")
    try:
        text = value.decode("utf-8")
        if kind == "decision":  # the hot path: validated straight from the bytes, stored as they came
            return Decision(DecisionIn.model_validate_json(value), text)
        raw = json.loads(text)
        if not isinstance(raw, dict):
            return Rejected("not_an_object")
        dl = DeadLetterIn.model_validate(raw)
        slimmed = slim(raw, len(value))
        return DeadLetter(dead_letter_id(dl, raw), dl, text if slimmed is raw else json.dumps(slimmed))
    except (ValueError, RecursionError) as e:  # ValidationError and UnicodeDecodeError are ValueErrors
        if not isinstance(e, ValidationError):
            return Rejected("not_json")
        err = e.errors()[0]
        if err["type"] in ("json_invalid", "recursion_loop") or err["type"].startswith("json"):
            return Rejected("not_json")
        if err["type"] == "model_type":
            return Rejected("not_an_object")
        return Rejected(f"invalid:{'.'.join(str(p) for p in err['loc']) or 'message'}")


def in_sample(decision_id: str, rate: float) -> bool:
    """The audit sample: a fixed share of decision ids by hash (reproducible, independent of order)."""
    if rate <= 0:
        return False
    u = int.from_bytes(hashlib.sha256(decision_id.encode()).digest()[:8], "big") / 2**64
    return u < rate


def top3_rank(top3: list[dict[str, Any]], department: str | None) -> int:
    """1..3: where the curator's department is in the model's top 3; 0: not there (or not routable)."""
    for i, entry in enumerate(top3[:3], 1):
        if department is not None and entry.get("label") == department:
            return i
    return 0
