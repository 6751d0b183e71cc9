"""What the pages show: template rendering (with the user, the CSRF token and flash messages), review
items as the page's JavaScript gets them, why an item is in review, and form values."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse

from streams.console.auth import csrf_token
from streams.ledger.errors import Invalid
from streams.ledger.schemas import QueueItem

REASONS = {
    "low_confidence": "Low confidence: the model's top score is below the review threshold",
    "small_margin": "Small margin: the model's first and second departments are close",
    "unfamiliar": "Unfamiliar photo: unlike the photos the model was trained on",
    "audit": "Audit sample: auto-routed, picked at random to measure what nobody reviews",
}


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    session = request.session
    user = getattr(request.state, "user", None)
    flashes = session.pop("flash", []) if user is not None else []
    return request.app.state.templates.TemplateResponse(
        request, template, {"user": user, "csrf": csrf_token(session), "flashes": flashes, "reasons": REASONS,
                            **context}, status_code=status)


def flash(request: Request, text: str, level: str = "ok") -> None:
    request.session["flash"] = [*request.session.get("flash", []), {"text": text, "level": level}]


def image_url(object_id: int, etag: str | None, size: str = "full") -> str:
    url = f"/image/{object_id}?etag={quote(etag or '', safe='')}"
    return url + ("&size=thumb" if size == "thumb" else "")


def reason_text(reason: str | None) -> str:
    return REASONS.get(reason or "", reason or "")


def prediction_set(decision: dict[str, Any]) -> list[str] | None:
    """The decision's prediction set, if it carries one: a list of labels or of {label, score}."""
    raw = decision.get("prediction_set")
    if not isinstance(raw, list):
        return None
    out = []
    for entry in raw:
        if isinstance(entry, str):
            out.append(entry)
        elif isinstance(entry, dict) and isinstance(entry.get("label"), str):
            out.append(entry["label"])
    return out


def item_view(item: QueueItem) -> dict[str, Any]:
    """One review item for the page (rendered as text by the page: never HTML)."""
    return {
        "object_id": item.object_id, "decision_id": item.decision_id, "bucket": item.bucket, "key": item.key,
        "etag": item.etag, "model": item.model_name, "version": item.model_version, "department": item.department,
        "confidence": round(item.confidence, 4), "margin": round(item.margin, 4),
        "top3": [{"label": str(t.get("label")), "score": round(float(t.get("score", 0.0)), 4)} for t in item.top3],
        "reason": item.reason, "reason_text": reason_text(item.reason),
        "prediction_set": prediction_set(item.decision),
        "event_time": when(item.event_time) + " UTC", "decided_at": when(item.decided_at) + " UTC",
        "image": image_url(item.object_id, item.etag), "thumb": image_url(item.object_id, item.etag, "thumb"),
        "history": f"/objects/{item.object_id}",
    }


def blank(value: str | None) -> str | None:
    """Form value -> None when empty."""
    value = (value or "").strip()
    return value or None


def parse_day(value: str | None, field: str, end: bool = False) -> datetime | None:
    """'YYYY-MM-DD' (a date input) or an ISO time -> an aware UTC datetime; `end`: the day after."""
    value = blank(value)
    if value is None:
        return None
    try:
        if len(value) == 10:
            day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
            return day + timedelta(days=1) if end else day
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return at if at.tzinfo else at.replace(tzinfo=UTC)
    except ValueError:
        raise Invalid(f"{field}: {value!r} is not a date (YYYY-MM-DD)") from None


def when(value: datetime | None) -> str:
    """A time as the pages print it: UTC, to the second."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def percent(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f} %"


def age(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= n:
            return f"{seconds / n:.1f} {unit}"
    return f"{seconds:.0f} s"
