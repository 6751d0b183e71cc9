"""Export: the model repository contract, configs as protobuf, TorchScript and ONNX parity, the libtorch 2.5
format guard, refusing a version that takes other images, the quick demo model, Triton CPU smoke."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from tritonclient.grpc import model_config_pb2 as mc

from streams.contract.imaging import to_model_input
from streams.contract.model import CONTRACT, IMAGE, PROBS, ModelContract
from streams.contract.triton_config import (CONTRACT_PARAMETER, VARIANT_FILES, contracts_of, parse_pbtxt,
                                            read_config, served_input_size, to_pbtxt)
from trainer.artifacts import LIBTORCH_2_5_MAX_FILE_FORMAT, torchscript_versions
from trainer.corpus.manifest import read_manifest
from trainer.evaluate import evaluate_run
from trainer.export import export_run, quick_train_and_export
from trainer.models import Calibrated
from trainer.run import TrainConfig, load_model, read_calibration
from trainer.synthetic import write_corpus
from trainer.train import train

# department names, so the same run also exercises met-19 + evaluate --group-by met-6
LABELS = ["Egyptian Art", "Greek and Roman Art", "Asian Art", "Islamic Art"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    corpus = write_corpus(tmp / "corpus", LABELS, per_class=30)
    run = train(TrainConfig(corpus=str(corpus), out=str(tmp / "run"), taxonomy="met-19", arch="tiny",
                            pretrained=False, image_size=48, epochs=4, batch_size=16, lr=3e-3, workers=0,
                            device="cpu"))
    evaluate_run(run, "test", group_by="met-6", workers=0)
    return run


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> Path:
    """A repository with two versions of the run (model name artroute)."""
    repo = tmp_path_factory.mktemp("repo")
    export_run(run, repo, "artroute")
    export_run(run, repo, "artroute")
    return repo


def test_evaluate_groups_met19_into_met6(run):
    r = json.loads((run / "eval_test.json").read_text())
    assert len(r["classes"]) == 19
    g = r["grouped"]
    assert g["taxonomy"] == "met-6" and len(g["classes"]) == 6
    assert g["metrics"]["top1"] >= r["metrics"]["top1"]  # merging classes can only turn errors into hits
    assert g["metrics"]["n"] == r["metrics"]["n"]


def test_export_writes_each_versions_contract(run, exported):
    model_dir = exported / "artroute"
    v1, v2 = model_dir / "1", model_dir / "2"
    assert {p.name for p in v1.iterdir()} == {"model.pt", "model.onnx", "model.py", "contract.json"}
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]  # no staging left behind
    assert not (model_dir / "labels.txt").exists()  # one label list for all versions is what broke rollouts
    info, _ = load_model(run)
    c = ModelContract.model_validate_json((v2 / "contract.json").read_text())
    assert c.label_names == info.classes and c.taxonomy == "met-19" and c.version == 2
    assert [lb.department_ids for lb in c.labels][:3] == [[1], [3], [4]]  # from the taxonomy YAML
    assert c.labels[c.label_names.index("Egyptian Art")].department_id == 10
    assert c.temperature == read_calibration(run).temperature and c.input_size == (48, 48)
    assert c.training_data_sha256 == hashlib.sha256(Path(info.manifest).read_bytes()).hexdigest()
    assert c.resize == "letterbox" and "test" in c.metrics and c.arch == "tiny"


def test_configs_are_protobuf_and_index_every_versions_contract(exported):
    model_dir = exported / "artroute"
    contracts = {v: ModelContract.model_validate_json((model_dir / str(v) / "contract.json").read_text())
                 for v in (1, 2)}
    engines = {}
    for variant, rel in VARIANT_FILES.items():
        text = (model_dir / rel).read_text()
        config = parse_pbtxt(text)
        assert to_pbtxt(config) == text  # round trip: the text is exactly what the protobuf prints
        assert config.name == "artroute" and config.max_batch_size == 32 and config.dynamic_batching
        assert served_input_size(config) == (48, 48)
        assert [(t.name, t.dims) for t in config.output] == [(PROBS.name, [-1]), (CONTRACT.name, [32])]
        assert contracts_of(config) == contracts
        assert sorted(k for k in config.parameters if k.startswith(CONTRACT_PARAMETER)) == [
            f"{CONTRACT_PARAMETER}1", f"{CONTRACT_PARAMETER}2"]
        engines[variant] = (config.platform or config.backend, config.default_model_filename,
                            mc.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind),
                            config.parameters["artroute_runtime"].string_value)
    assert engines == {"gpu": ("pytorch_libtorch", "model.pt", "KIND_GPU", ""),
                       "onnx": ("onnxruntime_onnx", "model.onnx", "KIND_GPU", ""),
                       "cpu": ("python", "", "KIND_CPU", "torchscript"),
                       "cpu-onnx": ("python", "", "KIND_CPU", "onnxruntime")}


def serving_batch(run: Path, size: int) -> torch.Tensor:
    info, _ = load_model(run)
    base = Path(info.manifest).parent
    rows = [r for r in read_manifest(info.manifest) if r.split == "test"][:8]
    return torch.from_numpy(np.stack([to_model_input(Image.open(base / r.path), (size, size)) for r in rows]))


def test_torchscript_and_onnx_match_eager_and_return_the_digest(run, exported):
    version = exported / "artroute" / "1"
    digest = ModelContract.model_validate_json((version / "contract.json").read_text()).digest()
    _, model = load_model(run)
    eager = Calibrated(model, read_calibration(run).temperature).eval()
    x = serving_batch(run, 48)
    with torch.no_grad():
        want = eager(x).numpy()
        probs, digests = (t.numpy() for t in torch.jit.load(str(version / "model.pt"))(x))
    session = ort.InferenceSession(str(version / "model.onnx"))
    assert [(i.name, i.type) for i in session.get_inputs()] == [(IMAGE.name, "tensor(uint8)")]
    assert [(o.name, o.type) for o in session.get_outputs()] == [(PROBS.name, "tensor(float)"),
                                                                 (CONTRACT.name, "tensor(uint8)")]
    onnx_probs, onnx_digests = session.run(None, {IMAGE.name: x.numpy()})
    for p, d in ((probs, digests), (onnx_probs, onnx_digests)):
        assert p.dtype == np.float32 and p.shape == (8, 19) and np.abs(p - want).max() < 1e-4
        assert np.allclose(p.sum(1), 1, atol=1e-5)
        assert d.dtype == np.uint8 and all(bytes(row) == digest for row in d)


def test_torchscript_archive_stays_readable_by_libtorch_2_5(exported):
    """Triton 24.10's pytorch backend is libtorch 2.5: a newer archive format or operator version would
    not load there, though it loads here. (Today: archive version 4, operator versions up to 10.)"""
    path = exported / "artroute" / "1" / "model.pt"
    record, operators = torchscript_versions(path)
    with zipfile.ZipFile(path) as z:
        assert any(n.endswith("/version") for n in z.namelist())
    assert 1 <= record <= LIBTORCH_2_5_MAX_FILE_FORMAT
    assert operators <= LIBTORCH_2_5_MAX_FILE_FORMAT
    assert torch._C._get_max_operator_version() <= LIBTORCH_2_5_MAX_FILE_FORMAT


def trainer_export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", "export", *args], capture_output=True, text=True,
                          timeout=300)


def test_export_refuses_a_version_that_takes_other_images(run, exported, tmp_path):
    """The worker prepares an image before it knows which version answers: one input size per model name."""
    repo = tmp_path / "repo"
    shutil.copytree(exported, repo)
    v2 = repo / "artroute" / "2" / "contract.json"
    v2.write_text(ModelContract.model_validate_json(v2.read_text()).model_copy(update={"input_size": (64, 64)})
                  .model_dump_json())
    r = trainer_export("--run", str(run), "--repository", str(repo))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "python -m trainer export: error: model 'artroute' version 2 takes other images: input size [48, 48] "
        "differs from [64, 64] — export under a new --model-name"]
    assert sorted(p.name for p in (repo / "artroute").iterdir()) == ["1", "2", "config.pbtxt", "configs"]
    r = trainer_export("--run", str(run), "--repository", str(repo), "--model-name", "artroute-48")
    assert r.returncode == 0, r.stderr
    assert (repo / "artroute-48" / "1" / "contract.json").is_file()


def test_export_refuses_to_join_versions_exported_without_a_contract(run, tmp_path):
    old = tmp_path / "repo" / "artroute" / "1"
    old.mkdir(parents=True)
    (old / "model.pt").write_bytes(b"an export from before the model contract")
    r = trainer_export("--run", str(run), "--repository", str(tmp_path / "repo"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "no contract.json" in r.stderr and "--model-name" in r.stderr


def test_quick_train_and_export_is_fast_and_learns(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", ["disc", "square", "hstripes", "vstripes", "triangle"], per_class=60)
    start = time.perf_counter()
    version = quick_train_and_export(corpus.parent, tmp_path / "repo", run_dir=tmp_path / "quick")
    assert time.perf_counter() - start < 120
    c = ModelContract.model_validate_json((version / "contract.json").read_text())
    assert version == tmp_path / "repo" / "artroute" / "1" and len(c.labels) == 5
    assert all(lb.department_ids == [] for lb in c.labels)  # the rows carry no department ids
    assert c.metrics["test"]["top1"] > 0.5  # chance is 0.2


@pytest.mark.slow
@pytest.mark.parametrize("config", ["cpu", "cpu-onnx"])
def test_triton_cpu_configs_serve_the_export(run, exported, tmp_path, config):
    import tritonclient.http as http

    from streams.stack.processes import free_port
    from streams.stack.servers import TritonServer, triton_home

    if not (triton_home() / "bin" / "tritonserver").is_file():
        pytest.skip("pytriton's tritonserver not installed")
    server = TritonServer(tmp_path, exported, free_port(), free_port(), free_port(), config)
    try:
        server.start(120)
        client = http.InferenceServerClient(server.http_url.removeprefix("http://"))
        x = serving_batch(run, 48).numpy()
        inp = http.InferInput(IMAGE.name, list(x.shape), IMAGE.dtype)
        inp.set_data_from_numpy(x)
        result = client.infer("artroute", [inp])
        assert result.get_response()["model_version"] == "2"  # Triton serves the newest version
        traced = torch.jit.load(str(exported / "artroute" / "2" / "model.pt"))
        with torch.no_grad():
            assert np.abs(traced(torch.from_numpy(x))[0].numpy() - result.as_numpy(PROBS.name)).max() < 1e-5
        digest = ModelContract.model_validate_json((exported / "artroute" / "2" / "contract.json").read_text()).digest()
        assert all(bytes(row) == digest for row in result.as_numpy(CONTRACT.name))
        assert contracts_of(read_config(exported / "artroute" / VARIANT_FILES[config]))[2].digest() == digest
    finally:
        server.process.stop()
        server.remove_leftover_shm()
