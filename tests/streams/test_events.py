"""parse_intake: MinIO/AWS JSON and SeaweedFS protobuf events, ignore rules and malformed messages."""
from __future__ import annotations

import base64
import copy
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streams.worker import seaweed_pb
from streams.worker.events import IntakeEvent, parse_intake, seaweed_etag, to_s3_event_json

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_doc(name: str) -> dict:
    return json.loads(fixture_bytes(name))


def only_event(value: bytes, key: bytes | None = None) -> IntakeEvent:
    result = parse_intake(value, key)
    assert result.rejections == [] and len(result.events) == 1, result
    return result.events[0]


def only_rejection(value: bytes, key: bytes | None = None):
    result = parse_intake(value, key)
    assert result.events == [] and len(result.rejections) == 1, result
    return result.rejections[0]


# --- S3 JSON ---------------------------------------------------------------------------------------

def test_minio_put():
    ev = only_event(fixture_bytes("minio_put.json"))
    assert ev == IntakeEvent(bucket="artworks", key="egyptian/statue-001.jpg", size=2483321,
                             etag="6f1ed002ab5595859014ebf0951522d9", version_id=None,
                             sequencer="182C9B5F0E33C1A8",
                             event_time=datetime(2025, 3, 14, 9, 26, 53, 589000, tzinfo=UTC),
                             event_name="s3:ObjectCreated:Put", content_type="image/jpeg", source="s3", record=0)
    assert ev.uri == "s3://artworks/egyptian/statue-001.jpg"


@pytest.mark.parametrize(("fixture", "key"), [
    ("minio_put_encoded_key.json", "Ancient Near Eastern/Lamassu (2) + detail.jpg"),
    ("minio_put_unicode_key.json", "Ägypten/статуя 1.jpg"),
    ("minio_multipart_complete.json", "Arms and Armor/helmet, 1540.tif"),
])
def test_keys_are_url_decoded(fixture, key):
    assert only_event(fixture_bytes(fixture)).key == key


def test_quoted_etag_and_version_id():
    ev = only_event(fixture_bytes("minio_put_encoded_key.json"))
    assert ev.etag == "0c2d6e5a0f3b4a8e9d7c6b5a49382716"
    assert ev.version_id == "b3f0c6a2-1d4e-4c9b-8f7a-2e5d9c1b0a63"


def test_multipart_complete_keeps_the_multipart_etag():
    ev = only_event(fixture_bytes("minio_multipart_complete.json"))
    assert ev.event_name == "s3:ObjectCreated:CompleteMultipartUpload"
    assert ev.etag.endswith("-30") and ev.size == 157286400


def test_aws_records_without_prefix_one_message_many_records():
    result = parse_intake(fixture_bytes("aws_multi_records.json"))
    assert [(e.bucket, e.key, e.event_name) for e in result.events] == [
        ("met-intake", "Greek and Roman/amphora #5.png", "ObjectCreated:Put"),
        ("met-intake", "Photographs/albumen print.tiff", "ObjectCreated:CompleteMultipartUpload"),
        ("met-intake", "Asian Art/scroll.webp", "ObjectCreated:Copy"),
    ]
    assert [(r.kind, r.reason, r.record, r.key) for r in result.rejections] == [
        ("ignored", "delete", 2, "Photographs/old-scan.jpg")]
    assert result.malformed == []


@pytest.mark.parametrize(("fixture", "reason"), [
    ("minio_delete.json", "delete"),
    ("minio_directory.json", "directory"),
    ("aws_test_event.json", "test_event"),
])
def test_ignored_fixtures(fixture, reason):
    rej = only_rejection(fixture_bytes(fixture))
    assert (rej.kind, rej.reason) == ("ignored", reason)


def minio_variant(key: str | None = None, content_type: str | None = "keep", event_name: str | None = None,
                  bucket: str | None = None) -> bytes:
    doc = fixture_doc("minio_put.json")
    obj = doc["Records"][0]["s3"]["object"]
    if key is not None:
        obj["key"] = key
    if content_type != "keep":
        obj["contentType"] = content_type
    if event_name is not None:
        doc["Records"][0]["eventName"] = doc["EventName"] = event_name
    if bucket is not None:
        doc["Records"][0]["s3"]["bucket"]["name"] = bucket
    return json.dumps(doc).encode()


@pytest.mark.parametrize(("variant", "reason"), [
    (dict(key="scans%2F.uploads%2Fabc%2Fpart.1"), "multipart_part"),
    (dict(bucket=".minio.sys", key="buckets%2Fartworks%2F.metadata.bin"), "system_path"),
    (dict(key="catalogue.csv", content_type="text/csv"), "not_image"),
    (dict(key="report.pdf", content_type="application/pdf"), "not_image"),
    (dict(key="notes.txt", content_type="application/octet-stream"), "not_image"),
    (dict(key="video.mp4", content_type=None), "not_image"),
    (dict(event_name="s3:ObjectRemoved:DeleteMarkerCreated"), "delete"),
    (dict(event_name="s3:ObjectCreated:PutTagging"), "metadata_only"),
    (dict(event_name="s3:ObjectAccessed:Get"), "other_event"),
])
def test_ignore_rules(variant, reason):
    rej = only_rejection(minio_variant(**variant))
    assert (rej.kind, rej.reason) == ("ignored", reason)


@pytest.mark.parametrize("variant", [
    dict(key="scan-0001", content_type="application/octet-stream"),   # nothing to go by: the decoder decides
    dict(key="scan.TIFF", content_type="binary/octet-stream"),
    dict(key="photo.dat", content_type="image/jpeg"),                  # content type wins over extension
])
def test_accepted_by_type_or_extension(variant):
    assert only_event(minio_variant(**variant)).source == "s3"


def without(path: list, doc: dict) -> dict:
    doc = copy.deepcopy(doc)
    node = doc
    for step in path[:-1]:
        node = node[step]
    del node[path[-1]]
    return doc


RECORD_OBJECT = ["Records", 0, "s3", "object"]


@pytest.mark.parametrize(("value", "reason"), [
    (b"", "empty"),
    (b"   \n", "empty"),
    (b'{"Records": [', "bad_json"),
    (b'{"Records": "nope"}', "unknown_format"),
    (b'{"Records": []}', "unknown_format"),
    (b'["not", "an", "event"]', "unknown_format"),
    (b'{"Key": "artworks/x.jpg"}', "unknown_format"),
    (b"\xff\xfe{not utf-8", "bad_protobuf"),
    (json.dumps(without(RECORD_OBJECT + ["size"], fixture_doc("minio_put.json"))).encode(), "invalid_record"),
    (json.dumps(without(RECORD_OBJECT + ["eTag"], fixture_doc("minio_put.json"))).encode(), "invalid_record"),
    (json.dumps(without(["Records", 0, "eventTime"], fixture_doc("minio_put.json"))).encode(), "invalid_record"),
    (json.dumps(without(["Records", 0, "s3", "bucket"], fixture_doc("minio_put.json"))).encode(),
     "invalid_record"),
    (minio_variant(key=12345), "invalid_record"),
])
def test_malformed_messages(value, reason):
    rej = only_rejection(value)
    assert (rej.kind, rej.reason) == ("malformed", reason), rej
    assert rej.message


def test_wrong_type_is_malformed_and_names_the_field():
    doc = fixture_doc("minio_put.json")
    doc["Records"][0]["s3"]["object"]["size"] = "large"
    rej = only_rejection(json.dumps(doc).encode())
    assert rej.reason == "invalid_record" and "size" in rej.message and rej.record == 0


def test_one_bad_record_does_not_hide_the_good_ones():
    doc = fixture_doc("aws_multi_records.json")
    del doc["Records"][0]["s3"]["object"]["size"]
    result = parse_intake(json.dumps(doc).encode())
    assert len(result.events) == 2
    assert [(r.reason, r.record) for r in result.malformed] == [("invalid_record", 0)]


@pytest.mark.parametrize("key", ["plain.jpg", "Ägypten/статуя 1.jpg", "a b/c+d%e&f=g?.png", "日本/浮世絵.tif"])
def test_to_s3_event_json_round_trips(key):
    when = datetime(2025, 3, 14, 12, 0, 1, 250000, tzinfo=UTC)
    value = to_s3_event_json("artworks", key, 1234, '"abc123"', version_id="v1", content_type="image/png",
                             event_time=when)
    ev = only_event(value)
    assert (ev.bucket, ev.key, ev.size, ev.etag, ev.version_id, ev.event_time, ev.content_type) == (
        "artworks", key, 1234, "abc123", "v1", when, "image/png")
    assert ev.sequencer == f"{int(when.timestamp()) * 10**9 + 250_000_000:X}"  # MinIO: event time in ns, hex
    assert json.loads(value)["Key"] == f"artworks/{key}"


# --- SeaweedFS protobuf ----------------------------------------------------------------------------

MD5 = hashlib.md5(b"artwork bytes", usedforsecurity=False).digest()


def entry(name: str, *, size: int = 13, mime: str = "image/jpeg", md5: bytes = MD5, mtime: int = 1741944413,
          directory: bool = False, **extended: bytes) -> seaweed_pb.Entry:
    return seaweed_pb.Entry(name=name, is_directory=directory, extended=extended,
                            attributes=seaweed_pb.FuseAttributes(file_size=size, mtime=mtime, crtime=mtime,
                                                                 mime=mime, md5=md5, file_mode=0o660))


def create(parent: str, e) -> tuple[bytes, bytes]:
    note = seaweed_pb.EventNotification(new_entry=e, new_parent_path=parent, delete_chunks=True,
                                        signatures=[-388401242])
    return note.SerializeToString(), f"{parent}/{e.name}".encode()


def test_seaweed_create():
    value, key = create("/buckets/artworks/Ägypten", entry("статуя 1.jpg"))
    ev = only_event(value, key)
    assert (ev.bucket, ev.key, ev.size, ev.etag, ev.event_name, ev.source, ev.content_type) == (
        "artworks", "Ägypten/статуя 1.jpg", 13, MD5.hex(), "filer:create", "seaweedfs", "image/jpeg")
    assert ev.event_time == datetime.fromtimestamp(1741944413, UTC)


def test_seaweed_create_without_parent_path_uses_the_kafka_key():
    note = seaweed_pb.EventNotification(new_entry=entry("a.png", mime="image/png"))
    assert only_event(note.SerializeToString(), b"/buckets/artworks/x/a.png").key == "x/a.png"


def test_seaweed_etag_prefers_the_s3_gateway_record_then_md5_then_chunks():
    assert seaweed_etag(entry("a.jpg", **{"Seaweed-X-Amz-ETag": b"e3bc5f89-3"})) == "e3bc5f89-3"
    assert seaweed_etag(entry("a.jpg")) == MD5.hex()
    one = seaweed_pb.Entry(chunks=[seaweed_pb.FileChunk(size=13, e_tag=base64.b64encode(MD5).decode())])
    assert seaweed_etag(one) == MD5.hex()
    parts = [hashlib.md5(p, usedforsecurity=False).digest() for p in (b"a", b"b")]
    two = seaweed_pb.Entry(chunks=[seaweed_pb.FileChunk(offset=i, size=1, e_tag=base64.b64encode(d).decode())
                                   for i, d in enumerate(parts)])
    assert seaweed_etag(two) == hashlib.md5(b"".join(parts), usedforsecurity=False).hexdigest() + "-2"


def test_seaweed_update_with_new_content_is_an_event_and_metadata_only_is_ignored():
    path = b"/buckets/artworks/a.jpg"
    changed = seaweed_pb.EventNotification(old_entry=entry("a.jpg", md5=b"\x00" * 16), new_entry=entry("a.jpg"),
                                           new_parent_path="/buckets/artworks")
    assert only_event(changed.SerializeToString(), path).event_name == "filer:update"
    tagged = seaweed_pb.EventNotification(old_entry=entry("a.jpg"), new_entry=entry("a.jpg", tag=b"x"),
                                          new_parent_path="/buckets/artworks")
    assert only_rejection(tagged.SerializeToString(), path).reason == "metadata_only"


def test_seaweed_rename_is_an_event_at_the_new_path():
    note = seaweed_pb.EventNotification(old_entry=entry("tmp.jpg"), new_entry=entry("final.jpg"),
                                        new_parent_path="/buckets/artworks/done")
    ev = only_event(note.SerializeToString(), b"/buckets/artworks/incoming/tmp.jpg")
    assert (ev.key, ev.event_name) == ("done/final.jpg", "filer:rename")


@pytest.mark.parametrize(("parent", "e", "reason"), [
    ("/buckets/artworks", entry("Ägypten", directory=True, size=0, mime="", md5=b""), "directory"),
    ("/buckets", entry("artworks", directory=True, size=0, mime="", md5=b""), "directory"),
    ("/buckets/artworks/.uploads/e988_a6e0", entry("0001_9a50.part", mime=""), "multipart_part"),
    ("/buckets/.system/owners", entry(".complete", mime=""), "system_path"),
    ("/etc/iam", entry("identity.json", mime="application/json"), "system_path"),
    ("/topics/.system/log/2025-03-14", entry("09-26.0000abcd", mime=""), "system_path"),
    ("/buckets/artworks/notes", entry("condition report.pdf", mime="application/pdf"), "not_image"),
])
def test_seaweed_ignored(parent, e, reason):
    rej = only_rejection(*create(parent, e))
    assert (rej.kind, rej.reason) == ("ignored", reason)


def test_seaweed_delete_is_ignored():
    note = seaweed_pb.EventNotification(old_entry=entry("a.jpg"), delete_chunks=True)
    rej = only_rejection(note.SerializeToString(), b"/buckets/artworks/a.jpg")
    assert (rej.reason, rej.bucket, rej.key) == ("delete", "artworks", "a.jpg")


@pytest.mark.parametrize(("value", "key"), [
    (b"\x12\x05\x0a\x03ab", b"/buckets/artworks/ab"),                  # truncated inner message
    (seaweed_pb.EventNotification(new_parent_path="/buckets/a").SerializeToString(), b"/buckets/a/x"),  # no entries
    (b"\x08\x96\x01", None),                                            # valid protobuf, unrelated message
    (seaweed_pb.EventNotification(new_entry=entry("a.jpg")).SerializeToString(), None),  # path unknowable
    (create("/buckets/artworks", entry("a.jpg", mtime=0))[0], b"/buckets/artworks/a.jpg"),  # no time
])
def test_seaweed_malformed(value, key):
    rej = only_rejection(value, key)
    assert (rej.kind, rej.reason) == ("malformed", "bad_protobuf"), rej


def test_real_seaweedfs_events_captured_from_weed():
    """Events captured from `weed mini` 4.48 (capture_seaweedfs.py): S3 put, overwrite, multipart, delete."""
    doc = fixture_doc("seaweedfs_events.json")
    results = [parse_intake(base64.b64decode(e["value_b64"]), e["key"].encode()) for e in doc["events"]]
    events = [ev for r in results for ev in r.events]
    assert [(e.key, e.event_name, e.size, e.etag, e.content_type) for e in events] == [
        ("Ägypten/статуя 1.jpg", "filer:create", 3, hashlib.md5(b"jpg", usedforsecurity=False).hexdigest(),
         "image/jpeg"),
        ("Ägypten/статуя 1.jpg", "filer:update", 6, hashlib.md5(b"jpg v2", usedforsecurity=False).hexdigest(),
         "image/jpeg"),
        ("big/scan.tif", "filer:create", 11 * 2**20, "e3bc5f891b51a71011bfcec5583ace3c-3", "image/tiff"),
    ]
    assert all(e.bucket == "artworks" and e.source == "seaweedfs" for e in events)
    reasons = {r.reason for res in results for r in res.rejections}
    assert reasons == {"directory", "system_path", "not_image", "multipart_part", "delete"}
    assert not any(res.malformed for res in results)
