"""Dead letters: what could not be decided (kind, stage, message, key), and for admins, re-publishing an
object's intake event once its file is fixed.

Re-publishing is the replay path (streams.worker.replay): the object's current state is read from S3
(etag, size, version, upload time) and one MinIO-format ObjectCreated event, built by the same
`to_s3_event_json`, goes to the intake topic, acknowledged by the broker before the page says so. The
worker decides it like any upload; the row then shows when the object was re-decided.
"""
from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from urllib.parse import urlencode

from streams.console.auth import require_admin, require_user
from streams.console.users import User
from streams.console.views import blank, flash, render
from streams.ledger.images import safe_key
from streams.worker.events import to_s3_event_json
from streams.worker.publisher import Publisher

router = APIRouter()
PAGE = 50
PUBLISH_TIMEOUT_S = 30.0


@router.get("/dead-letters")
def dead_letters_page(request: Request, user: Annotated[User, Depends(require_user)], kind: str | None = None,
                      cursor: str | None = None) -> Response:
    page = request.app.state.ledger.dead_letters(PAGE, blank(cursor), blank(kind))
    query = {"kind": kind} if blank(kind) else {}
    next_url = "/dead-letters?" + urlencode({**query, "cursor": page.next_cursor}) if page.next_cursor else None
    return render(request, "deadletters.html", page=page, kind=kind or "", next_url=next_url)


async def _publisher(st) -> Publisher:
    if st.publisher is None:
        publisher = Publisher(st.settings)
        await publisher.start()
        st.publisher = publisher
    return st.publisher


@router.post("/dead-letters/republish")
async def republish(request: Request, user: Annotated[User, Depends(require_admin)],
                    object_id: Annotated[int, Form()]) -> Response:
    st = request.app.state
    obj = await asyncio.to_thread(st.ledger.object, object_id)
    back = RedirectResponse("/dead-letters", 303)
    if not safe_key(obj.key):
        flash(request, f"s3://{obj.bucket}/{obj.key}: a key with '.' or '..' segments is not re-published.", "error")
        return back
    try:
        stat = await asyncio.to_thread(st.photos.images.client.stat_object, obj.bucket, obj.key)
    except Exception as e:  # noqa: BLE001 - minio's S3Error (no such key) or a store that is away
        flash(request, f"s3://{obj.bucket}/{obj.key} cannot be read: {getattr(e, 'code', type(e).__name__)}. "
                       "Upload the fixed file first.", "error")
        return back
    etag = (stat.etag or "").strip('"')
    event = to_s3_event_json(obj.bucket, obj.key, stat.size or 0, etag, version_id=stat.version_id,
                             event_time=stat.last_modified)   # as `replay` builds it
    try:
        publisher = await _publisher(st)
        await asyncio.wait_for(publisher.send_all([(st.settings.intake_topic, obj.key.encode(), event)]),
                               PUBLISH_TIMEOUT_S)
    except Exception as e:  # noqa: BLE001 - the broker is away: say so, nothing was published
        broken, st.publisher = st.publisher, None   # a fresh producer next time
        if broken is not None:
            await broken.stop()
        flash(request, f"Kafka did not take the event ({type(e).__name__}); nothing was re-published.", "error")
        return back
    same = " (the same content as when it failed)" if etag == (obj.etag or "") else ""
    flash(request, f"Re-published s3://{obj.bucket}/{obj.key} (etag {etag}){same} as {user.name}; "
                   "the row shows when it is re-decided.")
    return back
