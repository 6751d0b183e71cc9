"""`Ledger`: the Python API of the routing ledger (the console calls it; the HTTP API wraps it).

    ledger = Ledger.open()                          # ARTROUTE_LEDGER_URL, migrated to the newest schema
    items = ledger.queue(limit=20, reason="low_confidence")
    ledger.record_verdict(items[0].decision_id, "correct", curator="amy", department="Asian Art")
    ledger.bulk_confirm([i.decision_id for i in items[1:]], curator="amy")
    ledger.search(SearchQuery(prefix="incoming/", status="reviewed"))
    ledger.stats(); ledger.confusion("artroute", "3"); ledger.counts(prefix="incoming/")

Every method is synchronous (SQLAlchemy); call it from a thread in async code.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Engine

from streams.contract.curation import CuratedPage, Verdict
from streams.contract.taxonomy import load_taxonomy
from streams.ledger import queries
from streams.ledger.db import make_engine, migrate, read
from streams.ledger.ingest import Ingestor
from streams.ledger.schemas import (ConfusionCell, Counts, DeadLetterPage, Department, ObjectHistory, Page, QueueItem,
                                    SearchQuery, Stats)
from streams.ledger.stats import confusion, stats
from streams.ledger.verdicts import Recorder, VerdictRequest
from streams.worker.settings import Settings


def taxonomy_departments(name: str) -> dict[str, int | None]:
    """Class name -> department id (when the class has exactly one) of a taxonomy; {} for none."""
    if not name:
        return {}
    tax = load_taxonomy(name)
    return {c.name: c.department_ids[0] if len(c.department_ids) == 1 else None for c in tax.classes}


class Ledger:
    def __init__(self, engine: Engine, settings: Settings):
        self.engine, self.settings = engine, settings
        self.ingestor = Ingestor(engine, settings.audit_rate)
        self.recorder = Recorder(engine, settings.verdicts_topic, taxonomy_departments(settings.ledger_taxonomy))

    @classmethod
    def open(cls, settings: Settings | None = None, url: str | None = None, upgrade: bool = True) -> "Ledger":
        """The ledger at `url` (default ARTROUTE_LEDGER_URL), its schema upgraded first unless told not to."""
        settings = settings or Settings()
        password = settings.ledger_password.get_secret_value() if settings.ledger_password else None
        engine = make_engine(url or settings.ledger_url, password)
        if upgrade:
            migrate(engine)
        return cls(engine, settings)

    def close(self) -> None:
        self.engine.dispose()

    # --- review ------------------------------------------------------------------------------------
    def queue(self, limit: int = 20, department: str | None = None, reason: str | None = None,
              model_version: str | None = None, exclude: Sequence[int] = ()) -> list[QueueItem]:
        """Next objects to review, oldest upload first (filters: predicted department, reason, model version;
        `exclude`: object ids to skip, e.g. those a curator skipped)."""
        with read(self.engine) as conn:
            return queries.queue(conn, limit, department, reason, model_version, exclude)

    def record_verdict(self, decision_id: str, kind: str, curator: str, department: str | None = None,
                       note: str = "", verdict_id: str | None = None, at: datetime | None = None) -> Verdict:
        """kind: confirm | correct (with `department`) | not_routable. `verdict_id` makes a retry idempotent."""
        return self.recorder.record([VerdictRequest(decision_id, kind, curator, department, note, verdict_id)], at)[0]

    def record_verdicts(self, requests: Sequence[VerdictRequest], at: datetime | None = None) -> list[Verdict]:
        return self.recorder.record(requests, at)

    def bulk_confirm(self, decision_ids: Sequence[str], curator: str, at: datetime | None = None) -> list[Verdict]:
        """Confirm many decisions in one transaction (the console's grid)."""
        return self.recorder.record([VerdictRequest(d, "confirm", curator) for d in decision_ids], at)

    def retract(self, verdict_id: str, curator: str, at: datetime | None = None) -> Verdict:
        """Undo a verdict: the object gets its previous verdict back, or returns to the queue."""
        return self.recorder.retract(verdict_id, curator, at)

    def departments(self, model_name: str) -> list[Department]:
        """What a verdict on this model's decisions may name."""
        with read(self.engine) as conn:
            return [Department(label=k, department_id=v)
                    for k, v in sorted(self.recorder.departments(conn, model_name).items())]

    # --- reading -----------------------------------------------------------------------------------
    def search(self, query: SearchQuery) -> Page:
        with read(self.engine) as conn:
            return queries.search(conn, query)

    def history(self, object_id: int | None = None, bucket: str | None = None, key: str | None = None) -> ObjectHistory:
        with read(self.engine) as conn:
            return queries.history(conn, object_id, bucket, key)

    def dead_letters(self, limit: int = 50, cursor: str | None = None, kind: str | None = None) -> DeadLetterPage:
        with read(self.engine) as conn:
            return queries.dead_letters(conn, limit, cursor, kind)

    def counts(self, prefix: str | None = None) -> Counts:
        with read(self.engine) as conn:
            return queries.counts(conn, prefix)

    def curated(self, cursor: str | None = None, limit: int = 500) -> CuratedPage:
        with read(self.engine) as conn:
            return queries.curated(conn, cursor, limit)

    def known_object(self, bucket: str, key: str, etag: str) -> bool:
        with read(self.engine) as conn:
            return queries.known_object(conn, bucket, key, etag)

    def stats(self, model_name: str | None = None) -> Stats:
        with read(self.engine) as conn:
            return stats(conn, model_name)

    def confusion(self, model_name: str, model_version: str) -> list[ConfusionCell]:
        with read(self.engine) as conn:
            return confusion(conn, model_name, model_version)
