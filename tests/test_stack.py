"""The embedded stack: real tansu, SeaweedFS and Triton processes, started by the project's own code."""
from __future__ import annotations

import asyncio
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from minio import Minio

from streams.worker.events import parse_intake
from streams.contract.model import IMAGE
from streams.worker.inference import TritonModel
from streams.stack.processes import descendants

pytestmark = pytest.mark.stack
PY = sys.executable


def minio_client(settings) -> Minio:
    return Minio(settings.s3_endpoint, access_key=settings.s3_access_key,
                 secret_key=settings.s3_secret_key.get_secret_value(), secure=False)


async def test_kafka_produce_and_consume_with_a_consumer_group(stack_settings):
    topic, group = f"t-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=stack_settings.kafka_brokers)
    await producer.start()
    try:
        for i in range(20):
            await producer.send_and_wait(topic, value=f"m{i}".encode(), key=str(i % 3).encode())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=stack_settings.kafka_brokers, group_id=group,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                session_timeout_ms=4000, heartbeat_interval_ms=1000)
    await consumer.start()
    got = []
    try:
        deadline = time.monotonic() + 30
        while len(got) < 20 and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=1000)).values():
                got.extend(m.value.decode() for m in msgs)
        await consumer.commit()
        committed = {tp: await consumer.committed(tp) for tp in consumer.assignment()}
    finally:
        await consumer.stop()
    assert sorted(got) == sorted(f"m{i}" for i in range(20))
    assert sum(committed.values()) == 20  # the group's committed offsets cover every message


async def test_s3_put_get_and_filer_notification_on_the_broker(stack_settings):
    client = minio_client(stack_settings)
    key = f"notify/{uuid.uuid4().hex[:8]} Ägypten.jpg"
    body = os.urandom(3000)
    client.put_object(stack_settings.bucket, key, io.BytesIO(body), len(body), content_type="image/jpeg")
    assert client.get_object(stack_settings.bucket, key).read() == body

    consumer = AIOKafkaConsumer(stack_settings.intake_topic, bootstrap_servers=stack_settings.kafka_brokers,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    found = []
    try:
        deadline = time.monotonic() + 30
        while not found and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=1000)).values():
                for m in msgs:
                    found += [e for e in parse_intake(m.value, m.key).events if e.key == key]
    finally:
        await consumer.stop()
    assert found, "no filer notification for the uploaded object reached the intake topic"
    event = found[0]
    assert (event.bucket, event.size, event.source) == (stack_settings.bucket, len(body), "seaweedfs")


async def test_triton_inference_matches_the_model_files_in_process(stack_settings, served_model_repository):
    """What the stack's Triton answers equals model.pt and model.onnx run here, digest included."""
    import onnxruntime as ort

    model = TritonModel(stack_settings.triton_url, stack_settings.model_name)
    try:
        served = await model.served()
        images = np.random.default_rng(0).integers(0, 256, (5, *served.input_shape), dtype=np.uint8)
        answer = await model.infer(images)
    finally:
        await model.close()
    version_dir = served_model_repository / served.name / answer.version
    contract = served.contracts[int(answer.version)]
    with torch.inference_mode():
        probs, digests = (t.numpy() for t in torch.jit.load(str(version_dir / "model.pt"))(torch.from_numpy(images)))
    onnx_probs, _ = ort.InferenceSession(str(version_dir / "model.onnx")).run(None, {IMAGE.name: images})
    assert answer.probs.shape == (5, len(contract.labels))
    assert np.abs(answer.probs - probs).max() < 1e-5 and np.abs(answer.probs - onnx_probs).max() < 1e-5
    assert np.allclose(answer.probs.sum(axis=1), 1.0, atol=1e-5)
    assert all(bytes(d) == contract.digest() for d in answer.digests) and np.array_equal(answer.digests, digests)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _stack_env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, ARTROUTE_STACK_FILE=str(tmp_path / "endpoints.json"), PYTHONUNBUFFERED="1")


def test_stack_up_then_ctrl_c_leaves_no_process_and_no_shm(tmp_path, served_model_repository):
    env = _stack_env(tmp_path)
    proc = subprocess.Popen([PY, "-m", "streams", "stack", "up", "--model-repository", str(served_model_repository),
                             "--run-dir", str(tmp_path / "run")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (tmp_path / "endpoints.json").exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "stack did not come up"
            time.sleep(0.5)
        servers = descendants(proc.pid)
        names = {Path(f"/proc/{p}/exe").resolve().name for p in servers if _alive(p)}
        assert {"tansu", "weed", "tritonserver"} <= names
        shm_before = {f.name for f in Path("/dev/shm").iterdir() if f.name.startswith(f"artroute_{proc.pid}_")}
        assert shm_before, "triton's python backend should hold a shared-memory region while running"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "stack stopped" in out
    assert not [p for p in servers if _alive(p)]
    assert not [f for f in Path("/dev/shm").iterdir() if f.name.startswith(f"artroute_{proc.pid}_")]
    assert not (tmp_path / "endpoints.json").exists()


def _stack_up_error(tmp_path: Path, *args: str, env_extra: dict[str, str] | None = None) -> str:
    env = dict(_stack_env(tmp_path), **(env_extra or {}))
    t0 = time.monotonic()
    r = subprocess.run([PY, "-m", "streams", "stack", "up", "--run-dir", str(tmp_path / "run"), *args],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m streams stack up: error: "), r.stderr
    assert time.monotonic() - t0 < 60
    return lines[0]


def test_port_taken_is_a_one_line_error(tmp_path, served_model_repository):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = _stack_up_error(tmp_path, "--model-repository", str(served_model_repository), "--kafka-port", str(port))
    assert f"port {port}" in line and "already taken" in line


def test_missing_binary_is_a_one_line_error(tmp_path, served_model_repository):
    line = _stack_up_error(tmp_path, "--model-repository", str(served_model_repository),
                           env_extra={"ARTROUTE_TANSU_BIN": str(tmp_path / "no-such-tansu")})
    assert "binary missing" in line and "no-such-tansu" in line


def test_empty_model_repository_is_a_one_line_error(tmp_path):
    (tmp_path / "empty_repo").mkdir()
    line = _stack_up_error(tmp_path, "--model-repository", str(tmp_path / "empty_repo"))
    assert "model repository" in line and "empty" in line


def test_model_without_cpu_config_is_named(tmp_path):
    (tmp_path / "repo" / "artroute" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "artroute" / "config.pbtxt").write_text('platform: "pytorch_libtorch"')
    line = _stack_up_error(tmp_path, "--model-repository", str(tmp_path / "repo"))
    assert "artroute: no configs/cpu-onnx.pbtxt" in line
    line = _stack_up_error(tmp_path, "--model-repository", str(tmp_path / "repo"), "--triton-config", "cpu")
    assert "artroute: no configs/cpu.pbtxt" in line


def test_a_version_exported_before_the_contract_is_named(tmp_path, served_model_repository):
    old = tmp_path / "repo" / "artroute"
    shutil.copytree(served_model_repository / "artroute", old)
    for version in (d for d in old.iterdir() if d.name.isdigit()):
        (version / "contract.json").unlink()
    line = _stack_up_error(tmp_path, "--model-repository", str(tmp_path / "repo"))
    assert "no version holds model.py, model.onnx and contract.json" in line and "export it again" in line
