"""Calibration: ECE on hand-made cases; its noise floor against the exact binomial value; temperature
scaling repairs an over-confident model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from math import comb

from trainer.calibration import ece, ece_floor, fit_temperature, softmax
from trainer.evaluate import evaluate_run
from trainer.run import TrainConfig
from trainer.synthetic import write_corpus
from trainer.train import train


def test_ece_on_hand_made_predictions():
    probs = np.tile([0.9, 0.1], (10, 1))
    assert ece(probs, np.array([0] * 9 + [1])) == pytest.approx(0.0)   # 90% confident, 90% right
    assert ece(probs, np.array([0] * 5 + [1] * 5)) == pytest.approx(0.4)
    two_bins = np.array([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 4)
    # bin 0.9: 4/4 right (gap 0.1); bin 0.6: 1/4 right (gap 0.35); each bin half the samples
    assert ece(two_bins, np.array([0, 0, 0, 0, 0, 1, 1, 1])) == pytest.approx(0.5 * 0.1 + 0.5 * 0.35)


def test_ece_floor_is_the_sampling_noise_of_a_calibrated_model():
    # n images all at [0.8, 0.2] (one bin): a calibrated model is right on K ~ Binomial(n, 0.8) of them and its
    # ECE is |K/n - 0.8|; the floor's mean is E|K/n - 0.8|, exactly
    for n in (20, 200):
        exact = sum(comb(n, k) * 0.8 ** k * 0.2 ** (n - k) * abs(k / n - 0.8) for k in range(n + 1))
        mean, p95 = ece_floor(np.tile([0.8, 0.2], (n, 1)), draws=20000)
        assert mean == pytest.approx(exact, abs=0.003)
        assert p95 > mean
    assert ece_floor(np.tile([0.8, 0.2], (2000, 1)))[0] < 0.02 < ece_floor(np.tile([0.8, 0.2], (20, 1)))[0]
    # certain predictions are always right: no noise at all; several bins and classes add up per bin
    assert ece_floor(np.tile([0.0, 1.0, 0.0], (50, 1))) == (0.0, 0.0)
    probs = softmax(np.random.default_rng(1).normal(0, 2, (300, 5)))
    mean, p95 = ece_floor(probs, draws=3000)
    rng = np.random.default_rng(2)   # labels drawn from the model itself: its measured ECE is such noise
    measured = [ece(probs, np.array([rng.choice(5, p=p) for p in probs])) for _ in range(200)]
    assert np.mean(measured) == pytest.approx(mean, rel=0.1)
    assert np.mean(np.array(measured) > p95) < 0.1


def test_temperature_recovers_the_over_confidence_factor():
    rng = np.random.default_rng(0)
    def draw(n):
        z = rng.normal(0, 1.5, (n, 5))
        p = softmax(z)
        y = np.array([rng.choice(5, p=row) for row in p])  # labels drawn from the true (calibrated) z
        return 4.0 * z, y                                  # the model is 4x over-confident
    val_logits, val_y = draw(4000)
    test_logits, test_y = draw(4000)
    t = fit_temperature(val_logits, val_y)
    assert 3.6 < t < 4.4
    before, after = ece(softmax(test_logits), test_y), ece(softmax(test_logits, t), test_y)
    assert before > 0.15 and after < 0.03


def test_evaluate_lowers_ece_of_an_over_confident_network(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", ["disc", "square", "hstripes", "vstripes"], per_class=100)
    run = train(TrainConfig(corpus=str(corpus), out=str(tmp_path / "run"), arch="tiny", pretrained=False,
                            image_size=32, epochs=4, batch_size=16, lr=3e-3, workers=0, device="cpu"))
    factor = 10 / json.loads((run / "calibration.json").read_text())["temperature"]
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    ckpt["model"]["net.fc.weight"] *= factor  # make the trained network ~10x over-confident
    ckpt["model"]["net.fc.bias"] *= factor
    torch.save(ckpt, run / "checkpoint.pt")

    result = evaluate_run(run, "test", workers=0)
    m = result["metrics"]
    assert result["temperature"] > 3
    assert m["ece"] < m["ece_uncalibrated"] and m["nll"] < m["nll_uncalibrated"]
    assert 0 < m["ece_floor"] < m["ece_floor_p95"] < 1   # 80 test images: ECE's noise floor is reported beside it
    assert json.loads((run / "calibration.json").read_text())["temperature"] == result["temperature"]
    saved = json.loads((run / "eval_test.json").read_text())
    assert len(saved["predictions"]) == m["n"] == 80   # the test split of 4 x 100
    p = saved["predictions"][0]
    assert set(p) >= {"path", "label", "pred", "probs"} and sum(p["probs"]) == pytest.approx(1, abs=1e-4)
