"""Rolling out a model version with another class order while a worker runs: every answer is decided with
the labels of the version that computed it, with no worker restart, nothing dead-lettered, nothing lost.

The model has a name of its own in the session's Triton (explicit model control), and its worker its own
topics, so the session's other tests and worker are not disturbed."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from streams.contract.imaging import decode_image
from streams.contract.model import ModelContract
from streams.orchestration.harness import Upload, WorkerProcess, upload_all
from tests.model_fixture import DEPARTMENTS
from tests.worker_fixtures import jpeg, load_model, outcomes_for, own_topics, publish_intake, unique_prefix
from trainer.export import quick_train_and_export
from trainer.metapi.models import department_id
from trainer.synthetic import write_corpus

pytestmark = pytest.mark.stack
MODEL = "artroute-rollout"


def expected(version_dir, data: bytes) -> tuple[str, int | None]:
    """(label, department id) that this version's own model and contract give the image."""
    contract = ModelContract.model_validate_json((version_dir / "contract.json").read_text())
    image = decode_image(data, 10**8, contract.input_size)
    with torch.inference_mode():
        probs, _ = torch.jit.load(str(version_dir / "model.pt"))(torch.from_numpy(image[None]))
    label = contract.labels[int(probs[0].argmax())]
    return label.name, label.department_id


async def decide_uploads(settings, stack_settings, prefix: str, n: int, seed: int):
    uploads = upload_all(stack_settings, [Upload(f"{prefix}{i:02d}.jpg", jpeg(i % 4, seed=seed + i)) for i in range(n)])
    await publish_intake(settings, uploads)
    return uploads, await outcomes_for(settings, [u.key for u in uploads], timeout=180, linger=2.0)


async def test_a_rollout_with_another_class_order_decides_with_the_new_versions_labels(
        stack, stack_settings, served_model_repository, worker_env, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", DEPARTMENTS, per_class=40, seed=1,
                          department_ids={d: department_id(d) for d in DEPARTMENTS}).parent
    v1 = quick_train_and_export(corpus, served_model_repository, MODEL, epochs=3, run_dir=tmp_path / "run1")
    await load_model(stack_settings, MODEL)
    settings, env = await own_topics("rollout", stack_settings, MODEL)
    with WorkerProcess({**worker_env, **env}, log_path=tmp_path / "worker.log") as worker:
        pid = worker.proc.pid
        first, out1 = await decide_uploads(settings, stack_settings, unique_prefix("rollout-v1"), 8, 7000)
        assert set(out1.decisions) == {u.key for u in first} and not out1.dead_letters
        for u in first:
            d = out1.decisions[u.key][0]
            assert d["model"]["version"] == "1"
            assert (d["department"], d["department_id"]) == expected(v1, u.data)

        # v2: the same departments in the reverse order (a taxonomy of its own), exported beside v1 and
        # loaded while the worker runs. Under v1's labels every one of v2's answers would name another department.
        reversed_yaml = tmp_path / "reversed.yaml"
        reversed_yaml.write_text(yaml.safe_dump({"name": "met-4-reversed", "classes": [
            {"name": d, "labels": [d], "department_ids": [department_id(d)]} for d in sorted(DEPARTMENTS, reverse=True)]}))
        v2 = quick_train_and_export(corpus, served_model_repository, MODEL, taxonomy=str(reversed_yaml), epochs=3,
                                    run_dir=tmp_path / "run2")
        c1, c2 = (ModelContract.model_validate_json((v / "contract.json").read_text()) for v in (v1, v2))
        assert c2.label_names == c1.label_names[::-1] and c2.digest() != c1.digest()
        await load_model(stack_settings, MODEL)

        second, out2 = await decide_uploads(settings, stack_settings, unique_prefix("rollout-v2"), 16, 8000)
        assert worker.proc.poll() is None and worker.proc.pid == pid  # no restart
    assert set(out2.decisions) == {u.key for u in second}, "lost"
    assert not out2.dead_letters, {k: v[0]["message"] for k, v in out2.dead_letters.items()}
    departments = set()
    for u in second:
        (d,) = out2.decisions[u.key]
        assert d["model"]["version"] == "2"
        label, dept = expected(v2, u.data)
        assert (d["department"], d["department_id"]) == (label, dept)
        assert d["top3"][0]["label"] == label
        departments.add(label)
        v1_reading = c1.label_names[c2.label_names.index(label)]  # what v1's labels would have said
        assert v1_reading != label
    assert len(departments) >= 2  # the images are not all one answer
    assert "model artroute-rollout version 2" in (tmp_path / "worker.log").read_text()  # learnt after start
    assert json.loads((v2 / "contract.json").read_text())["version"] == 2
