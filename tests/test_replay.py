"""Back-catalog replay against the real stack, with its own worker on its own topics so that only the
replayed events reach it (the filer's own notifications go to the main intake topic)."""
from __future__ import annotations

import asyncio

import pytest

from streams.orchestration.harness import Upload, WorkerProcess, upload_all
from streams.worker.replay import replay
from streams.stack.processes import free_port
from streams.stack.servers import create_topics
from tests.worker_fixtures import jpeg, outcomes_for, unique_prefix

pytestmark = pytest.mark.stack
TOPICS = {"ARTROUTE_INTAKE_TOPIC": "replaytest.intake", "ARTROUTE_DECISIONS_TOPIC": "replaytest.decisions",
          "ARTROUTE_REVIEW_TOPIC": "replaytest.review", "ARTROUTE_DEADLETTER_TOPIC": "replaytest.deadletter",
          "ARTROUTE_CONSUMER_GROUP": "replaytest"}


@pytest.fixture(scope="module")
def replay_settings(stack_settings):
    return stack_settings.model_copy(update={k.removeprefix("ARTROUTE_").lower(): v for k, v in TOPICS.items()})


@pytest.fixture(scope="module")
def replay_worker(replay_settings, worker_env, tmp_path_factory):
    asyncio.run(create_topics(replay_settings.kafka_brokers, {t: 4 for k, t in TOPICS.items() if k.endswith("TOPIC")}))
    # Its own metrics port: the session's worker may be running (and bound to worker_env's) at the same time.
    env = {**worker_env, **TOPICS, "ARTROUTE_METRICS_PORT": str(free_port())}
    w = WorkerProcess(env, log_path=tmp_path_factory.mktemp("replay") / "worker.log").start()
    yield w
    w.stop()


@pytest.fixture(scope="module")
def catalog(stack_settings):
    p = unique_prefix("catalog")
    images = [Upload(p + f"img{i:02d}.jpg", jpeg(i % 4, seed=300 + i)) for i in range(12)]
    notes = [Upload(p + "notes/readme.txt", b"catalogue notes", "text/plain"), Upload(p + "scan.pdf", b"%PDF-1.4", "application/pdf")]
    upload_all(stack_settings, images + notes)
    return p, [u.key for u in images]


async def test_replay_decides_every_image_exactly_once(replay_worker, replay_settings, catalog, tmp_path):
    prefix, keys = catalog
    summary = await replay(replay_settings, replay_settings.bucket, prefix, rate=0, state=tmp_path / "state.json",
                           progress=False)
    assert (summary.listed, summary.published, summary.skipped_not_image) == (14, 12, 2)
    out = await outcomes_for(replay_settings, keys, timeout=120, linger=3)
    assert sorted(out.decisions) == sorted(keys)
    assert all(len(v) == 1 for v in out.decisions.values())

    again = await replay(replay_settings, replay_settings.bucket, prefix, rate=0, state=tmp_path / "state.json",
                         progress=False)
    assert again.resumed_after == max(keys) and again.published == 0  # resumable: nothing left after the checkpoint


async def test_missing_only_replays_just_the_undecided(replay_worker, replay_settings, catalog, tmp_path):
    prefix, keys = catalog
    await outcomes_for(replay_settings, keys, timeout=120)  # the catalog is decided (previous test)
    late = [Upload(prefix + f"late{i}.jpg", jpeg(i, seed=400 + i)) for i in range(3)]
    upload_all(replay_settings, late)
    summary = await replay(replay_settings, replay_settings.bucket, prefix, rate=0, missing_only=True,
                           state=tmp_path / "state.json", restart=True, progress=False, scan_idle_s=2.0)
    assert summary.published == 3 and summary.skipped_decided == len(keys)
    out = await outcomes_for(replay_settings, keys + [u.key for u in late], timeout=120, linger=3)
    assert all(len(out.decisions[k]) == 1 for k in keys + [u.key for u in late])


def test_rate_limit_is_respected(replay_settings, catalog, tmp_path):
    prefix, keys = catalog
    summary = asyncio.run(replay(replay_settings, replay_settings.bucket, prefix, rate=10,
                                 state=tmp_path / "s.json", progress=False))
    assert summary.published == summary.listed - summary.skipped_not_image >= 12
    assert summary.seconds >= (summary.published - 1) / 10  # n events at 10/s take at least (n-1)/10 s
