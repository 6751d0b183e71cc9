"""What the worker publishes: `RoutingDecision` (decisions/review topics) and `DeadLetter` (dead-letter topic).

`decide` is the pure step from one intake event and the model's probabilities to a decision. The
decision id is a UUIDv5 of (bucket, key, etag, model name, model version): the same object content
decided by the same model always gets the same id, so redeliveries and replays are idempotent
downstream. Both models carry `schema_version`; their JSON Schemas are committed under docs/schemas/
(`streams.worker.schemas.write_schemas`).
"""
from __future__ import annotations

import base64
import json
import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from streams.contract.curation import ModelRef
from streams.contract.model import Label
from streams.worker.events import IntakeEvent, Source

DECISION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:artroute:routing-decision")
ReviewReason = Literal["low_confidence", "small_margin"]


def decision_id(bucket: str, key: str, etag: str, model_name: str, model_version: str) -> str:
    """Deterministic UUIDv5 (string) for this object content decided by this model.

    The name hashed is the JSON array [bucket, key, etag, model_name, model_version] (unambiguous even
    for keys containing separators); the namespace is uuid5(NAMESPACE_URL, "urn:artroute:routing-decision").
    """
    name = json.dumps([bucket, key, etag, model_name, model_version], ensure_ascii=False, separators=(",", ":"))
    return str(uuid.uuid5(DECISION_NAMESPACE, name))


class ScoredLabel(BaseModel):
    label: str
    score: float = Field(ge=0, le=1)


class RoutingDecision(BaseModel):
    """Where one uploaded artwork photo goes. Published keyed by `key`; `needs_review` ones also go to review."""
    model_config = ConfigDict(frozen=True, title="RoutingDecision")

    schema_version: Literal[1] = 1
    decision_id: str = Field(description="UUIDv5 of bucket, key, etag, model name and version.")
    bucket: str
    key: str
    etag: str
    version_id: str | None = None
    source: Source
    department_id: int | None = Field(description="The department id the label stands for, from the answering "
                                                  "model version's contract (its taxonomy, or its corpus' rows); "
                                                  "null when none is known or the label merges several.")
    department: str = Field(description="The top-1 label: the department the photo is routed to.")
    confidence: float = Field(ge=0, le=1, description="Top-1 probability.")
    margin: float = Field(ge=0, le=1, description="Top-1 minus top-2 probability.")
    top3: list[ScoredLabel] = Field(min_length=1, max_length=3)
    model: ModelRef
    event_time: AwareDatetime
    decided_at: AwareDatetime
    needs_review: bool
    review_reason: ReviewReason | None = None


def decide(event: IntakeEvent, probs: np.ndarray, labels: Sequence[Label], model_name: str, model_version: str,
           min_confidence: float, min_margin: float, now: datetime) -> RoutingDecision:
    """One event + the model's class probabilities (C,) -> its routing decision.

    `labels` are the answering version's (its `ModelContract.labels`, in output order): the department and
    its id come from them, never from a table here.

    Review rule: top-1 below `min_confidence` -> "low_confidence"; otherwise top-1 minus top-2 below
    `min_margin` -> "small_margin". Ties rank the lower class index first. Raises ValueError when
    `probs` is not a finite probability vector matching `labels` (the worker dead-letters the event).
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1 or p.shape[0] != len(labels) or p.shape[0] == 0:
        raise ValueError(f"probabilities of shape {p.shape} do not match {len(labels)} labels")
    if not np.all(np.isfinite(p)) or p.min() < -1e-6 or abs(p.sum() - 1) > 1e-3:
        raise ValueError(f"not a probability vector (sum {p.sum():.6f}, min {p.min():.6f})")
    p = np.clip(p, 0.0, 1.0)
    order = np.argsort(-p, kind="stable")
    confidence = float(p[order[0]])
    margin = confidence - (float(p[order[1]]) if len(order) > 1 else 0.0)
    reason: ReviewReason | None = None
    if confidence < min_confidence:
        reason = "low_confidence"
    elif margin < min_margin:
        reason = "small_margin"
    top = labels[order[0]]
    return RoutingDecision(
        decision_id=decision_id(event.bucket, event.key, event.etag, model_name, model_version),
        bucket=event.bucket, key=event.key, etag=event.etag, version_id=event.version_id, source=event.source,
        department_id=top.department_id, department=top.name,
        confidence=confidence, margin=max(0.0, margin),
        top3=[ScoredLabel(label=labels[i].name, score=float(p[i])) for i in order[:3]],
        model=ModelRef(name=model_name, version=model_version),
        event_time=event.event_time, decided_at=now, needs_review=reason is not None, review_reason=reason)


class DeadLetter(BaseModel):
    """An intake message (or one of its events) that could not be decided, with the original bytes."""
    model_config = ConfigDict(frozen=True, title="DeadLetter")

    schema_version: Literal[1] = 1
    error_kind: str = Field(description='Stable error class, e.g. "invalid_record", "bad_protobuf", '
                                        '"not_found", "too_large", "corrupt", "bomb", "inference".')
    message: str
    stage: Literal["parse", "fetch", "decode", "infer", "decide"]
    original_b64: str = Field(description="The original intake message value, base64.")
    original_json: Any = Field(None, description="The original value parsed as JSON, when it is JSON.")
    original_key: str | None = Field(None, description="The original Kafka message key (UTF-8, replaced).")
    bucket: str | None = None
    key: str | None = None
    etag: str | None = None
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    failed_at: AwareDatetime

    @classmethod
    def from_message(cls, value: bytes, *, error_kind: str, message: str, stage: str, failed_at: datetime,
                     key: bytes | None = None, event: IntakeEvent | None = None, topic: str | None = None,
                     partition: int | None = None, offset: int | None = None) -> DeadLetter:
        """Build from the raw intake message; `event` (when one was parsed) names the object."""
        return cls(error_kind=error_kind, message=message, stage=stage, failed_at=failed_at,
                   original_b64=base64.b64encode(value).decode("ascii"), original_json=_json_or_none(value),
                   original_key=key.decode("utf-8", "replace") if key is not None else None,
                   bucket=event.bucket if event else None, key=event.key if event else None,
                   etag=event.etag if event else None,
                   source_topic=topic, source_partition=partition, source_offset=offset)

    def original_bytes(self) -> bytes:
        """The message value exactly as it arrived (for a replay onto the intake topic)."""
        return base64.b64decode(self.original_b64)


def _json_or_none(value: bytes) -> Any:
    try:
        doc = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return doc if _finite(doc) else None


def _finite(doc: Any) -> bool:
    """JSON with NaN/Infinity (accepted by json.loads) cannot be re-serialised as strict JSON."""
    if isinstance(doc, float):
        return math.isfinite(doc)
    if isinstance(doc, dict):
        return all(_finite(v) for v in doc.values())
    if isinstance(doc, list):
        return all(_finite(v) for v in doc)
    return True


def utc_now() -> datetime:
    return datetime.now(UTC)
