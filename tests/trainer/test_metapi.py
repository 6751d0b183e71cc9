"""The MET API models against every real payload, the client against the fake server (real HTTP)."""
from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from trainer.metapi.client import FetchError, MetClient
from trainer.metapi.fake import Faults
from trainer.metapi.models import (DEPARTMENT_LABELS, DepartmentsResponse, MetObject, ObjectIdsResponse,
                                   department_id, normalize_department)
from trainer.metapi.records import excel_to_payload, generate_records, load_real_records

from .conftest import client_config

MODEL_FIELDS = set(MetObject.model_fields)


def test_department_names_normalised():
    assert normalize_department("American Decorative Arts") == normalize_department("The American Wing")
    assert normalize_department("The Costume Institute") == "Costume Institute"
    assert normalize_department("The Robert Lehman Collection") == "Robert Lehman Collection"
    assert normalize_department("Modern Art") == "Modern and Contemporary Art"
    assert department_id("ancient west asian art") == 3
    assert normalize_department("  Some Other Museum ") == "Some Other Museum"


def test_real_departments_json(shared_dir):
    resp = DepartmentsResponse.model_validate_json((shared_dir / "data/met-api/departments.json").read_bytes())
    assert [d.departmentId for d in resp.departments] == [1, *range(3, 20), 21]
    assert {d.departmentId: d.label for d in resp.departments} == DEPARTMENT_LABELS


async def test_fake_departments_are_the_real_response(fake_api, shared_dir):
    """The fake's /departments (names from the met-19 taxonomy) is the real API's response, value for value."""
    real = json.loads((shared_dir / "data/met-api/departments.json").read_text())
    async with aiohttp.ClientSession() as s, s.get(f"{fake_api.base_url}/departments") as r:
        assert await r.json() == real


def test_real_object_payloads(shared_dir):
    paths = sorted((shared_dir / "data/met-api/objects").glob("*.json"))
    assert len(paths) >= 3
    for path in paths:
        raw = json.loads(path.read_text())
        obj = MetObject.model_validate(raw)
        assert set(raw) == MODEL_FIELDS, path.name          # every real field is modelled, none invented
        assert obj.model_extra == {}
        assert obj.objectID == int(path.stem) and obj.harvestable()
    ids = ObjectIdsResponse.model_validate_json((shared_dir / "data/met-api/objects_departmentIds_3.json").read_bytes())
    assert ids.total == len(ids.ids) == 6222


def test_every_real_record_maps_to_a_valid_payload(shared_dir):
    records = load_real_records(shared_dir / "data/met-api")
    assert len(records) > 10_000
    for oid, payload in records.items():
        assert set(payload) == MODEL_FIELDS, oid
        obj = MetObject.model_validate(payload)
        assert department_id(obj.department) is not None, obj.department
        assert obj.isPublicDomain or not obj.primaryImage      # the real API hides non-PD images
    first = json.loads((shared_dir / "data/met-api/records_8870.jsonl").open().readline())
    mapped = excel_to_payload(first["excel_metadata"], first["api_metadata"])
    assert mapped["title"] == first["excel_metadata"]["Title"]
    assert mapped["culture"] == "" and mapped["accessionYear"] == "1883"     # null -> "", 1883.0 -> "1883"


def test_generated_payloads_have_the_real_shape():
    records = generate_records(per_department=30, seed=1)
    assert records == generate_records(per_department=30, seed=1)            # deterministic
    objs = [MetObject.model_validate(p) for p in records.values()]
    assert all(set(p) == MODEL_FIELDS for p in records.values())
    assert any(o.constituents is None for o in objs) and any(o.constituents for o in objs)
    assert any(not o.isPublicDomain and o.primaryImage == "" for o in objs)
    assert {department_id(o.department) for o in objs} == set(DEPARTMENT_LABELS)


async def test_client_reads_the_fake_like_the_real_api(fake_api):
    async with MetClient(client_config(fake_api)) as client:
        deps = await client.departments()
        assert [d.departmentId for d in deps] == [1, *range(3, 20), 21]
        assert deps[0].displayName == "American Decorative Arts" and deps[0].label == "The American Wing"
        ids = await client.object_ids([10])
        assert ids == fake_api.by_department[10]
        objs = await asyncio.gather(*(client.object(i) for i in ids[:20]))
        for obj in objs:
            assert obj.label == "Egyptian Art"
            if obj.harvestable():
                assert obj.primaryImageSmall.startswith(fake_api.base_url.split("/public")[0])
        url = next(o.primaryImageSmall for o in objs if o.harvestable())
        body = await client.image(url)
        assert body[:3] == b"\xff\xd8\xff"                                  # a JPEG
        raw = await (await client._session.get(f"{fake_api.base_url}/objects/{ids[0]}")).json()
        assert set(raw) == MODEL_FIELDS


async def test_fake_rejects_requests_past_its_limit(fake_api):
    fake_api.faults = Faults(rate_limit=20)
    async with aiohttp.ClientSession() as s:
        async def get():
            async with s.get(f"{fake_api.base_url}/departments") as r:
                return r.status
        statuses = await asyncio.gather(*(get() for _ in range(50)))
    assert statuses.count(200) == 20 and statuses.count(403) == 30
    assert fake_api.stats.rejected == 30 and fake_api.stats.max_window == 50


async def test_client_stays_under_the_server_measured_limit(fake_api):
    fake_api.faults = Faults(rate_limit=25)
    ids = fake_api.by_department[11][:90]
    async with MetClient(client_config(fake_api, rps=25, margin_s=0.1)) as client:   # headroom: shared 2-core box
        t0 = time.monotonic()
        objs = await asyncio.gather(*(client.object(i) for i in ids))
        elapsed = time.monotonic() - t0
    assert all(o is not None for o in objs)
    assert fake_api.stats.rejected == 0
    assert fake_api.stats.max_window <= 25
    assert 90 / elapsed > 0.8 * 25                   # and it actually uses the budget
    assert max(fake_api.stats.per_second.values()) <= 25


async def test_injected_faults_are_retried(fake_api):
    fake_api.faults = Faults(rate_limit=0, error_rate=0.15, truncate_rate=0.15, timeout_rate=0.05, hang_s=2.0,
                             latency_ms=(1, 5), seed=3)
    ids = fake_api.by_department[12][:80]
    async with MetClient(client_config(fake_api, timeout_s=0.5, retries=10, rps=80)) as client:
        objs = await asyncio.gather(*(client.object(i) for i in ids))
        urls = [o.primaryImageSmall for o in objs if o.harvestable()][:30]
        images = await asyncio.gather(*(client.image(u) for u in urls))
    assert [o.objectID for o in objs] == ids
    assert all(body[:3] == b"\xff\xd8\xff" for body in images)
    faults = fake_api.stats.faults
    assert faults["5xx"] and faults["truncated"] and faults["timeout"]
    assert client.stats["api_retries"] >= faults["5xx"] // 2
    assert client.stats["api_timeouts"] and client.stats["api_connection_errors"]


async def test_retry_after_is_honoured(fake_api):
    fake_api.faults = Faults(error_rate=1.0, retry_after_s=1)
    admin = fake_api.base_url.split("/public")[0] + "/admin/faults"

    async def heal():
        await asyncio.sleep(0.3)
        async with aiohttp.ClientSession() as s:
            await s.post(admin, json={"error_rate": 0.0})

    async with MetClient(client_config(fake_api, retries=1, backoff_cap_s=5.0)) as client:
        t0 = time.monotonic()
        healer = asyncio.create_task(heal())
        deps = await client.departments()              # with a 0.02 s backoff it would fail without Retry-After
        await healer
    assert len(deps) == 19 and time.monotonic() - t0 >= 0.95
    assert fake_api.faults.error_rate == 0.0


async def test_404_is_counted_and_persistent_failures_raise(fake_api):
    fake_api.faults = Faults(withdrawn_rate=1.0)
    async with MetClient(client_config(fake_api, retries=2)) as client:
        assert await client.object(fake_api.by_department[3][0]) is None
        assert client.stats["api_404"] == 1
        fake_api.faults = Faults(error_rate=1.0)
        with pytest.raises(FetchError, match=r"HTTP 50\d \(after 3 attempts\)"):
            await client.object(fake_api.by_department[3][0])
