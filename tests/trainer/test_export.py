"""Export: the Triton model repository contract, TorchScript parity, the quick demo model, Triton CPU smoke."""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from streams.contract.imaging import to_model_input
from trainer.corpus.manifest import read_manifest
from trainer.evaluate import evaluate_run
from trainer.export import export_run, quick_train_and_export
from trainer.models import Calibrated
from trainer.run import TrainConfig, load_model, read_calibration
from trainer.synthetic import write_corpus
from trainer.train import train

# department names, so the same run also exercises met-19 + evaluate --group-by met-6
LABELS = ["Egyptian Art", "Greek and Roman Art", "Asian Art", "Islamic Art"]
PYTRITON = Path(sys.executable).parents[1] / "lib/python3.11/site-packages/pytriton/tritonserver"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    corpus = write_corpus(tmp / "corpus", LABELS, per_class=30)
    run = train(TrainConfig(corpus=str(corpus), out=str(tmp / "run"), taxonomy="met-19", arch="tiny",
                            pretrained=False, image_size=48, epochs=4, batch_size=16, lr=3e-3, workers=0,
                            device="cpu"))
    evaluate_run(run, "test", group_by="met-6", workers=0)
    return run


def test_evaluate_groups_met19_into_met6(run):
    r = json.loads((run / "eval_test.json").read_text())
    assert len(r["classes"]) == 19
    g = r["grouped"]
    assert g["taxonomy"] == "met-6" and len(g["classes"]) == 6
    assert g["metrics"]["top1"] >= r["metrics"]["top1"]  # merging classes can only turn errors into hits
    assert g["metrics"]["n"] == r["metrics"]["n"]


def test_export_writes_the_model_repository_contract(run, tmp_path):
    v1 = export_run(run, tmp_path / "repo", "artroute")
    v2 = export_run(run, tmp_path / "repo", "artroute")
    model_dir = tmp_path / "repo" / "artroute"
    assert (v1.name, v2.name) == ("1", "2")
    assert {p.name for p in v1.iterdir()} == {"model.pt", "model.py", "metadata.json"}
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]  # no staging left behind
    info, _ = load_model(run)
    assert (model_dir / "labels.txt").read_text().splitlines() == info.classes
    meta = json.loads((v2 / "metadata.json").read_text())
    assert meta["labels"] == info.classes and meta["taxonomy"] == "met-19" and meta["version"] == 2
    assert meta["temperature"] == read_calibration(run).temperature
    assert meta["training_data_sha256"] == hashlib.sha256(Path(info.manifest).read_bytes()).hexdigest()
    assert meta["input"]["shape"] == [3, 48, 48] and "test" in meta["metrics"] and meta["arch"] == "tiny"

    gpu, cpu = (model_dir / "config.pbtxt").read_text(), (model_dir / "configs" / "cpu.pbtxt").read_text()
    assert 'platform: "pytorch_libtorch"' in gpu and "KIND_GPU" in gpu and "dynamic_batching" in gpu
    assert 'backend: "python"' in cpu and "KIND_CPU" in cpu
    for text in (gpu, cpu):
        assert 'name: "IMAGE__0" data_type: TYPE_UINT8 dims: [ 3, 48, 48 ]' in text
        assert 'name: "PROBS__0" data_type: TYPE_FP32 dims: [ 19 ]' in text
        labels = re.search(r'key: "artroute_labels" value: \{ string_value: "(.*)" \}', text).group(1)
        assert json.loads(labels.replace('\\"', '"')) == info.classes
        assert 'key: "artroute_taxonomy" value: { string_value: "met-19" }' in text
        assert 'key: "artroute_resize" value: { string_value: "letterbox" }' in text


def serving_batch(run: Path, size: int) -> torch.Tensor:
    info, _ = load_model(run)
    base = Path(info.manifest).parent
    rows = [r for r in read_manifest(info.manifest) if r.split == "test"][:8]
    return torch.from_numpy(np.stack([to_model_input(Image.open(base / r.path), (size, size)) for r in rows]))


def test_torchscript_matches_eager(run, tmp_path):
    version = export_run(run, tmp_path / "repo")
    _, model = load_model(run)
    eager = Calibrated(model, read_calibration(run).temperature).eval()
    traced = torch.jit.load(str(version / "model.pt"))
    x = serving_batch(run, 48)
    with torch.no_grad():
        a, b = eager(x), traced(x)
    assert b.dtype == torch.float32 and b.shape == (8, 19)
    assert (a - b).abs().max().item() < 1e-4
    assert torch.allclose(b.sum(1), torch.ones(8), atol=1e-5)


def test_quick_train_and_export_is_fast_and_learns(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", ["disc", "square", "hstripes", "vstripes", "triangle"], per_class=60)
    start = time.perf_counter()
    version = quick_train_and_export(corpus.parent, tmp_path / "repo", run_dir=tmp_path / "quick")
    assert time.perf_counter() - start < 120
    meta = json.loads((version / "metadata.json").read_text())
    assert version == tmp_path / "repo" / "artroute" / "1" and len(meta["labels"]) == 5
    assert meta["metrics"]["test"]["top1"] > 0.5  # chance is 0.2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not (PYTRITON / "bin" / "tritonserver").is_file(), reason="pytriton's tritonserver not installed")
def test_triton_cpu_config_serves_the_export(run, tmp_path):
    import tritonclient.http as http

    export_run(run, tmp_path / "repo")
    backend = tmp_path / "backends" / "python"
    backend.mkdir(parents=True)
    for f in (PYTRITON / "backends" / "python").iterdir():
        (backend / f.name).symlink_to(f)
    (backend / "triton_python_backend_stub").symlink_to(PYTRITON / "python_backend_stubs/3.11/triton_python_backend_stub")
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    server = subprocess.Popen(
        [str(PYTRITON / "bin" / "tritonserver"), f"--model-repository={tmp_path / 'repo'}",
         f"--backend-directory={tmp_path / 'backends'}", "--model-config-name=cpu", "--strict-readiness=false",
         "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", f"--http-port={http_port}",
         f"--grpc-port={grpc_port}", f"--metrics-port={metrics_port}", "--exit-timeout-secs=5"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        client = http.InferenceServerClient(f"127.0.0.1:{http_port}")
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if client.is_model_ready("artroute"):
                    break
            except Exception:
                pass
            time.sleep(0.5)
        assert client.is_model_ready("artroute")
        x = serving_batch(run, 48).numpy()
        inp = http.InferInput("IMAGE__0", list(x.shape), "UINT8")
        inp.set_data_from_numpy(x)
        probs = client.infer("artroute", [inp]).as_numpy("PROBS__0")
        traced = torch.jit.load(str(tmp_path / "repo" / "artroute" / "1" / "model.pt"))
        with torch.no_grad():
            assert np.abs(traced(torch.from_numpy(x)).numpy() - probs).max() < 1e-5
        params = client.get_model_config("artroute")["parameters"]
        assert json.loads(params["artroute_labels"]["string_value"]) == load_model(run)[0].classes
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
