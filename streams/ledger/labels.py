"""Which departments a model outputs, so a verdict can name any of them, not only those already seen.

The ledger learns labels from every decision's top 3 (ingest.py). `ledger run` also asks Triton for the
served model's labels (the same model metadata the worker reads, ARTROUTE_TRITON_URL/_MODEL_NAME) at
start and every few minutes; Triton being away only means this is skipped. ARTROUTE_LEDGER_TAXONOMY adds
a taxonomy's classes on top.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, func

from streams.ledger.bulk import insert_stmt
from streams.ledger.db import write
from streams.ledger.models import ModelLabelRow
from streams.worker.settings import Settings

log = logging.getLogger(__name__)
REFRESH_S = 300.0


async def served_labels(settings: Settings, timeout_s: float = 10.0) -> tuple[str, dict[str, int | None]] | None:
    """(model name, {label: department id}) of the newest version Triton serves (its model contract), or None
    when Triton does not answer."""
    from streams.worker.inference import TritonModel

    model = TritonModel(settings.triton_url, settings.model_name, settings.model_version, timeout_s=timeout_s)
    try:
        served = await asyncio.wait_for(model.served(), timeout_s)
        contract = served.contracts[max(served.contracts)]
        return served.name, {lb.name: lb.department_id for lb in contract.labels}
    except Exception as e:  # noqa: BLE001 - optional: labels are also learned from decisions
        log.info("model labels from triton %s: not available (%s: %s)", settings.triton_url, type(e).__name__, e)
        return None
    finally:
        await model.close()


def upsert_labels(conn: Connection, rows: list[tuple[str, str, int | None]], now: datetime) -> None:
    """(model, label, department id) rows; a known department id is kept, a missing one filled in."""
    if not rows:
        return
    table = ModelLabelRow.__table__
    stmt = insert_stmt(conn, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["model_name", "label"],
        set_={"department_id": func.coalesce(table.c.department_id, stmt.excluded.department_id)})
    conn.execute(stmt, [{"model_name": m, "label": lb, "department_id": dep, "first_seen_at": now}
                        for m, lb, dep in rows])


def store_labels(engine: Engine, model_name: str, labels: dict[str, int | None]) -> None:
    with write(engine) as conn:
        upsert_labels(conn, [(model_name, lb, dep) for lb, dep in labels.items()], datetime.now(UTC))


async def keep_labels(settings: Settings, engine: Engine, known_ids: dict[str, int], stop: asyncio.Event) -> None:
    """Refresh the served model's labels until `stop` is set."""
    while not stop.is_set():
        found = await served_labels(settings)
        if found:
            name, labels = found
            await asyncio.to_thread(store_labels, engine, name,
                                    {lb: dep if dep is not None else known_ids.get(lb) for lb, dep in labels.items()})
        try:
            await asyncio.wait_for(stop.wait(), REFRESH_S)
        except TimeoutError:
            pass
