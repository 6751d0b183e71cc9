"""Ledger search (key or prefix, department, review status, model version, upload date range; keyset
pages), one object's history (decisions of every model version, verdicts, dead letters, who and when),
and the CSV/Parquet export of the collection's current departments (admins only)."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Literal, get_args
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask

from streams.console.auth import require_admin, require_user
from streams.console.users import User
from streams.console.views import blank, image_url, parse_day, render
from streams.ledger.errors import Invalid
from streams.ledger.export import export
from streams.ledger.schemas import SearchQuery, Status

router = APIRouter()
STATUSES = list(get_args(Status))
PAGE = 50


@router.get("/search")
def search_page(request: Request, user: Annotated[User, Depends(require_user)], key: str | None = None,
                match: str = "prefix", department: str | None = None, status: str | None = None,
                model_version: str | None = None, since: str | None = None, until: str | None = None,
                cursor: str | None = None) -> Response:
    form = {"key": key or "", "match": match if match in ("prefix", "exact") else "prefix",
            "department": department or "", "status": status or "", "model_version": model_version or "",
            "since": since or "", "until": until or ""}
    error, page = "", None
    try:
        k = blank(key)
        st = blank(status)
        if st is not None and st not in STATUSES:
            raise Invalid(f"status {st!r}: one of {', '.join(STATUSES)}")
        query = SearchQuery(key=k if form["match"] == "exact" else None, prefix=k if form["match"] == "prefix" else None,
                            department=blank(department), status=st, model_version=blank(model_version),
                            since=parse_day(since, "from"), until=parse_day(until, "to", end=True),
                            cursor=blank(cursor), limit=PAGE)
        page = request.app.state.ledger.search(query)
    except Invalid as e:
        error = str(e)
    filled = {k: v for k, v in form.items() if v and not (k == "match" and v == "prefix")}
    next_url = ("/search?" + urlencode({**filled, "cursor": page.next_cursor})) if page and page.next_cursor else None
    export_query = urlencode({k: v for k, v in (("department", form["department"]), ("since", form["since"])) if v})
    return render(request, "search.html", form=form, page=page, error=error, statuses=STATUSES, next_url=next_url,
                  first_url=("/search?" + urlencode(filled)) if cursor else None, export_query=export_query)


@router.get("/objects/{object_id}")
def object_page(request: Request, object_id: int, user: Annotated[User, Depends(require_user)]) -> Response:
    h = request.app.state.ledger.history(object_id)
    photo = image_url(h.object.id, h.object.etag) if h.object.etag and h.object.decision_id else None
    return render(request, "object.html", h=h, photo=photo)


@router.get("/export")
def export_file(request: Request, user: Annotated[User, Depends(require_admin)],
                format: Literal["csv", "parquet"] = "csv", department: str | None = None,
                since: str | None = None) -> FileResponse:
    tmp = Path(tempfile.mkstemp(prefix="artroute-console-export-", suffix=f".{format}")[1])
    try:
        export(request.app.state.ledger.engine, format, tmp, parse_day(since, "since"), blank(department))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    media = "text/csv; charset=utf-8" if format == "csv" else "application/vnd.apache.parquet"
    return FileResponse(tmp, media_type=media, filename=f"artroute-ledger.{format}",
                        background=BackgroundTask(tmp.unlink, missing_ok=True))


@router.get("/image/{object_id}")
def image(request: Request, object_id: int, user: Annotated[User, Depends(require_user)], etag: str,
          size: Literal["full", "thumb"] = "full") -> Response:
    """The object's photo (photos.py): only content the ledger decided, in a type the console chose."""
    data, media = request.app.state.photos.get(object_id, etag, size)
    return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=86400, immutable",
                                                     "Content-Security-Policy": "default-src 'none'",
                                                     "Content-Disposition": "inline"})
