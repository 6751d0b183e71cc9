"""The model contract and the Triton configs built from it: digests, protobuf round trips, what the worker
refuses to serve."""
from __future__ import annotations

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from streams.contract.model import CONTRACT, IMAGE, PROBS, Label, ModelContract
from streams.contract.triton_config import (ConfigError, build_config, contracts_of, parse_pbtxt, served_input_size,
                                            to_pbtxt)
from streams.worker.inference import ModelMismatch, ServedModel, check_served


def contract(version=1, labels=("Egyptian Art", "Asian Art"), size=(64, 64), **kw) -> ModelContract:
    return ModelContract(**{"model_name": "artroute", "version": version, "taxonomy": "corpus",
                            "labels": [Label(name=n, department_ids=[i + 1]) for i, n in enumerate(labels)],
                            "input_size": size, "temperature": 1.3, "training_data_sha256": "ab" * 32, **kw})


def test_digest_covers_what_the_worker_reads_and_nothing_else():
    base = contract()
    assert len(base.digest()) == 32
    assert contract(version=7, run="/elsewhere", metrics={"top1": 0.9}, temperature=2.0).digest() == base.digest()
    assert contract(labels=("Asian Art", "Egyptian Art")).digest() != base.digest()  # another order
    assert contract(size=(96, 96)).digest() != base.digest()
    other_ids = base.model_copy(update={"labels": [Label(name="Egyptian Art", department_ids=[10]), base.labels[1]]})
    assert other_ids.digest() != base.digest()


@pytest.mark.parametrize("variant", ["gpu", "onnx", "cpu", "cpu-onnx"])
def test_config_round_trips_through_text_and_indexes_the_versions(variant):
    contracts = [contract(1), contract(2, labels=("Asian Art", "Egyptian Art", "Islamic Art"))]
    config = build_config("artroute", contracts, variant, max_batch_size=16)
    text = to_pbtxt(config)
    back = parse_pbtxt(text)
    assert back == config and to_pbtxt(back) == text
    assert contracts_of(back) == {1: contracts[0], 2: contracts[1]}
    assert served_input_size(back) == (64, 64) and back.max_batch_size == 16
    assert [t.name for t in back.input] == [IMAGE.name] and [t.name for t in back.output] == [PROBS.name, CONTRACT.name]


def test_versions_that_take_other_images_cannot_share_a_config():
    with pytest.raises(ConfigError, match="disagree on the input size"):
        build_config("artroute", [contract(1), contract(2, size=(96, 96))], "cpu")


def test_configs_of_other_models_are_named_in_one_line():
    config = build_config("artroute", [contract()], "cpu")
    del config.output[1]
    with pytest.raises(ConfigError, match="no tensor CONTRACT__1"):
        served_input_size(config)
    config = build_config("artroute", [contract()], "cpu")
    config.input[0].data_type = mc.TYPE_FP32
    with pytest.raises(ConfigError, match="IMAGE__0 is TYPE_FP32, the contract says TYPE_UINT8"):
        served_input_size(config)
    config = build_config("artroute", [contract()], "cpu")
    config.parameters["artroute_contract.3"].string_value = '{"labels": []}'
    with pytest.raises(ConfigError, match="artroute_contract.3: not a contract"):
        contracts_of(config)
    with pytest.raises(ConfigError, match="not a Triton model config"):
        parse_pbtxt("name: artroute {")


def served(**kw) -> ServedModel:
    return ServedModel(**{"name": "artroute", "versions": ["1"], "input_size": (64, 64), "max_batch_size": 32,
                          "contracts": {1: contract()}, **kw})


def test_start_up_checks_name_the_mismatch():
    check_served(served(), 32)
    with pytest.raises(ModelMismatch, match=r"ARTROUTE_MAX_BATCH=64 exceeds max_batch_size 32 of model 'artroute'"):
        check_served(served(), 64)
    with pytest.raises(ModelMismatch, match="version 2 has no contract"):
        check_served(served(versions=["2"]), 8)
    with pytest.raises(ModelMismatch, match="resize mode 'crop' is not implemented"):
        check_served(served(contracts={1: contract(resize="crop")}), 8)
    with pytest.raises(ModelMismatch, match=r"contract input \[96, 96\] differs from the served input \[64, 64\]"):
        check_served(served(contracts={1: contract(size=(96, 96))}), 8)
