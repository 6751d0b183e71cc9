"""Export with the routing rule and the unfamiliarity output: the rule (fitted for --target-accuracy) in the
version's contract, UNFAMILIAR__2 in TorchScript, ONNX and every config variant, equal to the run's own
k-NN score; a version without them beside one with them; one-line errors for a bad target."""
from __future__ import annotations

import subprocess

import numpy as np
import onnxruntime as ort
import pytest
import torch

from streams.contract.model import CONTRACT, IMAGE, PROBS, UNFAMILIAR, ModelContract
from streams.contract.triton_config import VARIANT_FILES, contracts_of, read_config, serves_unfamiliarity
from tests.trainer.conftest import trainer_cmd
from trainer import trust, unfamiliar
from trainer.evaluate import evaluate_run
from trainer.export import export_run
from trainer.run import TrainConfig, load_model, read_calibration
from trainer.synthetic import write_corpus
from trainer.train import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export-trust")
    corpus = write_corpus(tmp / "corpus", ["Egyptian Art", "Asian Art", "Arms and Armor"], per_class=30)
    run = train(TrainConfig(corpus=str(corpus), out=str(tmp / "run"), arch="tiny", pretrained=False, image_size=48,
                            epochs=3, batch_size=16, lr=3e-3, workers=0, device="cpu"))
    evaluate_run(run, "test", workers=0, trust_cfg=trust.TrustConfig(shifted=False))  # the rule for 0.95
    return run


def contract_of(version) -> ModelContract:
    return ModelContract.model_validate_json((version / "contract.json").read_text())


def test_the_rule_and_the_unfamiliarity_output_ship_with_the_version(run, tmp_path):
    version = export_run(run, tmp_path, "m", target_accuracy=0.8, delta=0.2)
    c = contract_of(version)
    assert c.routing is not None and (c.routing.target_accuracy, c.routing.delta) == (0.8, 0.2)  # refitted
    assert c.routing.classes == c.label_names and c.routing.unfamiliar_threshold is not None
    assert c.unfamiliarity is not None and c.unfamiliarity.bank_size == 54  # the train split
    for rel in VARIANT_FILES.values():
        config = read_config(tmp_path / "m" / rel)
        assert serves_unfamiliarity(config) and contracts_of(config)[1] == c
        assert [o.name for o in config.output] == [PROBS.name, CONTRACT.name, UNFAMILIAR.name]

    # both files return the run's own k-NN score of the image (the one evaluate measured), per row
    info, model = load_model(run)
    scorer = unfamiliar.load(run)
    x = torch.randint(0, 256, (5, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits, feats = unfamiliar.logits_and_features(model, x, scorer.taps)
        want_u = scorer(feats).numpy()
        want_p = torch.softmax(logits / read_calibration(run).temperature, 1).numpy()
        probs, digests, u = (t.numpy() for t in torch.jit.load(str(version / "model.pt"))(x))
    session = ort.InferenceSession(str(version / "model.onnx"))
    assert [o.name for o in session.get_outputs()] == [PROBS.name, CONTRACT.name, UNFAMILIAR.name]
    o_probs, o_digests, o_u = session.run(None, {IMAGE.name: x.numpy()})
    for p, d, s in ((probs, digests, u), (o_probs, o_digests, o_u)):
        assert s.dtype == np.float32 and s.shape == (5, 1) and np.abs(s[:, 0] - want_u).max() < 1e-4
        assert np.abs(p - want_p).max() < 1e-4 and all(bytes(row) == c.digest() for row in d)


def test_a_version_without_them_still_serves_beside_one_with_them(run, tmp_path):
    export_run(run, tmp_path, "m", target_accuracy=0.95)
    plain = contract_of(export_run(run, tmp_path, "m"))  # the python API's default: no rule
    assert plain.routing is None and plain.unfamiliarity is None
    assert [t["name"] for t in plain.interface()["tensors"]] == [IMAGE.name, PROBS.name, CONTRACT.name]
    with torch.no_grad():
        outputs = torch.jit.load(str(tmp_path / "m" / "2" / "model.pt"))(torch.zeros(1, 3, 48, 48, dtype=torch.uint8))
    assert len(outputs) == 2
    for rel in VARIANT_FILES.values():  # version 2 cannot answer UNFAMILIAR__2: no config asks for it
        config = read_config(tmp_path / "m" / rel)
        assert not serves_unfamiliarity(config) and set(contracts_of(config)) == {1, 2}


def test_export_refuses_a_target_outside_0_1(run, tmp_path):
    proc = subprocess.run(trainer_cmd("export", "--run", str(run), "--repository", str(tmp_path),
                                      "--target-accuracy", "1.5"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "python -m trainer export: error: --target-accuracy and --delta must lie strictly between 0 and 1"]
