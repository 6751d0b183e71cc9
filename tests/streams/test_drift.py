"""Decisions with a version's routing rule (reason, prediction set, unfamiliar first), the drift window and
its gauges, and the example alert rules naming the metrics the worker really exports."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import yaml
from prometheus_client import REGISTRY

from streams.contract.model import ModelContract, Unfamiliarity
from streams.contract.routing import RoutingRule, Validation
from streams.worker import drift, metrics  # noqa: F401 - registers the worker's metrics
from streams.worker.decisions import decide
from streams.worker.drift import Drift
from tests.streams.test_decisions import EVENT, LABELS, NOW

ROOT = Path(__file__).resolve().parents[2]
NAMES = [lb.name for lb in LABELS]
RULE = RoutingRule(method="ltt", classes=NAMES, confidence_threshold=0.9, target_accuracy=0.95, delta=0.1,
                   set_threshold=0.2, set_coverage=0.95, unfamiliar_threshold=0.3, unfamiliar_false_alarm=0.05,
                   validation=Validation(n=100, auto_share=0.6, auto_accuracy=0.97, unfamiliar_share=0.05))
CONTRACT = ModelContract(model_name="artroute", version=1, taxonomy="met-19", labels=LABELS, input_size=(64, 64),
                         temperature=1.0, training_data_sha256="0" * 64, routing=RULE,
                         unfamiliarity=Unfamiliarity(k=10, taps=[], bank_size=100))


def decided(probs, u, rule=RULE):
    return decide(EVENT, np.asarray(probs, dtype=np.float32), LABELS, "artroute", "1", 0.6, 0.15, NOW, rule, u)


def test_the_rule_decides_with_reason_and_set():
    d = decided([0.95, 0.03, 0.01, 0.01], 0.1)
    assert (d.needs_review, d.review_reason, d.routing, d.prediction_set) == (False, None, "ltt", ["Egyptian Art"])
    d = decided([0.70, 0.25, 0.03, 0.02], 0.1)  # confident for the global 0.6, not for the rule's 0.9
    assert (d.needs_review, d.review_reason) == (True, "low_confidence")
    assert d.prediction_set == ["Egyptian Art", "Asian Art"] and d.unfamiliarity == 0.1


def test_unfamiliar_goes_to_review_whatever_its_confidence():
    d = decided([0.999, 0.001, 0, 0], 0.8)
    assert (d.needs_review, d.review_reason, d.department) == (True, "unfamiliar", "Egyptian Art")
    assert decided([0.999, 0.001, 0, 0], math.nan).review_reason == "unfamiliar"


def test_without_a_rule_the_global_thresholds_decide_as_before():
    d = decide(EVENT, np.array([0.70, 0.25, 0.03, 0.02]), LABELS, "artroute", "1", 0.6, 0.15, NOW)
    assert (d.needs_review, d.routing, d.prediction_set, d.unfamiliarity) == (False, "global", None, None)
    # the decision JSON of an old worker (no new fields) still reads
    assert type(d).model_validate_json(d.model_dump_json(exclude={"routing", "prediction_set", "unfamiliarity"}))


def test_the_contract_digest_of_a_version_without_rule_is_unchanged():
    old = CONTRACT.model_copy(update={"routing": None, "unfamiliarity": None})
    assert set(old.interface()) == {"schema_version", "taxonomy", "labels", "input_size", "resize", "tensors"}
    assert [t["name"] for t in old.interface()["tensors"]] == ["IMAGE__0", "PROBS__0", "CONTRACT__1"]
    assert [t["name"] for t in CONTRACT.interface()["tensors"]][-1] == "UNFAMILIAR__2"
    assert CONTRACT.digest() != old.digest()


def test_drift_window_shares_and_expected_gauges():
    w = Drift(window=4)
    for probs, u in [([0.95, 0.05, 0, 0], 0.1), ([0.95, 0.05, 0, 0], 0.9), ([0.5, 0.5, 0, 0], 0.1),
                     ([0.95, 0.05, 0, 0], 0.1), ([0.95, 0.05, 0, 0], 0.1), ([0.95, 0.05, 0, 0], 0.1)]:
        w.observe(decided(probs, u), CONTRACT)
    value = REGISTRY.get_sample_value
    # the window holds the last 4: unfamiliar(0.9) dropped out after the 6th, low-confidence still in
    assert value("artroute_drift_window_decisions") == 4
    assert value("artroute_auto_routed_share") == 0.75 and value("artroute_unfamiliar_share") == 0.0
    assert value("artroute_expected_auto_routed_share") == 0.6
    assert value("artroute_expected_unfamiliar_share") == 0.05
    assert value("artroute_unfamiliarity_count") >= 6 and value("artroute_confidence_count") >= 6
    w.observe(decided([0.95, 0.05, 0, 0], None, rule=None), CONTRACT.model_copy(update={"routing": None}))
    assert math.isnan(value("artroute_expected_auto_routed_share"))


def test_alert_rules_parse_and_name_exported_metrics():
    doc = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert {"ArtrouteAutoRouteShareDrift", "ArtrouteUnfamiliarShareHigh"} <= {r["alert"] for r in rules}
    exported = {m.name for m in REGISTRY.collect()}
    for r in rules:
        assert r["expr"].count("(") == r["expr"].count(")") and r["annotations"]["summary"]
        for name in re.findall(r"\bartroute_\w+", r["expr"]):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            assert base in exported, f"{r['alert']}: {name} is not a metric the worker exports"


async def test_the_router_applies_the_rule_the_config_can_serve(tmp_path, monkeypatch):
    # async: the Router makes its gRPC aio client, which needs a running event loop
    from streams.worker.router import Router
    from streams.worker.settings import Settings

    monkeypatch.setenv("ARTROUTE_STACK_FILE", str(tmp_path / "none.json"))
    router = Router(Settings(data_dir=str(tmp_path)))
    assert router._rule(CONTRACT, scored=True) is RULE
    ungated = router._rule(CONTRACT, scored=False)   # the config serves no UNFAMILIAR__2: no unfamiliar gate
    assert ungated.unfamiliar_threshold is None and ungated.confidence_threshold == RULE.confidence_threshold
    assert router._rule(CONTRACT, scored=False) is ungated   # made once per contract
    d = decide(EVENT, np.array([0.999, 0.001, 0, 0]), LABELS, "artroute", "1", 0.6, 0.15, NOW, ungated, None)
    assert (d.needs_review, d.unfamiliarity) == (False, None)      # decided on confidence alone
    assert router._rule(CONTRACT.model_copy(update={"routing": None}), scored=True) is None

    router = Router(Settings(data_dir=str(tmp_path), routing="global", review_min_confidence=0.5))
    override = router._rule(CONTRACT, scored=True)
    assert (override.method, override.confidence_threshold, override.unfamiliar_threshold) == ("global", 0.5, 0.3)
