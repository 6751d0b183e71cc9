"""Running the ledger's services in one asyncio process: ingest (consumer), the verdict outbox, the HTTP
API, and the ops endpoint (/metrics, /healthz on ARTROUTE_METRICS_PORT). SIGTERM/SIGINT stop it cleanly:
the batch being written finishes and its offsets are committed first."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from streams.ledger.service import Ledger
from streams.worker.cli import setup_logging
from streams.worker.settings import Settings

log = logging.getLogger(__name__)


def _api_server(ledger: Ledger, host: str, port: int):
    import uvicorn

    from streams.ledger.api import create_app

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # the runner owns SIGTERM/SIGINT and stops the server itself
            yield

    return Server(uvicorn.Config(create_app(ledger), host=host, port=port, log_level="warning",
                                 access_log=False, lifespan="off"))


async def run(settings: Settings, consume: bool = True, api: bool = False, stop: asyncio.Event | None = None) -> None:
    from streams.ledger.consumer import LedgerConsumer
    from streams.ledger.labels import keep_labels
    from streams.ledger.outbox import OutboxDrainer
    from streams.worker.metrics import HealthServer

    stop = stop or asyncio.Event()
    ledger = await asyncio.to_thread(Ledger.open, settings)
    log.info("ledger database %s", ledger.engine.url.render_as_string(hide_password=True))
    health = HealthServer(settings.metrics_port) if settings.metrics_port else None
    tasks = []
    if consume:
        consumer = LedgerConsumer(settings, ledger.ingestor)
        known_ids = {**ledger.recorder.known_ids, **ledger.recorder.taxonomy}
        tasks += [asyncio.create_task(consumer.run(stop), name="ingest"),
                  asyncio.create_task(OutboxDrainer(ledger.engine, settings).run(stop), name="outbox"),
                  asyncio.create_task(keep_labels(settings, ledger.engine, known_ids, stop), name="labels")]
    server = None
    if api:
        server = _api_server(ledger, settings.ledger_api_host, settings.ledger_api_port)
        tasks.append(asyncio.create_task(server.serve(), name="api"))
        log.info("ledger API on http://%s:%d", settings.ledger_api_host, settings.ledger_api_port)
    if health:
        await health.start()
        health.ready = True
    try:
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        if server is not None:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=False)
    finally:
        stop.set()
        if server is not None:
            server.should_exit = True
        for t in tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if health:
            await health.stop()
        ledger.close()


def main_with(consume: bool, api: bool) -> int:
    settings = load_settings()
    setup_logging(settings)

    async def until_signalled() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(settings, consume=consume, api=api, stop=stop)

    asyncio.run(until_signalled())
    return 0


def load_settings() -> Settings:
    """Settings from the environment; a bad ARTROUTE_* value is a one-line error."""
    from pydantic import ValidationError

    from streams.contract.cli import UserError

    try:
        return Settings()
    except ValidationError as e:
        err = e.errors()[0]
        raise UserError(f"ARTROUTE_{str(err['loc'][0]).upper()}: {err['msg']}") from None
