"""Benchmark the routing ledger on PostgreSQL and SQLite: ingest rate and review-queue latency.

Per database (PostgreSQL: an embedded, durable server from Debian's package unless --postgres-url;
SQLite: a file under --work-dir):

1. ingest into an empty ledger: --decisions worker decisions (the worker's own `decide`, serialised as it
   publishes them) parsed and written in transactions of ARTROUTE_LEDGER_BATCH, as the consumer does
   (Kafka itself is not in the loop: this is the database side) -> decisions/s;
2. fill the ledger to --rows objects (one decision each; 30 % in the review queue, 19 departments,
   4 reasons, 3 model versions, uploads spread over a year), then ingest --decisions more -> decisions/s
   into a large ledger;
3. the review queue at that size: `Ledger.queue(limit=20)` with no filter and with each filter (department,
   reason, model version, department + reason), --queries times each, p50/p95/p99 ms; search by key
   prefix, counts and statistics once each (ms, for information).

Targets: >= 2,000 decisions/s into PostgreSQL; review-queue p95 <= 50 ms at 1,000,000 rows. JSON out.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from pydantic import BaseModel
from sqlalchemy import text

from streams.contract.taxonomy import load_taxonomy
from streams.ledger.bulk import RawJson, insert_ignore
from streams.ledger.db import make_engine, migrate, read, write
from streams.ledger.ingest import OBJECTS, Ingestor
from streams.ledger.messages import parse
from streams.ledger.models import DecisionRow
from streams.ledger.queries import queue
from streams.ledger.schemas import SearchQuery
from streams.ledger.service import Ledger
from streams.orchestration.harness import percentile
from streams.stack.processes import descendants, proc_stats
from streams.worker.decisions import decide
from streams.worker.events import IntakeEvent
from streams.worker.settings import Settings

DEPARTMENTS = load_taxonomy("met-19").class_names
REASONS = ["low_confidence", "small_margin", "unfamiliar", "audit"]
VERSIONS = ["1", "2", "3"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Ingest(BaseModel):
    per_s: float
    client_cpu_ms_per_decision: float
    server_cpu_ms_per_decision: float | None   # PostgreSQL's processes (embedded server only)


class BackendResult(BaseModel):
    database: str
    ingest_empty: Ingest
    ingest_at_rows: Ingest
    rows: int
    fill_seconds: float
    queue_ms: dict[str, dict[str, float | None]]
    queue_p95_ms: float
    search_prefix_ms: float
    counts_ms: float
    stats_ms: float


class LedgerBench(BaseModel):
    decisions: int
    rows: int
    batch: int
    cpus: int | None
    load_average: list[float]
    backends: dict[str, BackendResult]
    targets: dict[str, bool]


def messages(n: int, seed: int, prefix: str) -> list[bytes]:
    """n decisions of the worker's own kind, as published (JSON bytes)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        probs = rng.dirichlet(np.full(len(DEPARTMENTS), 0.3))
        ev = IntakeEvent(bucket="bench", key=f"{prefix}/{i:08d}.jpg", size=250_000, etag=uuid.uuid4().hex,
                         version_id=None, sequencer="", event_time=T0 + timedelta(seconds=i),
                         event_name="s3:ObjectCreated:Put", content_type="image/jpeg", source="s3")
        out.append(decide(ev, probs, DEPARTMENTS, "artroute", VERSIONS[i % 3], 0.75, 0.15,
                          T0 + timedelta(seconds=i + 1)).model_dump_json().encode())
    return out


def server_cpu_s(pid: int | None) -> float | None:
    """CPU seconds used so far by a server process and its children (None when unknown)."""
    if pid is None:
        return None
    stats = proc_stats()
    tick = os.sysconf("SC_CLK_TCK")
    return sum(int(stats[p][11]) + int(stats[p][12]) for p in {pid} | descendants(pid, stats) if p in stats) / tick


def ingest_rate(ingestor: Ingestor, msgs: list[bytes], batch: int, server_pid: int | None) -> Ingest:
    """Wall rate (what the target is about; a busy shared machine lowers it) and the CPU cost per decision
    of this process and of the database server (independent of other load)."""
    cpu0, srv0, t0 = time.process_time(), server_cpu_s(server_pid), time.perf_counter()
    for i in range(0, len(msgs), batch):
        ingestor.ingest([parse(m, "decision") for m in msgs[i:i + batch]])
    wall, cpu, srv = time.perf_counter() - t0, time.process_time() - cpu0, server_cpu_s(server_pid)
    return Ingest(per_s=round(len(msgs) / wall, 1), client_cpu_ms_per_decision=round(cpu * 1000 / len(msgs), 3),
                  server_cpu_ms_per_decision=round((srv - srv0) * 1000 / len(msgs), 3) if srv is not None else None)


def fill(engine, rows: int, chunk: int = 50_000, seed: int = 1) -> float:
    """`rows` objects with one decision each, written directly (bulk) in a realistic mix."""
    rng = random.Random(seed)
    t0 = time.perf_counter()
    now = datetime.now(UTC)
    with read(engine) as conn:
        start = (conn.execute(text("SELECT coalesce(max(id), 0) FROM objects")).scalar() or 0) + 1
    for lo in range(start, start + rows, chunk):
        objects, decisions = [], []
        for oid in range(lo, min(lo + chunk, start + rows)):
            dept = rng.randrange(len(DEPARTMENTS))
            pending = rng.random() < 0.3
            at = T0 + timedelta(seconds=rng.randrange(365 * 86400))
            did, etag = str(uuid.UUID(int=rng.getrandbits(128))), f"{rng.getrandbits(64):016x}"
            reason = rng.choice(REASONS) if pending else None
            version = rng.choice(VERSIONS)
            objects.append(dict(id=oid, bucket="bench", key=f"fill/{oid:08d}.jpg", etag=etag, version_id=None,
                                status="pending" if pending else "auto", first_seen_at=now, updated_at=now,
                                outcome_at=at, event_time=at, decision_id=did, model_name="artroute",
                                model_version=version, department=DEPARTMENTS[dept], department_id=dept + 1,
                                confidence=0.5 if pending else 0.9, needs_review=pending and reason != "audit",
                                queue_reason=reason))
            decisions.append(dict(decision_id=did, object_id=oid, etag=etag, model_name="artroute",
                                  model_version=version, department=DEPARTMENTS[dept], department_id=dept + 1,
                                  confidence=0.5 if pending else 0.9, margin=0.1,
                                  top3=[{"label": DEPARTMENTS[dept], "score": 0.5}], needs_review=pending,
                                  review_reason=reason, audit=reason == "audit", event_time=at, decided_at=at,
                                  ingested_at=now, raw=RawJson('{"bench": true}')))
        with write(engine) as conn:
            insert_ignore(conn, OBJECTS, objects, ["bucket", "key"])
            insert_ignore(conn, DecisionRow.__table__, decisions, ["decision_id"])
    with write(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('objects', 'id'), (SELECT max(id) FROM objects))")
            conn.exec_driver_sql("ANALYZE")
        else:
            conn.exec_driver_sql("ANALYZE")
    return round(time.perf_counter() - t0, 1)


def timed(fn, n: int) -> dict[str, float | None]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return {"p50": percentile(times, 0.5, 2), "p95": percentile(times, 0.95, 2), "p99": percentile(times, 0.99, 2)}


def queue_latency(engine, n: int, seed: int = 2) -> dict[str, dict[str, float | None]]:
    rng = random.Random(seed)
    filters = {
        "none": lambda: {},
        "department": lambda: {"department": rng.choice(DEPARTMENTS)},
        "reason": lambda: {"reason": rng.choice(REASONS)},
        "model_version": lambda: {"model_version": rng.choice(VERSIONS)},
        "department+reason": lambda: {"department": rng.choice(DEPARTMENTS), "reason": rng.choice(REASONS)},
    }

    def one(make):
        with read(engine) as conn:
            queue(conn, limit=20, **make())
    return {name: timed(lambda make=make: one(make), n) for name, make in filters.items()}


def once_ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return round((time.perf_counter() - t0) * 1000, 1)


def bench_backend(name: str, url: str, args: argparse.Namespace, server_pid: int | None = None) -> BackendResult:
    engine = make_engine(url)
    migrate(engine)
    settings = Settings(ledger_url=url)
    ingestor = Ingestor(engine, settings.audit_rate)
    print(f"[{name}] ingest {args.decisions} decisions into an empty ledger ...", flush=True)
    empty = ingest_rate(ingestor, messages(args.decisions, 10, "empty"), settings.ledger_batch, server_pid)
    print(f"[{name}]   {empty}; filling to {args.rows} rows ...", flush=True)
    fill_s = fill(engine, args.rows - args.decisions)
    print(f"[{name}]   filled in {fill_s}s; ingest {args.decisions} more ...", flush=True)
    full = ingest_rate(ingestor, messages(args.decisions, 11, "full"), settings.ledger_batch, server_pid)
    with read(engine) as conn:
        rows = conn.execute(text("SELECT count(*) FROM objects")).scalar()
    print(f"[{name}]   {full} at {rows} rows; review queue x{args.queries} per filter ...", flush=True)
    q = queue_latency(engine, args.queries)
    ledger = Ledger(engine, settings)
    result = BackendResult(
        database=name, ingest_empty=empty, ingest_at_rows=full, rows=rows, fill_seconds=fill_s,
        queue_ms=q, queue_p95_ms=max(v["p95"] for v in q.values()),
        search_prefix_ms=once_ms(lambda: ledger.search(SearchQuery(prefix="fill/0001", limit=50))),
        counts_ms=once_ms(lambda: ledger.counts()), stats_ms=once_ms(lambda: ledger.stats()))
    print(f"[{name}]   queue p95 {result.queue_p95_ms} ms (worst filter)", flush=True)
    engine.dispose()
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("runs/bench/ledger.json"), help="JSON result file")
    p.add_argument("--rows", type=int, default=1_000_000, help="ledger size for the queue latency (default 1,000,000)")
    p.add_argument("--decisions", type=int, default=20_000, help="decisions per ingest measurement (default 20,000)")
    p.add_argument("--queries", type=int, default=200, help="review-queue queries per filter (default 200)")
    p.add_argument("--postgres-url", help="bench this PostgreSQL database instead of an embedded server (emptied!)")
    p.add_argument("--only", choices=["postgresql", "sqlite"], help="bench one database only (default: both)")
    p.add_argument("--work-dir", type=Path, help="where the SQLite file and the server's data go (default: a temp dir)")


def main(args: argparse.Namespace) -> int:
    from streams.stack.postgres import PostgresServer

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="artroute-ledger-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, BackendResult] = {}
    if args.only in (None, "postgresql"):
        if args.postgres_url:
            results["postgresql"] = bench_backend("postgresql", args.postgres_url, args)
        else:
            with PostgresServer(work / "postgres", durable=True) as pg:
                results["postgresql"] = bench_backend("postgresql", pg.create_database("ledger_bench"), args,
                                                      pg.process.pid)
    if args.only in (None, "sqlite"):
        db = work / "ledger-bench.db"
        for f in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            f.unlink(missing_ok=True)
        results["sqlite"] = bench_backend("sqlite", f"sqlite:///{db}", args)
    pg = results.get("postgresql")
    targets = {"postgresql_ingest_ge_2000_per_s": bool(pg and min(pg.ingest_empty.per_s, pg.ingest_at_rows.per_s) >= 2000),
               "queue_p95_le_50_ms": all(r.queue_p95_ms <= 50 for r in results.values())}
    out = LedgerBench(decisions=args.decisions, rows=args.rows, batch=Settings().ledger_batch, cpus=os.cpu_count(),
                      load_average=[round(x, 2) for x in os.getloadavg()], backends=results, targets=targets)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(out.model_dump_json(indent=2) + "\n")
    print(json.dumps(out.model_dump(), indent=2))
    return 0
