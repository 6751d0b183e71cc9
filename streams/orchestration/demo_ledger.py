"""The demo's routing ledger: a `ledger run --api` process beside the worker, on a fresh SQLite file in the
demo's run directory, and the check that its counts agree with what Kafka carried."""
from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel

from streams.ledger.service import Ledger
from streams.orchestration.harness import Outcomes, Upload
from streams.stack.processes import free_port, port_is_free
from streams.worker.settings import Settings

PREFIX = "incoming/"


class LedgerCheck(BaseModel):
    kafka: dict[str, int]
    ledger: dict[str, int]
    agrees: bool
    database: str
    api: str


def ledger_env(run_dir: Path, settings: Settings) -> dict[str, str]:
    """A fresh ledger database for this run (the broker is fresh too), and the API port (8300 when free)."""
    db = run_dir / "ledger.db"
    for f in (db, db.with_name("ledger.db-wal"), db.with_name("ledger.db-shm")):
        f.unlink(missing_ok=True)
    port = settings.ledger_api_port if port_is_free(settings.ledger_api_port) else free_port()
    return {"ARTROUTE_LEDGER_URL": f"sqlite:///{db}", "ARTROUTE_LEDGER_API_PORT": str(port),
            "ARTROUTE_LEDGER_API_HOST": "127.0.0.1"}


def kafka_counts(out: Outcomes, keys: list[str]) -> dict[str, int]:
    decided = [out.decisions[k][0] for k in keys if k in out.decisions]
    return {"decided": len(decided), "in review": sum(1 for d in decided if d["needs_review"]),
            "dead letters": sum(1 for k in keys if k in out.dead_letters and k not in out.decisions)}


def check_ledger(settings: Settings, env: dict[str, str], out: Outcomes, uploads: list[Upload],
                 timeout: float = 60.0) -> LedgerCheck:
    """Wait until the ledger holds an outcome for every upload Kafka settled (or timeout), then compare."""
    s = settings.model_copy(update={"ledger_url": env["ARTROUTE_LEDGER_URL"]})
    keys = [u.key for u in uploads]
    kafka = kafka_counts(out, keys)
    deadline = time.monotonic() + timeout
    ledger = None
    while True:
        try:
            ledger = ledger or Ledger.open(s, upgrade=False)
            c = ledger.counts(PREFIX)
        except Exception:  # noqa: BLE001 - the ledger process has not created its schema yet
            c = None
        if (c is not None and c.objects >= kafka["decided"] + kafka["dead letters"]) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if ledger is not None:
        ledger.close()
    counts = {"decided": c.decided, "in review": c.in_review, "dead letters": c.dead_letters} if c else {}
    return LedgerCheck(kafka=kafka, ledger=counts, agrees=counts == kafka, database=env["ARTROUTE_LEDGER_URL"],
                       api=f"http://127.0.0.1:{env['ARTROUTE_LEDGER_API_PORT']}")


def print_check(check: LedgerCheck) -> None:
    print(f"\n{'':<14}{'kafka':>8}{'ledger':>8}")
    for name, n in check.kafka.items():
        print(f"{name:<14}{n:>8}{check.ledger.get(name, '-'):>8}")
    verdict = "agree" if check.agrees else "DISAGREE"
    print(f"kafka and ledger {verdict} (ledger {check.database}, API {check.api})")
