"""A model that fails on one particular image: that image is dead-lettered with stage "infer" and the
model's own reason, its batch-mates are decided, and the partition keeps moving. And a worker whose
ARTROUTE_MAX_BATCH the served model cannot take refuses to start, in one line.

The faulty model is a real export whose model.pt is wrapped in a scripted check that raises on an image
of one value (all pixels equal), served under a name of its own; its worker has its own topics."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from streams.contract.triton_config import CPU_VARIANTS, RUNTIME_PARAMETER, VARIANT_FILES, read_config, to_pbtxt
from streams.orchestration.harness import Upload, WorkerProcess, upload_all
from tests.model_fixture import DEPARTMENTS
from tests.worker_fixtures import jpeg, load_model, outcomes_for, own_topics, publish_intake, unique_prefix
from trainer.export import quick_train_and_export
from trainer.synthetic import write_corpus

pytestmark = pytest.mark.stack
MODEL = "artroute-faulty"


class FailsOnFlatImages(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        flat = x.flatten(1)
        if bool((flat.amax(1) == flat.amin(1)).any()):
            raise RuntimeError("cannot classify an image of one value")
        return self.model(x)


def make_faulty(version_dir) -> None:
    """Wrap model.pt, and make every CPU config run it (the stack may serve either)."""
    scripted = torch.jit.script(FailsOnFlatImages(torch.jit.load(str(version_dir / "model.pt"))))
    scripted.save(str(version_dir / "model.pt"))
    for variant in CPU_VARIANTS:
        path = version_dir.parent / VARIANT_FILES[variant]
        config = read_config(path)
        config.parameters[RUNTIME_PARAMETER].string_value = "torchscript"
        path.write_text(to_pbtxt(config))


def black_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (80, 60), (0, 0, 0)).save(buf, "JPEG")  # letterboxed onto black: still one value
    return buf.getvalue()


async def test_the_image_the_model_fails_on_is_dead_lettered_and_its_batch_mates_decided(
        stack, stack_settings, served_model_repository, worker_env, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", DEPARTMENTS, per_class=30, seed=2).parent
    version = quick_train_and_export(corpus, served_model_repository, MODEL, epochs=1, run_dir=tmp_path / "run")
    make_faulty(version)
    await load_model(stack_settings, MODEL)
    settings, env = await own_topics("faulty", stack_settings, MODEL)
    p = unique_prefix("faulty")
    batch = [Upload(f"{p}a{i}.jpg", jpeg(i % 4, seed=9000 + i)) for i in range(7)]
    batch.insert(3, Upload(f"{p}a-black.jpg", black_jpeg()))
    later = [Upload(f"{p}b{i}.jpg", jpeg(i % 4, seed=9100 + i)) for i in range(5)]
    with WorkerProcess({**worker_env, **env, "ARTROUTE_BATCH_WINDOW_S": "1.0"}, log_path=tmp_path / "worker.log"):
        upload_all(stack_settings, batch)
        await publish_intake(settings, batch)        # one Kafka batch of 8: one Triton request that fails
        out = await outcomes_for(settings, [u.key for u in batch], timeout=180, linger=1.0)
        upload_all(stack_settings, later)
        await publish_intake(settings, later)        # the partition keeps moving
        out_later = await outcomes_for(settings, [u.key for u in later], timeout=120, linger=1.0)
    black = f"{p}a-black.jpg"
    assert set(out.dead_letters) == {black}
    (dl,) = out.dead_letters[black]
    assert (dl["stage"], dl["error_kind"]) == ("infer", "inference")
    assert "cannot classify an image of one value" in dl["message"]
    assert set(out.decisions) == {u.key for u in batch} - {black}
    assert all(len(v) == 1 and v[0]["model"]["name"] == MODEL for v in out.decisions.values())
    assert set(out_later.decisions) == {u.key for u in later} and not out_later.dead_letters


def test_a_max_batch_the_model_cannot_take_is_a_one_line_error_at_start(stack, worker_env):
    env = {**os.environ, **worker_env, "ARTROUTE_MAX_BATCH": "64"}
    r = subprocess.run([sys.executable, "-m", "streams", "worker"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "python -m streams worker: error: ARTROUTE_MAX_BATCH=64 exceeds max_batch_size 32 of model 'artroute'; "
        "lower ARTROUTE_MAX_BATCH or export with a larger --max-batch-size"]
