"""Export the ledger for the collection management system: one row per object, its current department.

The department is the curator's when the current content has a verdict (source "curator"; a "not
routable" verdict gives no department and routable=false), else the model's (source "model"; status
"pending" means a curator has not seen it yet). Objects whose current outcome is a dead letter are left
out. `--since` keeps objects changed (decided again, or given a verdict) at or after that time;
`--department` keeps one department (name or id). CSV (UTF-8, header row) or Parquet.

examples:
  python -m streams ledger export --format csv --out ledger.csv
  python -m streams ledger export --format parquet --since 2026-01-01 --department "Egyptian Art" --out egypt.parquet
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine, case, or_, select

from streams.ledger.errors import Invalid
from streams.ledger.ingest import OBJECTS

COLUMNS = ["bucket", "key", "etag", "version_id", "department", "department_id", "routable", "source", "status",
           "confidence", "model_name", "model_version", "decision_id", "decided_at", "verdict_kind", "curator",
           "verdict_at", "updated_at"]
BATCH = 10_000


def parse_time(value: str) -> datetime:
    """ISO 8601 date or time; naive means UTC."""
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise Invalid(f"--since {value!r}: not an ISO date/time (2026-01-31 or 2026-01-31T12:00:00+01:00)") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def rows(engine: Engine, since: datetime | None = None, department: str | None = None) -> Iterator[dict[str, Any]]:
    o = OBJECTS
    curated = o.c.status == "reviewed"
    final_dept = case((curated, o.c.verdict_department), else_=o.c.department)
    final_id = case((curated, o.c.verdict_department_id), else_=o.c.department_id)
    stmt = select(o, final_dept.label("final_department"), final_id.label("final_department_id")).where(
        o.c.status != "dead_letter").order_by(o.c.id)
    if since is not None:
        stmt = stmt.where(o.c.updated_at >= since)
    if department is not None:
        stmt = stmt.where(or_(final_dept == department, final_id == int(department)) if department.isdigit()
                          else final_dept == department)
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=BATCH).execute(stmt)
        for r in result.mappings():
            by_curator = r["status"] == "reviewed"
            yield {"bucket": r["bucket"], "key": r["key"], "etag": r["etag"], "version_id": r["version_id"],
                   "department": r["final_department"], "department_id": r["final_department_id"],
                   "routable": not (by_curator and r["verdict_kind"] == "not_routable"),
                   "source": "curator" if by_curator else "model", "status": r["status"],
                   "confidence": r["confidence"], "model_name": r["model_name"], "model_version": r["model_version"],
                   "decision_id": r["decision_id"], "decided_at": r["outcome_at"],
                   "verdict_kind": r["verdict_kind"] if by_curator else None,
                   "curator": r["curator"] if by_curator else None,
                   "verdict_at": r["verdict_at"] if by_curator else None, "updated_at": r["updated_at"]}


def write_csv(items: Iterator[dict[str, Any]], out: IO[str]) -> int:
    w = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    n = 0
    for item in items:
        w.writerow({k: v.isoformat() if isinstance(v, datetime) else v for k, v in item.items()})
        n += 1
    return n


def write_parquet(items: Iterator[dict[str, Any]], out: Path | IO[bytes]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ts = pa.timestamp("us", tz="UTC")
    schema = pa.schema([("bucket", pa.string()), ("key", pa.string()), ("etag", pa.string()),
                        ("version_id", pa.string()), ("department", pa.string()), ("department_id", pa.int32()),
                        ("routable", pa.bool_()), ("source", pa.string()), ("status", pa.string()),
                        ("confidence", pa.float64()), ("model_name", pa.string()), ("model_version", pa.string()),
                        ("decision_id", pa.string()), ("decided_at", ts), ("verdict_kind", pa.string()),
                        ("curator", pa.string()), ("verdict_at", ts), ("updated_at", ts)])
    n, chunk = 0, []
    with pq.ParquetWriter(out, schema) as writer:
        for item in items:
            chunk.append(item)
            if len(chunk) == BATCH:
                writer.write_table(pa.Table.from_pylist(chunk, schema))
                n, chunk = n + len(chunk), []
        if chunk or n == 0:
            writer.write_table(pa.Table.from_pylist(chunk, schema))
            n += len(chunk)
    return n


def export(engine: Engine, fmt: str, out: Path | IO, since: datetime | None = None,
           department: str | None = None) -> int:
    """Write the export; returns the number of rows."""
    items = rows(engine, since, department)
    if fmt == "parquet":
        return write_parquet(items, out)
    if isinstance(out, Path):
        with out.open("w", encoding="utf-8", newline="") as f:
            return write_csv(items, f)
    return write_csv(items, out)


def _since(value: str) -> datetime:
    try:
        return parse_time(value)
    except Invalid as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--since ")) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["csv", "parquet"], default="csv", help="file format (default: csv)")
    p.add_argument("--out", type=Path, help="file to write (default: CSV to stdout; required for parquet)")
    p.add_argument("--since", type=_since, help="only objects changed at or after this ISO time (UTC if naive)")
    p.add_argument("--department", help="only this department (name or department id)")


def main(args: argparse.Namespace) -> int:
    from streams.ledger.runner import load_settings
    from streams.ledger.service import Ledger

    if args.format == "parquet" and args.out is None:
        raise Invalid("--format parquet needs --out FILE")
    ledger = Ledger.open(load_settings())
    if args.out is None:
        buf = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="", write_through=True)
        n = export(ledger.engine, "csv", buf, args.since, args.department)
        buf.detach()
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        n = export(ledger.engine, args.format, args.out, args.since, args.department)
    print(f"exported {n} objects" + (f" to {args.out}" if args.out else ""), file=sys.stderr)
    return 0
