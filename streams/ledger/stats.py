"""Live accuracy per model version and per department, from curators' verdicts.

Truth for a decision is the effective verdict on the same content (object and etag), whichever model
version the curator answered (decisions.truth_*). Per group:

* coverage         share of decisions auto-routed (not sent to review);
* agreement        model top-1 = curator's department, over decisions with a verdict ("not routable"
                   counts as a disagreement: the model routed something that is no artwork);
* reviewed_agreement / audit_agreement  the same over decisions sent to review / over the audit sample
                   of auto-routed ones (ARTROUTE_AUDIT_RATE): the unbiased estimate of how right what
                   nobody reviews is;
* top3_hit_rate    curator's department among the model's top 3;
* backlog, oldest_pending_age_s  objects of this version waiting in the queue, and how long the oldest has.

The same numbers are Prometheus gauges (`StatsCollector`, on the API's /metrics), computed on scrape and
cached for a few seconds.
"""
from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import Connection, Engine, and_, func, select

from streams.ledger.db import read
from streams.ledger.ingest import OBJECTS
from streams.ledger.models import DecisionRow
from streams.ledger.queries import count_if
from streams.ledger.schemas import ConfusionCell, GroupStats, Stats

D = DecisionRow.__table__


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


COUNTS = ("decisions", "auto_routed", "with_verdict", "agree", "reviewed", "reviewed_agree", "audited", "audit_agree",
          "top3", "not_routable", "backlog")


def _tallies(conn: Connection, model_name: str | None) -> dict[tuple[str, str, str], dict]:
    """(model, version, department) -> counts and the oldest pending upload: one pass over decisions and
    one over the queue (the per-version figures are sums of these)."""
    keys = [D.c.model_name, D.c.model_version, D.c.department]
    has = D.c.truth_kind.is_not(None)
    agree = and_(has, D.c.truth_department == D.c.department)
    stmt = select(*keys, func.count(), count_if(~D.c.needs_review), count_if(has), count_if(agree),
                  count_if(and_(D.c.needs_review, has)), count_if(and_(D.c.needs_review, agree)),
                  count_if(and_(D.c.audit, has)), count_if(and_(D.c.audit, agree)),
                  count_if(and_(has, D.c.truth_rank.between(1, 3))), count_if(D.c.truth_kind == "not_routable")).group_by(*keys)
    o = OBJECTS
    okeys = [o.c.model_name, o.c.model_version, o.c.department]
    backlog = select(*okeys, func.count(), func.min(o.c.event_time)).where(o.c.status == "pending").group_by(*okeys)
    if model_name is not None:
        stmt, backlog = stmt.where(D.c.model_name == model_name), backlog.where(o.c.model_name == model_name)
    out: dict[tuple[str, str, str], dict] = {}
    for r in conn.execute(stmt):
        out[tuple(r[:3])] = {**dict(zip(COUNTS, r[3:])), "backlog": 0, "oldest": None}
    for r in conn.execute(backlog):
        t = out.setdefault(tuple(r[:3]), {**dict.fromkeys(COUNTS, 0), "oldest": None})
        t["backlog"], t["oldest"] = r[3], r[4]
    return out


def _group(key: tuple, t: dict, now: datetime) -> GroupStats:
    oldest = t["oldest"]
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return GroupStats(
        model_name=key[0], model_version=key[1], department=key[2] if len(key) > 2 else None,
        decisions=t["decisions"], auto_routed=t["auto_routed"], coverage=_ratio(t["auto_routed"], t["decisions"]),
        with_verdict=t["with_verdict"], agreement=_ratio(t["agree"], t["with_verdict"]), reviewed=t["reviewed"],
        reviewed_agreement=_ratio(t["reviewed_agree"], t["reviewed"]), audited=t["audited"],
        audit_agreement=_ratio(t["audit_agree"], t["audited"]), top3_hit_rate=_ratio(t["top3"], t["with_verdict"]),
        not_routable=t["not_routable"], backlog=t["backlog"],
        oldest_pending_age_s=round((now - oldest).total_seconds(), 1) if oldest else None)


def stats(conn: Connection, model_name: str | None = None) -> Stats:
    now = datetime.now(UTC)
    by_department = _tallies(conn, model_name)
    by_version: dict[tuple[str, str], dict] = {}
    for (model, version, _), t in by_department.items():
        v = by_version.setdefault((model, version), {**dict.fromkeys(COUNTS, 0), "oldest": None})
        for c in COUNTS:
            v[c] += t[c]
        if t["oldest"] is not None and (v["oldest"] is None or t["oldest"] < v["oldest"]):
            v["oldest"] = t["oldest"]
    return Stats(computed_at=now, models=[_group(k, v, now) for k, v in sorted(by_version.items())],
                 departments=[_group(k, t, now) for k, t in sorted(by_department.items())])


def confusion(conn: Connection, model_name: str, model_version: str) -> list[ConfusionCell]:
    """(model's department, curator's department) -> decisions, for one model version."""
    truth = func.coalesce(D.c.truth_department, "not routable")
    stmt = (select(D.c.department, truth, func.count())
            .where(D.c.model_name == model_name, D.c.model_version == model_version, D.c.truth_kind.is_not(None))
            .group_by(D.c.department, truth).order_by(D.c.department, truth))
    return [ConfusionCell(predicted=p, curator=c, n=n) for p, c, n in conn.execute(stmt)]


GAUGES = {  # metric suffix -> (GroupStats field, help)
    "decisions": ("decisions", "Decisions in the ledger"),
    "coverage": ("coverage", "Share of decisions auto-routed"),
    "agreement": ("agreement", "Model top-1 agrees with the curator, over decisions with a verdict"),
    "reviewed_agreement": ("reviewed_agreement", "Agreement on decisions sent to review"),
    "audit_agreement": ("audit_agreement", "Agreement on the audit sample of auto-routed decisions"),
    "top3_hit_rate": ("top3_hit_rate", "Curator's department in the model's top 3"),
    "verdicts": ("with_verdict", "Decisions with a curator's verdict"),
    "review_backlog": ("backlog", "Objects waiting in the review queue"),
    "review_oldest_age_seconds": ("oldest_pending_age_s", "Age of the oldest object waiting in the review queue"),
}


class StatsCollector:
    """Prometheus collector: artroute_ledger_<metric>{model, version} and _by_department{..., department}."""

    def __init__(self, engine: Engine, ttl_s: float = 10.0):
        self.engine, self.ttl_s = engine, ttl_s
        self._cached: tuple[float, Stats] | None = None
        self._lock = threading.Lock()

    def current(self) -> Stats:
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > self.ttl_s:
                with read(self.engine) as conn:
                    self._cached = (time.monotonic(), stats(conn))
            return self._cached[1]

    def collect(self):
        s = self.current()
        for suffix, (field, help_) in GAUGES.items():
            for groups, extra in ((s.models, ""), (s.departments, "_by_department")):
                labels = ["model", "version"] + (["department"] if extra else [])
                g = GaugeMetricFamily(f"artroute_ledger_{suffix}{extra}", help_, labels=labels)
                for grp in groups:
                    value = getattr(grp, field)
                    if value is not None:
                        g.add_metric([grp.model_name, grp.model_version] + ([grp.department] if extra else []), value)
                yield g
