"""Training: a tiny CNN learns synthetic classes; resume and seeding are exact; taxonomies and errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from trainer.models import ModelError, create_model
from trainer.run import TrainConfig, read_info
from trainer.synthetic import write_corpus
from streams.contract.taxonomy import TaxonomyError, load_taxonomy
from trainer.train import train

LABELS = ["disc", "square", "hstripes", "vstripes"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"), LABELS, per_class=40)


def tiny(corpus, out, **kw) -> TrainConfig:
    base = dict(corpus=str(corpus), out=str(out), arch="tiny", pretrained=False, image_size=32, epochs=6,
                batch_size=16, lr=3e-3, warmup_epochs=0.5, workers=0, device="cpu")
    return TrainConfig(**(base | kw))


def weights(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"]


def test_tiny_model_learns_and_writes_the_run_directory(corpus, tmp_path):
    run = train(tiny(corpus, tmp_path / "run"))
    info = read_info(run)
    assert info.classes == sorted(LABELS) and info.counts == {"train": 96, "val": 32, "test": 32}
    assert info.finished and info.epochs_done == 6
    assert info.final_val["top1"] >= 0.75, info.final_val  # chance is 0.25
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    cal = json.loads((run / "calibration.json").read_text())
    assert cal["temperature"] > 0 and cal["val_nll_after"] <= cal["val_nll_before"] + 1e-9
    assert list((run / "tb").glob("events.out.tfevents.*"))


def test_resume_equals_uninterrupted_training(corpus, tmp_path):
    full = train(tiny(corpus, tmp_path / "full", epochs=3))
    cfg = tiny(corpus, tmp_path / "split", epochs=3)
    train(cfg, stop_after=1)
    assert read_info(cfg.out).finished is None
    train(cfg, resume=True)
    a, b = weights(full), weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_info(full).final_val == read_info(cfg.out).final_val


def test_seeded_runs_are_reproducible_across_worker_counts(corpus, tmp_path):
    a = weights(train(tiny(corpus, tmp_path / "a", epochs=2, workers=0)))
    b = weights(train(tiny(corpus, tmp_path / "b", epochs=2, workers=2)))
    c = weights(train(tiny(corpus, tmp_path / "c", epochs=2, seed=1)))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["net.fc.weight"], c["net.fc.weight"])


def test_taxonomies_met19_met6_corpus_and_drop():
    met19 = load_taxonomy("met-19")
    ids = sorted(i for c in met19.classes for i in c.department_ids)
    assert ids == [1, *range(3, 20), 21] and len(met19.classes) == 19
    met6 = load_taxonomy("met-6")
    assert len(met6.classes) == 6
    assert sorted(met6.label_to_index()) == sorted(met19.label_to_index())  # every department name in one group
    assert set(met19.class_names) <= set(met6.label_to_index())  # so --group-by met-6 can group a met-19 model
    assert set(met6.label_to_index().values()) == set(range(6))
    corpus = load_taxonomy("corpus", ["b", "a", "b", "Unclassified"]).without(["Unclassified"])
    assert corpus.class_names == ["a", "b"]
    with pytest.raises(TaxonomyError, match="unknown taxonomy 'met-7'"):
        load_taxonomy("met-7")


def test_local_weights_file_is_loaded_and_bad_input_fails_in_one_line(tmp_path):
    import torchvision

    reference = torchvision.models.get_model("mobilenet_v3_small", weights=None)
    torch.save(reference.state_dict(), tmp_path / "w.pth")
    model = create_model("mobilenet_v3_small", 5, pretrained=True, weights=tmp_path / "w.pth")
    assert torch.equal(model.net.features[0][0].weight, reference.features[0][0].weight)
    assert model.head.out_features == 5
    with pytest.raises(ModelError, match="no such file"):
        create_model("mobilenet_v3_small", 5, pretrained=True, weights=tmp_path / "missing.pth")
    with pytest.raises(ModelError, match="unknown arch"):
        create_model("resnet9000", 5)
    r = subprocess.run([sys.executable, "-m", "trainer", "train", "--corpus", str(tmp_path / "nope"),
                        "--out", str(tmp_path / "run"), "--arch", "tiny", "--no-pretrained"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such manifest" in r.stderr


@pytest.mark.shared
def test_offline_efficientnet_lite0_weights_load(shared_dir):
    path = shared_dir / "weights" / "tf_efficientnet_lite0.imagenet.pth"
    model = create_model("tf_efficientnet_lite0", 4, pretrained=True, weights=path)
    state = torch.load(path, weights_only=True)
    assert torch.equal(model.net.conv_stem.weight, state["conv_stem.weight"])
    assert model.mean.flatten().tolist() == [127.5] * 3 and model.head.out_features == 4
