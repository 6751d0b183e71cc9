"""Real worker messages for ledger tests: decisions made by the worker's own `decide`, dead letters by
`DeadLetter.from_message`, serialised as the worker publishes them."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from streams.contract.model import Label
from streams.ledger.messages import parse
from streams.ledger.verdicts import met_department_ids
from streams.worker.decisions import DeadLetter, RoutingDecision, decide
from streams.worker.events import IntakeEvent

LABELS = ["Egyptian Art", "Asian Art", "European Paintings", "Arms and Armor"]
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def event(key: str, etag: str = "e0", bucket: str = "artworks", at: datetime = T0) -> IntakeEvent:
    return IntakeEvent(bucket=bucket, key=key, size=100, etag=etag, version_id=None, sequencer="", event_time=at,
                       event_name="s3:ObjectCreated:Put", content_type="image/jpeg", source="s3")


def decision(key: str, top: int = 0, confidence: float = 0.9, version: str = "1", etag: str = "e0",
             decided_at: datetime | None = None, labels: list[str] = LABELS, **kw) -> RoutingDecision:
    """The worker's decision on `key`: top-1 = labels[top] with `confidence`, the rest spread evenly."""
    p = np.full(len(labels), (1 - confidence) / (len(labels) - 1))
    p[top] = confidence
    at = decided_at or T0 + timedelta(minutes=1)
    ids = met_department_ids()
    contract_labels = [Label(name=lb, department_ids=[ids[lb]] if lb in ids else []) for lb in labels]
    return decide(event(key, etag, at=kw.pop("event_time", T0)), p, contract_labels, "artroute", version,
                  kw.pop("min_confidence", 0.75), kw.pop("min_margin", 0.15), at)


def dead_letter(key: str | None, kind: str = "corrupt", offset: int = 1, failed_at: datetime | None = None,
                etag: str = "e0") -> DeadLetter:
    ev = event(key, etag) if key is not None else None
    return DeadLetter.from_message(b'{"Records": []}', error_kind=kind, message=f"{kind} image", stage="decode",
                                   failed_at=failed_at or T0 + timedelta(minutes=1), event=ev,
                                   topic="artroute.intake", partition=0, offset=offset)


def items(*messages):
    """Parsed ledger items, as the consumer hands them to the ingestor."""
    out = []
    for m in messages:
        kind = "dead_letter" if isinstance(m, DeadLetter) else "decision"
        out.append(parse(m.model_dump_json().encode(), kind))
    return out
