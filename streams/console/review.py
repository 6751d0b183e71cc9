"""The review queue (one artwork at a time, keyboard-driven) and grid triage (24 at once), and the JSON
the review page's script uses: more queue items, verdicts, undo.

The page gets its first items with the HTML and keeps a few more prefetched (their photos loaded and
decoded), so the next artwork shows the moment a verdict key is pressed; the verdict is posted in the
background, in order, with a verdict id chosen by the page (a retry records it once).
"""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field
from urllib.parse import urlencode

from streams.console.auth import require_user
from streams.console.modelpage import cached_versions
from streams.console.users import User
from streams.console.views import blank, flash, item_view, render
from streams.contract.curation import Verdict
from streams.ledger.service import Ledger
from streams.ledger.verdicts import VerdictRequest

router = APIRouter()
PREFETCH = 6
GRID = 24
KNOWN_REASONS = ["low_confidence", "small_margin", "unfamiliar", "audit"]


class VerdictIn(BaseModel):
    decision_id: str
    kind: Literal["confirm", "correct", "not_routable"]
    department: str | None = None
    note: str = Field("", max_length=2000)
    verdict_id: str | None = Field(None, max_length=36, description="chosen by the page: a retry records nothing new")


def _filters(department: str | None, reason: str | None, model_version: str | None) -> dict[str, str | None]:
    return {"department": blank(department), "reason": blank(reason), "model_version": blank(model_version)}


def departments_of(ledger: Ledger, model_names: set[str]) -> dict[str, list[str]]:
    return {name: [d.label for d in ledger.departments(name)] for name in sorted(model_names)}


@router.get("/review")
def review_page(request: Request, user: Annotated[User, Depends(require_user)], department: str | None = None,
                reason: str | None = None, model_version: str | None = None) -> Response:
    st = request.app.state
    filters = _filters(department, reason, model_version)
    items = [item_view(i) for i in st.ledger.queue(PREFETCH, **filters)]
    models = {i["model"] for i in items} | {st.settings.model_name}
    departments = departments_of(st.ledger, models)
    all_departments = sorted({d for ds in departments.values() for d in ds})
    boot = {"items": items, "departments": departments, "filters": filters, "prefetch": PREFETCH}
    return render(request, "review.html", filters=filters, first=items[0] if items else None, boot=boot,
                  all_departments=all_departments, known_reasons=KNOWN_REASONS,
                  versions=cached_versions(st))


@router.get("/api/queue")
def api_queue(request: Request, _: Annotated[User, Depends(require_user)], limit: int = Query(PREFETCH, ge=1, le=50),
              department: str | None = None, reason: str | None = None, model_version: str | None = None,
              exclude: Annotated[list[int], Query(max_length=1000)] = []) -> dict:
    items = request.app.state.ledger.queue(limit, exclude=exclude, **_filters(department, reason, model_version))
    return {"items": [item_view(i) for i in items]}


@router.get("/api/departments")
def api_departments(request: Request, _: Annotated[User, Depends(require_user)], model_name: str) -> dict:
    return departments_of(request.app.state.ledger, {model_name})


@router.post("/api/verdicts", status_code=201)
def api_verdict(request: Request, body: VerdictIn, user: Annotated[User, Depends(require_user)]) -> Verdict:
    st = request.app.state
    [v] = st.ledger.record_verdicts([VerdictRequest(body.decision_id, body.kind, user.name, body.department,
                                                    body.note, body.verdict_id)])
    st.metrics.recorded(v.kind)
    return v


@router.post("/api/verdicts/{verdict_id}/retract", status_code=201)
def api_retract(request: Request, verdict_id: str, user: Annotated[User, Depends(require_user)]) -> Verdict:
    st = request.app.state
    v = st.ledger.retract(verdict_id, user.name)
    st.metrics.recorded("retract")
    return v


# --- grid triage ---------------------------------------------------------------------------------------

@router.get("/grid")
def grid_page(request: Request, user: Annotated[User, Depends(require_user)], department: str | None = None,
              model_version: str | None = None) -> Response:
    st = request.app.state
    department, model_version = blank(department), blank(model_version)
    if department is None:  # the department of the oldest item waiting
        oldest = st.ledger.queue(1, model_version=model_version)
        department = oldest[0].department if oldest else None
    items = [item_view(i) for i in st.ledger.queue(GRID, department, model_version=model_version)] if department else []
    models = {i["model"] for i in items} | {st.settings.model_name}
    departments = sorted({d for ds in departments_of(st.ledger, models).values() for d in ds} | {department or ""} - {""})
    return render(request, "grid.html", department=department, model_version=model_version or "", items=items,
                  departments=departments)


@router.post("/grid")
def grid_confirm(request: Request, user: Annotated[User, Depends(require_user)],
                 department: Annotated[str, Form()], model_version: Annotated[str, Form()] = "",
                 item: Annotated[list[str], Form()] = [], wrong: Annotated[list[str], Form()] = []) -> Response:
    """Confirm every shown decision not marked wrong (one transaction); the marked ones stay in the queue,
    the oldest of their department: the review page opens on them."""
    st = request.app.state
    marked = set(wrong)
    confirm = [d for d in dict.fromkeys(item) if d not in marked]
    if confirm:
        st.ledger.bulk_confirm(confirm, user.name)
        st.metrics.recorded("confirm", len(confirm))
    query = {"department": department, **({"model_version": model_version} if model_version else {})}
    if marked:
        flash(request, f"Confirmed {len(confirm)} as {department}; the {len(marked)} marked wrong are next here.")
        return RedirectResponse("/review?" + urlencode(query), 303)
    flash(request, f"Confirmed {len(confirm)} as {department}.")
    return RedirectResponse("/grid?" + urlencode(query), 303)
