"""Intake events: the one parsing boundary between the store's bucket notifications and the worker.

`parse_intake(value, key)` takes a raw Kafka message from the intake topic and returns a `ParseResult`:
the `IntakeEvent`s to route, plus typed `Rejection`s - "ignored" (not an error: deletes, directories,
multipart parts, system paths, non-images, metadata-only changes) or "malformed" (bad JSON/protobuf,
missing fields, wrong types: the worker dead-letters the original bytes). Two wire formats:

* S3 bucket-notification JSON, as MinIO sends it (``{"EventName", "Key", "Records": [...]}``) or as AWS
  sends it (``{"Records": [...]}``, event names without the ``s3:`` prefix). Object keys are URL-encoded
  with ``+`` for spaces and are decoded here.
* SeaweedFS filer ``EventNotification`` protobuf (`streams.worker.seaweed_pb`), Kafka key = the entry's full
  path. The S3 gateway keeps bucket ``b`` under ``/buckets/b/``.

`to_s3_event_json` writes MinIO-format JSON (the replay command publishes it). docs/events.md has the
full table of what is ignored and what is dead-lettered.
"""
from __future__ import annotations

import base64
import hashlib
import json
import posixpath
import re
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import quote_plus, unquote_plus

from google.protobuf.message import DecodeError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streams.worker import seaweed_pb

Source = Literal["s3", "seaweedfs"]
IgnoreReason = Literal["delete", "directory", "multipart_part", "system_path", "not_image", "metadata_only",
                       "other_event", "test_event"]
MalformedReason = Literal["empty", "bad_json", "bad_protobuf", "unknown_format", "invalid_record", "unparseable"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".jif", ".jfi", ".pjpeg", ".pjp", ".png", ".tif",
                              ".tiff", ".webp", ".gif", ".bmp", ".jp2", ".j2k", ".jpf", ".jpx", ".avif"})
# Image formats the decoder does not read (HEIF, camera raw, JPEG XL, vector, HDR, layered): routed anyway, so
# that each becomes a dead letter `unsupported` instead of being ignored without a trace.
UNDECODABLE_IMAGE_EXTENSIONS = frozenset({
    ".heic", ".heif", ".hif", ".heics", ".heifs", ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf",
    ".sr2", ".orf", ".rw2", ".raf", ".pef", ".srw", ".x3f", ".erf", ".kdc", ".mrw", ".3fr", ".iiq", ".rwl",
    ".raw", ".jxl", ".exr", ".hdr", ".svg", ".svgz", ".psd", ".psb", ".xcf"})
UNDECODABLE_CONTENT_TYPES = frozenset({"image/heic", "image/heif", "image/heic-sequence", "image/heif-sequence",
                                       "image/jxl", "image/svg+xml", "image/x-adobe-dng", "image/x-canon-cr2",
                                       "image/x-canon-cr3", "image/x-nikon-nef", "image/x-sony-arw",
                                       "image/x-olympus-orf", "image/x-panasonic-rw2", "image/x-fuji-raf",
                                       "image/vnd.adobe.photoshop", "image/x-exr"})
GENERIC_CONTENT_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream",
                                   "application/x-www-form-urlencoded"})
# Object-created event names (without "s3:") that carry new content; other ObjectCreated:* are metadata.
CONTENT_EVENTS = frozenset({"ObjectCreated:Put", "ObjectCreated:Post", "ObjectCreated:Copy",
                            "ObjectCreated:CompleteMultipartUpload"})
SEAWEED_BUCKETS_DIR = "/buckets"
SEAWEED_ETAG_KEY = "Seaweed-X-Amz-ETag"
_SYSTEM_SEGMENTS = frozenset({".uploads", ".minio.sys", ".trash", ".system"})


class IntakeEvent(BaseModel):
    """A new or replaced image object to route. `key` is decoded unicode; `etag` has no quotes."""
    model_config = ConfigDict(frozen=True)

    bucket: str = Field(min_length=1)
    key: str = Field(min_length=1)
    size: int = Field(ge=0)
    etag: str = Field(min_length=1)
    version_id: str | None = None
    sequencer: str | None = None
    event_time: datetime
    event_name: str
    content_type: str | None = None
    source: Source
    record: int | None = Field(None, description="Index in the message's Records (S3 JSON).")

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class Rejection(BaseModel):
    """Why (part of) a message produced no event. `record` is the index in `Records` for S3 JSON."""
    model_config = ConfigDict(frozen=True)

    kind: Literal["ignored", "malformed"]
    reason: str
    message: str
    record: int | None = None
    bucket: str | None = None
    key: str | None = None


class ParseResult(BaseModel):
    events: list[IntakeEvent] = []
    rejections: list[Rejection] = []

    @property
    def ignored(self) -> list[Rejection]:
        return [r for r in self.rejections if r.kind == "ignored"]

    @property
    def malformed(self) -> list[Rejection]:
        """Non-empty means: dead-letter the original message (its valid events are still routed)."""
        return [r for r in self.rejections if r.kind == "malformed"]


def _ignored(reason: IgnoreReason, message: str, **where) -> Rejection:
    return Rejection(kind="ignored", reason=reason, message=message, **where)


def _malformed(reason: MalformedReason, message: str, **where) -> Rejection:
    return Rejection(kind="malformed", reason=reason, message=message, **where)


def parse_intake(value: bytes | None, key: bytes | None = None) -> ParseResult:
    """Raw intake message (value, Kafka key) -> events and rejections. Never raises, whatever the bytes."""
    try:
        if not value or not value.strip():
            return ParseResult(rejections=[_malformed("empty", "empty message value")])
        if value.lstrip()[:1] in (b"{", b"["):
            return _parse_s3_json(value)
        return _parse_seaweed(value, key)
    except RecursionError:
        return ParseResult(rejections=[_malformed("bad_json", "nested too deeply to parse")])
    except Exception as exc:  # noqa: BLE001 - a message nobody foresaw still becomes a dead letter
        return ParseResult(rejections=[_malformed("unparseable", f"{type(exc).__name__}: {exc}"[:500])])


# --- shared classification -------------------------------------------------------------------------

def classify_object(bucket: str, key: str, content_type: str | None) -> Rejection | None:
    """The ignore rules shared by both formats for an object that was created or replaced."""
    where = {"bucket": bucket, "key": key}
    if key.endswith("/"):
        return _ignored("directory", "directory marker", **where)
    segments = key.split("/")
    if ".uploads" in segments:
        return _ignored("multipart_part", "multipart upload part", **where)
    if bucket.startswith(".") or any(s in _SYSTEM_SEGMENTS or s.endswith(".versions") for s in segments):
        return _ignored("system_path", "store-internal path", **where)
    ctype = (content_type or "").split(";")[0].strip().lower()
    ext = posixpath.splitext(segments[-1])[1].lower()
    if ctype.startswith("image/") or ext in IMAGE_EXTENSIONS or ext in UNDECODABLE_IMAGE_EXTENSIONS:
        return None  # image-like: it ends as a decision or a dead letter, whatever it turns out to hold
    if ctype not in GENERIC_CONTENT_TYPES:
        return _ignored("not_image", f"content type {ctype}", **where)
    if ext:
        return _ignored("not_image", f"extension {ext}", **where)
    return None  # a generic type and no extension: nothing to go by, the decoder decides


def undecodable_format(key: str, content_type: str | None) -> str | None:
    """The name of an image format the decoder does not read (by extension or content type), else None."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    ext = posixpath.splitext(key.rsplit("/", 1)[-1])[1].lower()
    if ext in UNDECODABLE_IMAGE_EXTENSIONS:
        return ext
    return ctype if ctype in UNDECODABLE_CONTENT_TYPES else None


def canonical_key(key: str) -> str:
    """`key` as stores that normalise paths hold it (SeaweedFS: repeated '/' collapsed, no leading '/')."""
    return re.sub("/{2,}", "/", key).lstrip("/")


# --- S3 / MinIO JSON -------------------------------------------------------------------------------

class _S3Bucket(BaseModel):
    name: str = Field(min_length=1)


class _S3Object(BaseModel):
    key: str = Field(min_length=1)
    size: int | None = Field(None, ge=0)
    eTag: str | None = None
    versionId: str | None = None
    contentType: str | None = None
    sequencer: str | None = None


class _S3Entity(BaseModel):
    bucket: _S3Bucket
    object: _S3Object


class _S3Record(BaseModel):
    eventName: str
    eventTime: datetime
    eventSource: str | None = None
    s3: _S3Entity


def _parse_s3_json(value: bytes) -> ParseResult:
    try:
        doc = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return ParseResult(rejections=[_malformed("bad_json", str(exc))])
    if isinstance(doc, dict) and doc.get("Event") == "s3:TestEvent":
        return ParseResult(rejections=[_ignored("test_event", "S3 notification test event")])
    records = doc.get("Records") if isinstance(doc, dict) else None
    if not isinstance(records, list) or not records:
        return ParseResult(rejections=[_malformed("unknown_format", "expected an object with a non-empty "
                                                                    "'Records' list")])
    result = ParseResult()
    for i, raw in enumerate(records):
        outcome = _parse_s3_record(i, raw)
        (result.events if isinstance(outcome, IntakeEvent) else result.rejections).append(outcome)
    return result


def _parse_s3_record(i: int, raw: object) -> IntakeEvent | Rejection:
    try:
        rec = _S3Record.model_validate(raw)
    except ValidationError as exc:
        return _malformed("invalid_record", _validation_message(exc), record=i)
    bucket, key = rec.s3.bucket.name, unquote_plus(rec.s3.object.key)
    where = {"record": i, "bucket": bucket, "key": key}
    name = rec.eventName.removeprefix("s3:")
    if name.startswith("ObjectRemoved:"):
        return _ignored("delete", rec.eventName, **where)
    if not name.startswith("ObjectCreated:"):
        return _ignored("other_event", rec.eventName, **where)
    if name not in CONTENT_EVENTS:
        return _ignored("metadata_only", rec.eventName, **where)
    obj = rec.s3.object
    if skip := classify_object(bucket, key, obj.contentType):
        return skip.model_copy(update={"record": i})
    if obj.size is None or not obj.eTag:
        missing = "size" if obj.size is None else "eTag"
        return _malformed("invalid_record", f"s3.object.{missing} is required for {rec.eventName}", **where)
    try:
        return IntakeEvent(bucket=bucket, key=key, size=obj.size, etag=obj.eTag.strip('"'),
                           version_id=obj.versionId or None, sequencer=obj.sequencer,
                           event_time=_utc(rec.eventTime), event_name=rec.eventName,
                           content_type=obj.contentType or None, source="s3", record=i)
    except ValidationError as exc:
        return _malformed("invalid_record", _validation_message(exc), **where)


def to_s3_event_json(bucket: str, key: str, size: int, etag: str, *, version_id: str | None = None,
                     content_type: str | None = None, event_time: datetime | None = None,
                     event_name: str = "s3:ObjectCreated:Put", region: str = "") -> bytes:
    """One MinIO-format ObjectCreated notification (what `parse_intake` reads back as the same object).

    The key is encoded as MinIO does (Go's url.QueryEscape: '+' for spaces, '/' as %2F); the sequencer
    is the event time in nanoseconds as upper-case hex, as MinIO derives it.
    """
    when = _utc(event_time or datetime.now(UTC))
    nanos = int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000
    obj: dict = {"key": quote_plus(key, safe=""), "size": size, "eTag": etag.strip('"')}
    if content_type:
        obj.update(contentType=content_type, userMetadata={"content-type": content_type})
    if version_id:
        obj["versionId"] = version_id
    obj["sequencer"] = f"{nanos:X}"
    record = {
        "eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": region,
        "eventTime": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "eventName": event_name,
        "userIdentity": {"principalId": "artroute-replay"},
        "requestParameters": {"principalId": "artroute-replay", "region": region, "sourceIPAddress": ""},
        "responseElements": {},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "artroute-replay",
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": "artroute-replay"},
                          "arn": f"arn:aws:s3:::{bucket}"},
               "object": obj},
        "source": {"host": "", "port": "", "userAgent": "artroute-replay"},
    }
    doc = {"EventName": event_name, "Key": f"{bucket}/{key}", "Records": [record]}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


# --- SeaweedFS filer protobuf ----------------------------------------------------------------------

def _parse_seaweed(value: bytes, key: bytes | None) -> ParseResult:
    try:
        note = seaweed_pb.EventNotification.FromString(value)
    except DecodeError as exc:
        return ParseResult(rejections=[_malformed("bad_protobuf", f"not a filer EventNotification: {exc}")])
    has_old, has_new = note.HasField("old_entry"), note.HasField("new_entry")
    if not has_old and not has_new:
        return ParseResult(rejections=[_malformed("bad_protobuf", "EventNotification without old_entry "
                                                                  "or new_entry")])
    old_path = _decode_key(key)
    if not has_new:
        return _one(_ignored("delete", "filer delete", **_bucket_key(old_path)))
    entry = note.new_entry
    parent = note.new_parent_path or (posixpath.dirname(old_path) if old_path and not has_old else "")
    if not parent or not entry.name:
        return _one(_malformed("bad_protobuf", "cannot tell the entry's path (no new_parent_path/key)"))
    path = posixpath.join(parent, entry.name)
    return _one(_seaweed_event(note, path, old_path))


def _seaweed_event(note, path: str, old_path: str | None) -> IntakeEvent | Rejection:
    entry = note.new_entry
    where = _bucket_key(path)
    if where["bucket"] is None:
        return _ignored("system_path", "outside /buckets", key=path)
    if entry.is_directory or where["key"] is None:
        return _ignored("directory", "directory entry", **where)
    bucket, key = where["bucket"], where["key"]
    if skip := classify_object(bucket, key, entry.attributes.mime or None):
        return skip
    etag, size = seaweed_etag(entry), seaweed_size(entry)
    if note.HasField("old_entry"):
        renamed = old_path is not None and old_path != path
        if not renamed and seaweed_etag(note.old_entry) == etag and seaweed_size(note.old_entry) == size:
            return _ignored("metadata_only", "filer update without a content change", **where)
        event_name = "filer:rename" if renamed else "filer:update"
    else:
        event_name = "filer:create"
    seconds = entry.attributes.mtime or entry.attributes.crtime
    if seconds <= 0:
        return _malformed("bad_protobuf", "entry has no mtime/crtime", **where)
    version = entry.extended.get("Seaweed-X-Amz-Version-Id")
    return IntakeEvent(bucket=bucket, key=key, size=size, etag=etag,
                       version_id=version.decode("utf-8", "replace") if version else None,
                       sequencer=None, event_time=datetime.fromtimestamp(seconds, UTC), event_name=event_name,
                       content_type=entry.attributes.mime or None, source="seaweedfs")


def seaweed_etag(entry) -> str:
    """The ETag the SeaweedFS S3 gateway reports for `entry`, so ids match what S3 HEAD/list say.

    In order: the gateway's own record `extended["Seaweed-X-Amz-ETag"]` (set by PUT and by multipart
    completion, "<md5>-<parts>"); md5 hex of `attributes.md5`; else from the chunks like weed/filer
    ETagChunks: the one chunk's md5 (`e_tag` is base64), or md5(concatenated chunk md5s) + "-N".
    Stable for the same stored object, so decision ids are stable too.
    """
    recorded = entry.extended.get(SEAWEED_ETAG_KEY, b"").decode("ascii", "replace").strip('"')
    if recorded:
        return recorded
    if entry.attributes.md5:
        return entry.attributes.md5.hex()
    digests = [_b64_md5(c.e_tag) for c in entry.chunks]
    if len(digests) == 1:
        return digests[0].hex()
    return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"


def seaweed_size(entry) -> int:
    chunk_end = max((c.offset + c.size for c in entry.chunks), default=0)
    return max(entry.attributes.file_size, chunk_end, len(entry.content))


def _b64_md5(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return b""  # as Go's util.Base64Md5ToBytes: undecodable -> empty


def _bucket_key(path: str | None) -> dict:
    """'/buckets/b/k/x.jpg' -> bucket 'b', key 'k/x.jpg'; outside /buckets -> bucket None."""
    if not path or not path.startswith(SEAWEED_BUCKETS_DIR + "/"):
        return {"bucket": None, "key": path}
    bucket, _, key = path[len(SEAWEED_BUCKETS_DIR) + 1:].partition("/")
    return {"bucket": bucket or None, "key": key or None}


def _decode_key(key: bytes | None) -> str | None:
    return key.decode("utf-8", "replace") if key else None


def _one(outcome: IntakeEvent | Rejection) -> ParseResult:
    if isinstance(outcome, IntakeEvent):
        return ParseResult(events=[outcome])
    return ParseResult(rejections=[outcome])


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors())
