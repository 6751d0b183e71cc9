"""The ledger's HTTP/JSON API (FastAPI): the `Ledger` Python API over HTTP, plus object images.

Every route is under /api/v1 (docs/ledger.md lists them; /docs serves the OpenAPI page). With
ARTROUTE_LEDGER_API_TOKEN set, every /api route needs `Authorization: Bearer <token>`; /healthz and
/metrics stay open for probes and Prometheus. Errors are JSON `{"detail": "..."}` with 404 (unknown
decision/object/verdict), 409 (conflict), 422 (invalid verdict or parameters).

GET /api/v1/image?bucket=&key=&etag= serves the photo of a decision the ledger holds, fetched from S3
and checked against the etag (409 when the object changed since): the console never hands out bucket
URLs, and nothing the ledger has not decided can be fetched through it.
"""
from __future__ import annotations

import hmac
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from streams.contract.curation import API_PREFIX, CURATED_PATH, IMAGE_PATH, CuratedPage, Verdict
from streams.ledger.errors import LedgerError, NotFound
from streams.ledger.export import export, parse_time
from streams.ledger.outbox import pending
from streams.ledger.schemas import (ConfusionCell, Counts, DeadLetterPage, Department, ObjectHistory, Page, QueueItem,
                                    SearchQuery, Stats, Status)
from streams.ledger.service import Ledger
from streams.ledger.stats import StatsCollector
from streams.ledger.verdicts import VerdictRequest


class VerdictIn(BaseModel):
    decision_id: str
    kind: Literal["confirm", "correct", "not_routable"]
    curator: str = Field(min_length=1)
    department: str | None = None
    note: str = ""
    verdict_id: str | None = Field(None, description="idempotency key: resending the same id records nothing new")


class BulkConfirmIn(BaseModel):
    decision_ids: list[str] = Field(min_length=1, max_length=1000)
    curator: str = Field(min_length=1)


class RetractIn(BaseModel):
    curator: str = Field(min_length=1)


def create_app(ledger: Ledger, store=None) -> FastAPI:
    """`store`: a minio client for the image route (default: one from the ledger's settings)."""
    settings = ledger.settings
    token = settings.ledger_api_token.get_secret_value() if settings.ledger_api_token else None
    registry = CollectorRegistry()
    registry.register(StatsCollector(ledger.engine))

    def authorized(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is None:
            return
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="artroute ledger", version="1", description=__doc__)
    api = Depends(authorized)

    @app.exception_handler(LedgerError)
    async def ledger_error(_: Request, e: LedgerError) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=e.status)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "outbox_pending": pending(ledger.engine)}

    @app.get("/metrics")
    def metrics() -> Response:
        body = generate_latest(DEFAULT_REGISTRY) + generate_latest(registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get(f"{API_PREFIX}/queue", dependencies=[api])
    def queue(limit: int = Query(20, ge=1, le=500), department: str | None = None, reason: str | None = None,
              model_version: str | None = None, exclude: Annotated[list[int], Query()] = []) -> list[QueueItem]:
        return ledger.queue(limit, department, reason, model_version, exclude)

    @app.post(f"{API_PREFIX}/verdicts", dependencies=[api], status_code=201)
    def record(v: VerdictIn) -> Verdict:
        return ledger.record_verdicts([VerdictRequest(v.decision_id, v.kind, v.curator, v.department, v.note,
                                                      v.verdict_id)])[0]

    @app.post(f"{API_PREFIX}/verdicts/bulk-confirm", dependencies=[api], status_code=201)
    def bulk_confirm(body: BulkConfirmIn) -> list[Verdict]:
        return ledger.bulk_confirm(body.decision_ids, body.curator)

    @app.post(f"{API_PREFIX}/verdicts/{{verdict_id}}/retract", dependencies=[api], status_code=201)
    def retract(verdict_id: str, body: RetractIn) -> Verdict:
        return ledger.retract(verdict_id, body.curator)

    @app.get(f"{API_PREFIX}/objects", dependencies=[api])
    def search(key: str | None = None, prefix: str | None = None, bucket: str | None = None,
               department: str | None = None, verdict_department: str | None = None, status: Status | None = None,
               model_version: str | None = None, since: str | None = None, until: str | None = None,
               cursor: str | None = None, limit: int = Query(50, ge=1, le=1000)) -> Page:
        return ledger.search(SearchQuery(
            key=key, prefix=prefix, bucket=bucket, department=department, verdict_department=verdict_department,
            status=status, model_version=model_version, since=parse_time(since) if since else None,
            until=parse_time(until) if until else None, cursor=cursor, limit=limit))

    @app.get(f"{API_PREFIX}/objects/{{object_id}}", dependencies=[api])
    def history(object_id: int) -> ObjectHistory:
        return ledger.history(object_id)

    @app.get(f"{API_PREFIX}/dead-letters", dependencies=[api])
    def dead_letters(limit: int = Query(50, ge=1, le=1000), cursor: str | None = None,
                     kind: str | None = None) -> DeadLetterPage:
        return ledger.dead_letters(limit, cursor, kind)

    @app.get(f"{API_PREFIX}/stats", dependencies=[api])
    def stats(model_name: str | None = None) -> Stats:
        return ledger.stats(model_name)

    @app.get(f"{API_PREFIX}/confusion", dependencies=[api])
    def confusion(model_name: str, model_version: str) -> list[ConfusionCell]:
        return ledger.confusion(model_name, model_version)

    @app.get(f"{API_PREFIX}/departments", dependencies=[api])
    def departments(model_name: str) -> list[Department]:
        return ledger.departments(model_name)

    @app.get(f"{API_PREFIX}/counts", dependencies=[api])
    def counts(prefix: str | None = None) -> Counts:
        return ledger.counts(prefix)

    @app.get(CURATED_PATH, dependencies=[api])
    def curated(cursor: str | None = None, limit: int = Query(500, ge=1, le=5000)) -> CuratedPage:
        return ledger.curated(cursor, limit)

    @app.get(f"{API_PREFIX}/export", dependencies=[api])
    def export_file(format: Literal["csv", "parquet"] = "csv", since: str | None = None,
                    department: str | None = None) -> FileResponse:
        tmp = Path(tempfile.mkstemp(prefix="artroute-export-", suffix=f".{format}")[1])
        export(ledger.engine, format, tmp, parse_time(since) if since else None, department)
        media = "text/csv" if format == "csv" else "application/vnd.apache.parquet"
        return FileResponse(tmp, media_type=media, filename=f"artroute-ledger.{format}",
                            background=BackgroundTask(tmp.unlink, missing_ok=True))

    @app.get(IMAGE_PATH, dependencies=[api])
    def image(bucket: str, key: str, etag: str) -> Response:
        if not ledger.known_object(bucket, key, etag):
            raise NotFound(f"the ledger holds no decision on s3://{bucket}/{key} with etag {etag}")
        data, content_type, current = fetch_image(store or default_store(ledger), bucket, key)
        if current != etag:
            raise HTTPException(409, f"s3://{bucket}/{key} changed since (etag {current}, asked {etag})")
        return Response(data, media_type=content_type or "application/octet-stream",
                        headers={"ETag": f'"{etag}"', "Cache-Control": "private, max-age=86400"})

    return app


_stores: dict[int, object] = {}


def default_store(ledger: Ledger):
    from streams.worker.store import make_client

    return _stores.setdefault(id(ledger), make_client(ledger.settings, pool_size=8))


def fetch_image(client, bucket: str, key: str) -> tuple[bytes, str | None, str]:
    """(bytes, content type, etag without quotes); NotFound when the object is gone."""
    from minio.error import S3Error

    try:
        resp = client.get_object(bucket, key)
    except S3Error as e:
        if e.code in ("NoSuchKey", "NoSuchBucket"):
            raise NotFound(f"s3://{bucket}/{key}: {e.code}") from None
        raise
    try:
        return resp.read(), resp.headers.get("Content-Type"), (resp.headers.get("ETag") or "").strip('"')
    finally:
        resp.close()
        resp.release_conn()
