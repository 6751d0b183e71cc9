"""The faust app: intake topic -> batches -> `Router` -> decision, review and dead-letter topics.

Declarative on purpose (see faust's examples): one typed topic, one short agent. The agent takes up to
ARTROUTE_MAX_BATCH events at a time (waiting at most ARTROUTE_BATCH_WINDOW_S) and hands them to the
router, which returns only once every outcome is published. faust acks a batch's events after the agent
body returns, and commits a partition only below its lowest event still in flight (streams.worker.acks),
so no offset is committed for an event whose decision is not yet on Kafka.
"""
from __future__ import annotations

import logging
import ssl

import faust

from streams.contract.cli import UserError
from streams.worker import acks
from streams.worker.metrics import HealthServer
from streams.worker.reconcile import KafkaOutcomes, reconcile
from streams.worker.router import Router
from streams.worker.settings import Settings

log = logging.getLogger(__name__)


def broker_credentials(settings: Settings):
    """faust credentials from the same settings that configure the aiokafka producer."""
    kw = settings.kafka_client_kwargs()
    ssl_context: ssl.SSLContext | None = kw.get("ssl_context")
    if settings.kafka_security_protocol.startswith("SASL"):
        mechanism = {"PLAIN": faust.auth.SASLMechanism.PLAIN, "SCRAM-SHA-256": faust.auth.SASLMechanism.SCRAM_SHA_256,
                     "SCRAM-SHA-512": faust.auth.SASLMechanism.SCRAM_SHA_512}[settings.kafka_sasl_mechanism]
        return faust.SASLCredentials(username=kw["sasl_plain_username"], password=kw["sasl_plain_password"],
                                     ssl_context=ssl_context, mechanism=mechanism)
    if ssl_context is not None:
        return faust.SSLCredentials(ssl_context)
    return None


def create_app(settings: Settings | None = None, router: Router | None = None) -> faust.App:
    settings = settings or Settings()
    router = router or Router(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    acks.install()  # commit only below the lowest unfinished offset (faust-streaming #606)
    app = faust.App(
        settings.consumer_group,
        broker=[f"kafka://{b.strip()}" for b in settings.kafka_brokers.split(",")],
        broker_credentials=broker_credentials(settings),
        store="memory://",
        datadir=str(settings.data_dir / "{conf.id}"),  # never the working directory's <group>-data/
        autodiscover=False,
        web_enabled=False,                       # our own /metrics and /healthz: streams.worker.metrics
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        # tansu quirk: ListOffsets LATEST is wrong, so never start from "latest"; a new group reads from the
        # beginning of the intake topic (duplicates are harmless: decision ids are deterministic).
        consumer_auto_offset_reset="earliest",
        # tansu quirk: a first group join waits half the session timeout; keep it short (2-6 s) there.
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=max(0.5, settings.kafka_session_timeout_s / 3),
        broker_commit_every=1,
        broker_commit_interval=1.0,
        stream_wait_empty=True,
    )
    app.router = router
    intake = app.topic(settings.intake_topic, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
    health = (HealthServer(settings.metrics_port, settings.metrics_host, router.health)
              if settings.metrics_port else None)

    # concurrency > 1: several batches in flight (one decoding while another is on Triton). With acks.install()
    # a partition's offset is committed only up to its lowest un-acked event, so this keeps at-least-once.
    @app.agent(intake, name="route", concurrency=settings.agent_concurrency)
    async def route(stream):
        async for events in stream.take_events(settings.max_batch, within=settings.batch_window_s):
            await router.handle(events)

    if settings.reconcile_interval_s:
        @app.timer(settings.reconcile_interval_s, on_leader=True)  # one reconciler per consumer group
        async def _reconcile() -> None:
            await router.ready.wait()
            try:
                await reconcile(settings, KafkaOutcomes(settings), prefix=settings.reconcile_prefix)
            except Exception:  # noqa: BLE001 - a failed pass is logged and retried at the next interval
                log.exception("reconcile pass failed")

    @app.task
    async def _start_services() -> None:
        if health:
            await health.start()
        try:
            await router.start()
        except UserError as e:  # a served model these settings cannot use (ModelMismatch): stop, exit 2
            router.fatal = e
            await app.crash(e)
            return

    @app.on_before_shutdown.connect
    async def _stop_services(sender, **kwargs) -> None:
        await router.stop()
        if health:
            await health.stop()

    return app
