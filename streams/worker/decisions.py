"""What the worker publishes: `RoutingDecision` (decisions/review topics) and `DeadLetter` (dead-letter topic).

`decide` is the pure step from one intake event and the model's probabilities to a decision. The
decision id is a UUIDv5 of (bucket, key, etag, model name, model version): the same object content
decided by the same model always gets the same id, so redeliveries and replays are idempotent
downstream. Both models carry `schema_version`; their JSON Schemas are committed under docs/schemas/
(`streams.worker.schemas.write_schemas`).
"""
from __future__ import annotations

import json
import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from streams.contract.curation import ModelRef
from streams.contract.model import Label
from streams.contract.routing import RoutingRule
from streams.worker.deadletters import DeadLetter  # noqa: F401 - moved to deadletters.py; importable from here
from streams.worker.events import IntakeEvent, Source

DECISION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:artroute:routing-decision")
ReviewReason = Literal["unfamiliar", "low_confidence", "small_margin"]


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
    routing: Literal["ltt", "global"] | None = Field(None, description="The rule that decided: the answering "
                                                     "version's fitted rule (ltt) or the global thresholds.")
    prediction_set: list[str] | None = Field(None, description="Where the rule has prediction sets: the labels "
                                             "the photo may belong to, most probable first (the department alone "
                                             "when auto-routed).")
    unfamiliarity: float | None = Field(None, description="How unlike the training photos the image is, when the "
                                        "version computes it (reason `unfamiliar` above the rule's threshold).")
    event_etag: str | None = Field(None, description="The eTag the event named, when the store held other content "
                                                     "(a newer upload): `etag` is what was fetched and decided.")
    uploaded_key: str | None = Field(None, description="The key as the event named it, when the store holds the "
                                                       "object under the normalised `key` (e.g. '//' collapsed).")


def decide(event: IntakeEvent, probs: np.ndarray, labels: Sequence[Label], model_name: str, model_version: str,
           min_confidence: float, min_margin: float, now: datetime, rule: RoutingRule | None = None,
           unfamiliarity: float | None = None) -> RoutingDecision:
    """One event + the model's class probabilities (C,) -> its routing decision.

    `labels` are the answering version's (its `ModelContract.labels`, in output order): the department and
    its id come from them, never from a table here.

    Review rule: `rule` (the version's `RoutingRule`: an unfamiliarity score above its threshold ->
    "unfamiliar", whatever the confidence; then its fitted confidence threshold; a rule with a threshold needs
    the score: the router drops the gate where the config serves none), or without one the global
    thresholds: top-1 below `min_confidence` -> "low_confidence"; otherwise top-1 minus top-2 below
    `min_margin` -> "small_margin". Ties rank the lower class index first. Raises ValueError when
    `probs` is not a finite probability vector matching `labels` (the worker dead-letters the event).
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1 or p.shape[0] != len(labels) or p.shape[0] == 0:
        raise ValueError(f"probabilities of shape {p.shape} do not match {len(labels)} labels")
    p = p.tolist()  # plain floats from here: a few dozen classes cost numpy more in calls than in work
    finite = all(math.isfinite(x) for x in p)
    low, total = (min(p), math.fsum(p)) if finite else (math.nan, math.nan)
    if not finite or low < -1e-6 or abs(total - 1) > 1e-3:
        raise ValueError(f"not a probability vector (sum {total:.6f}, min {low:.6f})")
    p = [min(1.0, max(0.0, x)) for x in p]
    order = sorted(range(len(p)), key=p.__getitem__, reverse=True)  # stable: ties rank the lower index first
    confidence = p[order[0]]
    margin = confidence - (p[order[1]] if len(order) > 1 else 0.0)
    if rule is None:
        rule = _global_rule(tuple(lb.name for lb in labels), min_confidence, min_margin)
    auto, why, members = rule.apply_ordered(p, order, unfamiliarity)  # the same order: not sorted again
    reason: ReviewReason | None = None if auto else why
    top = labels[order[0]]
    return RoutingDecision(
        decision_id=decision_id(event.bucket, event.key, event.etag, model_name, model_version),
        bucket=event.bucket, key=event.key, etag=event.etag, version_id=event.version_id, source=event.source,
        department_id=top.department_id, department=top.name,
        confidence=confidence, margin=max(0.0, margin),
        top3=[ScoredLabel(label=labels[i].name, score=p[i]) for i in order[:3]],
        model=ModelRef(name=model_name, version=model_version),
        event_time=event.event_time, decided_at=now, needs_review=reason is not None, review_reason=reason,
        routing=rule.method, prediction_set=members if rule.set_threshold is not None else None,
        unfamiliarity=None if unfamiliarity is None else float(unfamiliarity))


@lru_cache(maxsize=64)
def _global_rule(names: tuple[str, ...], min_confidence: float, min_margin: float) -> RoutingRule:
    return RoutingRule.global_thresholds(list(names), min_confidence, min_margin)


def utc_now() -> datetime:
    return datetime.now(UTC)
