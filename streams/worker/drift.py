"""Drift of what the worker sees against what export measured on the validation photos (docs/trust.md).

Every decision is observed: its confidence and unfamiliarity go into Prometheus histograms, and the last
ARTROUTE_DRIFT_WINDOW decisions into a sliding window whose shares (auto-routed, reviewed as unfamiliar)
are gauges beside the shares the answering version's routing rule had on its validation photos. The
example alert rules in deploy/prometheus/alerts.yml fire when the two are far apart.
"""
from __future__ import annotations

import math
from collections import deque

from prometheus_client import Gauge, Histogram

from streams.contract.model import ModelContract
from streams.worker.decisions import RoutingDecision

CONFIDENCE = Histogram("artroute_confidence", "Top-1 calibrated probability of each decision",
                       buckets=(.3, .4, .5, .6, .7, .75, .8, .85, .9, .95, .98, .99, 1.0))
UNFAMILIARITY = Histogram("artroute_unfamiliarity", "Unfamiliarity score of each decision (versions that serve it)",
                          buckets=(.02, .05, .1, .15, .2, .25, .3, .4, .5, .6, .8, 1.0, 2.0))
WINDOW = Gauge("artroute_drift_window_decisions", "Decisions in the sliding window (ARTROUTE_DRIFT_WINDOW at most)")
AUTO_SHARE = Gauge("artroute_auto_routed_share", "Share of the window's decisions auto-routed (no review)")
UNFAMILIAR_SHARE = Gauge("artroute_unfamiliar_share", "Share of the window's decisions reviewed as unfamiliar")
EXPECTED_AUTO_SHARE = Gauge("artroute_expected_auto_routed_share",
                            "Share auto-routed on the validation photos by the latest deciding version's rule "
                            "(NaN: that version has no fitted rule)")
EXPECTED_UNFAMILIAR_SHARE = Gauge("artroute_expected_unfamiliar_share",
                                  "Share above the unfamiliarity threshold on the validation photos (NaN: none)")


class Drift:
    def __init__(self, window: int):
        self.recent: deque[tuple[bool, bool]] = deque(maxlen=window)   # (auto-routed, unfamiliar)
        self.auto = self.unfamiliar = 0

    def observe(self, d: RoutingDecision, contract: ModelContract) -> None:
        CONFIDENCE.observe(d.confidence)
        if d.unfamiliarity is not None and math.isfinite(d.unfamiliarity):
            UNFAMILIARITY.observe(d.unfamiliarity)
        if len(self.recent) == self.recent.maxlen:
            old_auto, old_unfamiliar = self.recent[0]
            self.auto -= old_auto
            self.unfamiliar -= old_unfamiliar
        item = (not d.needs_review, d.review_reason == "unfamiliar")
        self.recent.append(item)
        self.auto += item[0]
        self.unfamiliar += item[1]
        n = len(self.recent)
        WINDOW.set(n)
        AUTO_SHARE.set(self.auto / n)
        UNFAMILIAR_SHARE.set(self.unfamiliar / n)
        v = contract.routing.validation if contract.routing is not None else None
        EXPECTED_AUTO_SHARE.set(v.auto_share if v is not None else math.nan)
        EXPECTED_UNFAMILIAR_SHARE.set(v.unfamiliar_share if v is not None and v.unfamiliar_share is not None
                                      else math.nan)
