"""What the worker publishes: `RoutingDecision` (decisions/review topics) and `DeadLetter` (dead-letter topic).

`decide` is the pure step from one intake event and the model's probabilities to a decision. The
decision id is a UUIDv5 of (bucket, key, etag, model name, model version): the same object content
decided by the same model always gets the same id, so redeliveries and replays are idempotent
downstream. Both models carry `schema_version`; their JSON Schemas are committed under docs/schemas/
(`streams.worker.schemas.write_schemas`).
"""
from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Literal

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from streams.worker.deadletters import DeadLetter  # noqa: F401 - moved to deadletters.py; importable from here
from streams.worker.events import IntakeEvent, Source

DECISION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:artroute:routing-decision")
ReviewReason = Literal["low_confidence", "small_margin"]

# MET department ids by display name, with the other names the same department goes by (object records,
# the public website). The /departments endpoint lists ids 1, 3-19 and 21.
MET_DEPARTMENTS: dict[int, tuple[str, ...]] = {
    1: ("The American Wing", "American Decorative Arts"),
    3: ("Ancient Near Eastern Art", "Ancient West Asian Art"),
    4: ("Arms and Armor",),
    5: ("Arts of Africa, Oceania, and the Americas",),
    6: ("Asian Art",),
    7: ("The Cloisters",),
    8: ("The Costume Institute",),
    9: ("Drawings and Prints",),
    10: ("Egyptian Art",),
    11: ("European Paintings",),
    12: ("European Sculpture and Decorative Arts",),
    13: ("Greek and Roman Art",),
    14: ("Islamic Art",),
    15: ("The Robert Lehman Collection",),
    16: ("The Libraries",),
    17: ("Medieval Art",),
    18: ("Musical Instruments",),
    19: ("Photographs",),
    21: ("Modern and Contemporary Art", "Modern Art"),
}


def _normalise(name: str) -> str:
    """Case, punctuation, '_'/'-' and a leading "the" do not matter: "the_costume-institute" matches."""
    words = re.sub(r"[^0-9a-z]+", " ", name.casefold()).split()
    return " ".join(words[1:] if words[:1] == ["the"] else words)


_MET_IDS = {_normalise(name): dept_id for dept_id, names in MET_DEPARTMENTS.items() for name in names}


def met_department_id(label: str) -> int | None:
    """The MET department id a label names, or None (another taxonomy: the label is the department)."""
    return _MET_IDS.get(_normalise(label))


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


class ModelRef(BaseModel):
    name: str
    version: str


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
    department_id: int | None = Field(description="MET department id when the label is a MET department.")
    department: str = Field(description="The top-1 label: the department the photo is routed to.")
    confidence: float = Field(ge=0, le=1, description="Top-1 probability.")
    margin: float = Field(ge=0, le=1, description="Top-1 minus top-2 probability.")
    top3: list[ScoredLabel] = Field(min_length=1, max_length=3)
    model: ModelRef
    event_time: AwareDatetime
    decided_at: AwareDatetime
    needs_review: bool
    review_reason: ReviewReason | None = None
    event_etag: str | None = Field(None, description="The eTag the event named, when the store held other content "
                                                     "(a newer upload): `etag` is what was fetched and decided.")
    uploaded_key: str | None = Field(None, description="The key as the event named it, when the store holds the "
                                                       "object under the normalised `key` (e.g. '//' collapsed).")


def decide(event: IntakeEvent, probs: np.ndarray, labels: list[str], model_name: str, model_version: str,
           min_confidence: float, min_margin: float, now: datetime) -> RoutingDecision:
    """One event + the model's class probabilities (C,) -> its routing decision.

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
    department = labels[order[0]]
    return RoutingDecision(
        decision_id=decision_id(event.bucket, event.key, event.etag, model_name, model_version),
        bucket=event.bucket, key=event.key, etag=event.etag, version_id=event.version_id, source=event.source,
        department_id=met_department_id(department), department=department,
        confidence=confidence, margin=max(0.0, margin),
        top3=[ScoredLabel(label=labels[i], score=float(p[i])) for i in order[:3]],
        model=ModelRef(name=model_name, version=model_version),
        event_time=event.event_time, decided_at=now, needs_review=reason is not None, review_reason=reason)


def utc_now() -> datetime:
    return datetime.now(UTC)
