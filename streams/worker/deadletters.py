"""Dead letters: what could not be decided, bounded in size whatever the input.

A `DeadLetter` names the failure (`error_kind`, `stage`, `message`), the object when one was parsed
(`bucket`, `key`, `etag`), and the intake message it came from: always by reference (`source_topic`,
`source_partition`, `source_offset`, `original_size`, `original_sha256`), and by value (`original_b64`,
`original_json`) only while the dead letter stays under ARTROUTE_DEADLETTER_MAX_BYTES. One record of a
multi-record S3 message gets a dead letter with that record (`record_index`, `record_json`) and the message
by reference only: 500 failing records cost 500 small dead letters, not 500 copies of the message.

`encode_dead_letter` always returns bytes under the limit and never raises: whatever a message holds (lone
surrogates, NaN, megabytes of JSON), its dead letter can be published.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from streams.worker.events import IntakeEvent

log = logging.getLogger(__name__)

ORIGINAL_HEAD_BYTES = 1024
"""How much of a message a dead letter keeps when the whole message does not fit (or is referenced)."""
MESSAGE_MAX_CHARS = 4000
Stage = Literal["parse", "fetch", "decode", "infer", "decide", "publish"]


class DeadLetter(BaseModel):
    """An intake message (or one of its events) that could not be decided."""
    model_config = ConfigDict(frozen=True, title="DeadLetter")

    schema_version: Literal[1] = 1
    error_kind: str = Field(description='Stable error class, e.g. "bad_event", "object_missing", "too_large", '
                                        '"corrupt", "bomb", "unsupported", "access_denied" (docs/events.md).')
    message: str
    stage: Stage
    original_b64: str = Field(description="The original intake message value, base64: all of it, or when "
                                          "`original_truncated` its first KiB (none when `record_json` is set).")
    original_json: Any = Field(None, description="The original value parsed as JSON, when it is JSON and fits.")
    original_key: str | None = Field(None, description="The original Kafka message key (UTF-8, replaced).")
    original_size: int | None = Field(None, description="Bytes of the original message value.")
    original_sha256: str | None = Field(None, description="SHA-256 (hex) of the original message value.")
    original_truncated: bool = Field(False, description="original_b64 holds only the first KiB; the message "
                                                        "is at source_topic/partition/offset.")
    record_index: int | None = Field(None, description="Index in the message's Records of the record at fault.")
    record_json: Any = Field(None, description="That record, when the message holds several.")
    bucket: str | None = None
    key: str | None = None
    etag: str | None = None
    event_etag: str | None = Field(None, description="The eTag the event named, when the store held another.")
    uploaded_key: str | None = Field(None, description="The key as the event named it, when the store holds "
                                                       "the object under a normalised `key`.")
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    failed_at: AwareDatetime

    @classmethod
    def from_message(cls, value: bytes, *, error_kind: str, message: str, stage: str, failed_at: datetime,
                     key: bytes | None = None, event: IntakeEvent | None = None, topic: str | None = None,
                     partition: int | None = None, offset: int | None = None) -> DeadLetter:
        """Build from the raw intake message with the whole original (unbounded: see `build_dead_letter`)."""
        return cls(error_kind=error_kind, message=_text(message), stage=stage, failed_at=failed_at,
                   original_b64=base64.b64encode(value).decode("ascii"), original_json=json_or_none(value),
                   original_key=key.decode("utf-8", "replace") if key is not None else None,
                   original_size=len(value), original_sha256=hashlib.sha256(value).hexdigest(),
                   bucket=event.bucket if event else None, key=event.key if event else None,
                   etag=event.etag if event else None,
                   source_topic=topic, source_partition=partition, source_offset=offset)

    def original_bytes(self) -> bytes:
        """The message value exactly as it arrived (for a replay onto the intake topic); when
        `original_truncated`, only its first KiB: read the message at source_topic/partition/offset."""
        return base64.b64decode(self.original_b64)


class MessageRef(Protocol):
    value: bytes
    key: bytes | None
    topic: str | None
    partition: int | None
    offset: int | None


def build_dead_letter(msg: MessageRef, *, error_kind: str, message: str, stage: str, max_bytes: int,
                      event: IntakeEvent | None = None, record_index: int | None = None,
                      records: list | None = None, failed_at: datetime | None = None,
                      event_etag: str | None = None, uploaded_key: str | None = None) -> DeadLetter:
    """A dead letter for `msg` (or the record `record_index` of it) that fits `max_bytes` once encoded.

    `records` is the message's parsed `Records` list when known (to attach the one record at fault).
    """
    value = msg.value or b""
    index = record_index if record_index is not None else (event.record if event is not None else None)
    many = records is not None and len(records) > 1
    record = records[index] if many and index is not None and 0 <= index < len(records) else None
    dl = DeadLetter.from_message(value, error_kind=error_kind, message=message, stage=stage,
                                 failed_at=failed_at or datetime.now(UTC), key=msg.key, event=event,
                                 topic=msg.topic, partition=msg.partition, offset=msg.offset)
    dl = dl.model_copy(update={"record_index": index, "record_json": _json_safe(record),
                               "event_etag": event_etag, "uploaded_key": uploaded_key})
    if many:  # the record and a reference to the message, not a copy of it per record
        dl = _truncated(dl, value, keep=0 if dl.record_json is not None else ORIGINAL_HEAD_BYTES)
    return fit(dl, max_bytes)


def fit(dl: DeadLetter, max_bytes: int) -> DeadLetter:
    """Shrink `dl` until its JSON fits `max_bytes`: drop the parsed original, keep only the message's first
    KiB, drop the record copy, shorten the message and key. Never raises."""
    value = dl.original_bytes() if not dl.original_truncated else None
    steps = [lambda d: d.model_copy(update={"original_json": None}),
             lambda d: _truncated(d, value) if value is not None else d,
             lambda d: d.model_copy(update={"record_json": None}),
             lambda d: d.model_copy(update={"message": d.message[:500], "original_key": _cut(d.original_key)}),
             lambda d: d.model_copy(update={"key": _cut(d.key), "uploaded_key": _cut(d.uploaded_key),
                                            "bucket": _cut(d.bucket), "etag": _cut(d.etag),
                                            "event_etag": _cut(d.event_etag),
                                            "original_b64": d.original_b64[:64], "original_truncated": True})]
    for step in [lambda d: d, *steps]:
        dl = step(dl)
        encoded = _encode(dl)
        if encoded is not None and len(encoded) <= max_bytes:
            return dl
    return dl


def encode_dead_letter(dl: DeadLetter, max_bytes: int) -> bytes:
    """The dead letter's JSON, at most `max_bytes`; a minimal one if it cannot be encoded as it is."""
    encoded = _encode(fit(dl, max_bytes))
    if encoded is not None and len(encoded) <= max_bytes:
        return encoded
    log.error("dead letter could not be encoded within %d bytes; publishing a minimal one", max_bytes)
    minimal = DeadLetter(error_kind=_cut(dl.error_kind) or "internal", message=_text(dl.message)[:200],
                         stage=dl.stage, original_b64="", original_truncated=True, original_size=dl.original_size,
                         original_sha256=dl.original_sha256, source_topic=dl.source_topic,
                         source_partition=dl.source_partition, source_offset=dl.source_offset,
                         failed_at=dl.failed_at)
    return minimal.model_dump_json().encode()


def json_or_none(value: bytes) -> Any:
    """The value parsed as JSON if it is JSON that can be written back as strict UTF-8 JSON, else None."""
    if not value or value.lstrip()[:1] not in (b"{", b"["):
        return None
    try:
        doc = json.loads(value)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return _json_safe(doc)


def _json_safe(doc: Any) -> Any:
    """doc if it serialises as strict JSON in UTF-8 (no NaN, no lone surrogate, not too deep), else None."""
    if doc is None:
        return None
    try:
        json.dumps(doc, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, TypeError, UnicodeEncodeError, RecursionError):
        return None
    return doc


def _truncated(dl: DeadLetter, value: bytes, keep: int = ORIGINAL_HEAD_BYTES) -> DeadLetter:
    return dl.model_copy(update={"original_b64": base64.b64encode(value[:keep]).decode("ascii"),
                                 "original_truncated": len(value) > keep or dl.original_truncated,
                                 "original_json": None})


def _encode(dl: DeadLetter) -> bytes | None:
    try:
        return dl.model_dump_json().encode()
    except Exception:  # noqa: BLE001 - unserialisable content: the caller shrinks or replaces it
        return None


def _text(s: str | None) -> str:
    """A string that encodes as UTF-8 (lone surrogates replaced), at most MESSAGE_MAX_CHARS long."""
    s = s or ""
    return s.encode("utf-8", "replace").decode("utf-8")[:MESSAGE_MAX_CHARS]


def _cut(s: str | None, n: int = 1024) -> str | None:
    return None if s is None else _text(s)[:n]
