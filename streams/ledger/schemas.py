"""What the ledger's API returns (Python and HTTP/JSON alike). The shapes trainer reads live in
streams/contract/curation.py; everything here is for the console and operators."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field

Status = Literal["pending", "reviewed", "auto", "dead_letter"]


class ScoredDecision(BaseModel):
    """What a decision said: the model, its department and scores (shared by queue items and history)."""
    decision_id: str
    etag: str
    model_name: str
    model_version: str
    department: str
    department_id: int | None
    confidence: float
    margin: float
    top3: list[dict[str, Any]]


class QueueItem(ScoredDecision):
    """One object waiting for a curator: its current decision and why it waits."""
    object_id: int
    bucket: str
    key: str
    reason: str = Field(description='review reason of the decision ("low_confidence", "small_margin", '
                                    '"unfamiliar", ...) or "audit" for the audit sample')
    event_time: AwareDatetime
    decided_at: AwareDatetime
    decision: dict[str, Any] = Field(description="the decision as published (fields the ledger has no column for, "
                                                 "e.g. a prediction set, are here)")


class ObjectSummary(BaseModel):
    id: int
    bucket: str
    key: str
    etag: str | None
    status: Status
    decision_id: str | None = Field(description="the current decision")
    department: str | None
    department_id: int | None
    confidence: float | None
    model_name: str | None
    model_version: str | None
    reason: str | None
    event_time: datetime
    outcome_at: datetime
    error_kind: str | None
    verdict_id: str | None
    verdict_kind: str | None
    verdict_department: str | None
    curator: str | None
    verdict_at: datetime | None


class Page(BaseModel):
    items: list[ObjectSummary]
    total: int
    next_cursor: str | None = None


class SearchQuery(BaseModel):
    key: str | None = Field(None, description="exact object key")
    prefix: str | None = Field(None, description="object key prefix")
    bucket: str | None = None
    department: str | None = Field(None, description="the model's department of the current decision")
    verdict_department: str | None = Field(None, description="the curator's department")
    status: Status | None = None
    model_version: str | None = None
    since: AwareDatetime | None = Field(None, description="uploaded at or after")
    until: AwareDatetime | None = Field(None, description="uploaded before")
    cursor: str | None = None
    limit: int = Field(50, ge=1, le=1000)


class DecisionOut(ScoredDecision):
    needs_review: bool
    review_reason: str | None
    audit: bool
    event_time: datetime
    decided_at: datetime
    truth_kind: str | None
    truth_department: str | None


class VerdictOut(BaseModel):
    verdict_id: str
    decision_id: str
    etag: str
    model_name: str
    model_version: str
    kind: str
    department: str | None
    department_id: int | None
    retracts: str | None
    curator: str
    recorded_at: datetime
    note: str


class DeadLetterOut(BaseModel):
    id: str
    object_id: int | None
    bucket: str | None
    key: str | None
    etag: str | None
    error_kind: str
    stage: str
    message: str
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    failed_at: datetime
    redecided_at: datetime | None = Field(None, description="when the object was decided after this dead letter")


class DeadLetterPage(BaseModel):
    items: list[DeadLetterOut]
    next_cursor: str | None = None


class ObjectHistory(BaseModel):
    object: ObjectSummary
    decisions: list[DecisionOut]
    verdicts: list[VerdictOut]
    dead_letters: list[DeadLetterOut]


class Counts(BaseModel):
    """Objects by their current outcome (what `make demo` compares with the Kafka topics)."""
    objects: int
    decided: int
    in_review: int = Field(description="current decision needs review (the worker's review topic)")
    audit: int = Field(description="auto-routed, picked for the audit sample, no verdict yet")
    pending: int = Field(description="in the review queue now (review or audit, no verdict)")
    reviewed: int
    dead_letters: int = Field(description="objects whose current outcome is a dead letter")
    dead_letter_messages: int = Field(description="dead-letter rows, objects or not")
    decisions: int = Field(description="decision rows (history, every model version)")
    verdicts: int


class GroupStats(BaseModel):
    """Live accuracy of one model version (and department, when grouped)."""
    model_name: str
    model_version: str
    department: str | None = None
    decisions: int
    auto_routed: int
    coverage: float | None = Field(description="share auto-routed")
    with_verdict: int
    agreement: float | None = Field(description="model top-1 = curator, over decisions with a verdict")
    reviewed: int = Field(description="decisions sent to review that have a verdict")
    reviewed_agreement: float | None
    audited: int = Field(description="audit-sample decisions (auto-routed) that have a verdict")
    audit_agreement: float | None = Field(description="estimated accuracy of what is auto-routed")
    top3_hit_rate: float | None = Field(description="curator's department in the model's top 3")
    not_routable: int
    backlog: int = Field(description="objects of this model version waiting in the review queue")
    oldest_pending_age_s: float | None


class Stats(BaseModel):
    computed_at: AwareDatetime
    models: list[GroupStats]
    departments: list[GroupStats]


class ConfusionCell(BaseModel):
    predicted: str
    curator: str = Field(description='the curator\'s department, or "not routable"')
    n: int


class Department(BaseModel):
    label: str
    department_id: int | None
