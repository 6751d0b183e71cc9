"""The model page: how each model version does, from curators' verdicts (the ledger's live accuracy).

Per version: coverage (share auto-routed), agreement with curators overall, on reviewed items and on
the audit sample (the unbiased estimate of what nobody reviews), top-3 hit rate, per-department
agreement, the confusion between the model's and the curators' departments, and the review backlog
with the age of its oldest item. Figures come from the background cache (cache.py): the ledger's
`stats` is a pass over every decision, seconds at a million rows, so no page view waits for it after
the first; the page says how old its figures are.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response

from streams.console.auth import require_user
from streams.console.charts import bars, heatmap
from streams.console.users import User
from streams.console.views import age, percent, render

router = APIRouter()
STATS = "stats"


def stats_entry(st):
    return st.figures.get(STATS, st.ledger.stats)


def cached_versions(st) -> list[str]:
    """Model versions the cached figures know (never computes: for the review page's filter)."""
    entry = st.figures.peek(STATS)
    return sorted({g.model_version for g in entry.value.models}, key=_version_key) if entry else []


def warm(app: FastAPI) -> None:
    app.state.figures.warm(STATS, app.state.ledger.stats)


def _version_key(v: str):
    return (0, int(v), "") if v.isdigit() else (1, 0, v)


@router.get("/model")
def model_page(request: Request, _: Annotated[User, Depends(require_user)], model: str | None = None,
               version: str | None = None) -> Response:
    st = request.app.state
    entry = stats_entry(st)
    s = entry.value
    versions = sorted(s.models, key=lambda g: (g.model_name, _version_key(g.model_version)))
    chosen = next((g for g in versions if (model in (None, "", g.model_name))
                   and version in (None, "", g.model_version)), None) if (model or version) else None
    chosen = chosen or (versions[-1] if versions else None)
    context = {"versions": versions, "chosen": chosen, "computed_at": datetime.fromtimestamp(entry.computed_at, UTC), "ttl": st.settings.console_stats_ttl_s}
    if chosen is not None:
        key = ("confusion", chosen.model_name, chosen.model_version)
        cells = st.figures.get(key, lambda: st.ledger.confusion(chosen.model_name, chosen.model_version)).value
        departments = [d for d in s.departments
                       if (d.model_name, d.model_version) == (chosen.model_name, chosen.model_version)]
        context.update(departments=departments, confusion=cells, charts=_charts(chosen, departments, cells))
    return render(request, "model.html", **context)


def _charts(g, departments, cells) -> dict:
    summary = bars([("coverage (auto-routed)", g.coverage, f"of {g.decisions}"),
                    ("agreement, all verdicts", g.agreement, f"n={g.with_verdict}"),
                    ("agreement, reviewed", g.reviewed_agreement, f"n={g.reviewed}"),
                    ("agreement, audit sample", g.audit_agreement, f"n={g.audited}"),
                    ("curator's in top 3", g.top3_hit_rate, f"n={g.with_verdict}")],
                   f"model {g.model_name} version {g.model_version}: coverage and agreement")
    per_dept = bars([(d.department or "?", d.agreement, f"n={d.with_verdict}") for d in departments],
                    "agreement with curators per predicted department")
    top_backlog = max((d.backlog for d in departments), default=0)
    backlog = bars([(d.department or "?", float(d.backlog), f"oldest {age(d.oldest_pending_age_s)}")
                    for d in departments], "review backlog per predicted department",
                   max_value=float(top_backlog or 1), fmt=lambda v: f"{v:.0f}")
    rows = sorted({c.predicted for c in cells})
    cols = sorted({c.curator for c in cells}, key=lambda c: (c not in rows, c))
    confusion = heatmap(rows, cols, {(c.predicted, c.curator): c.n for c in cells},
                        "confusion: model's department (rows) against the curators' (columns)")
    return {"summary": summary, "per_department": per_dept, "backlog": backlog, "confusion": confusion,
            "percent": percent}
