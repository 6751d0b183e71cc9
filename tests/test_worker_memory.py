"""The worker's memory stays under the deploy limit (1 GiB, deploy/k8s/base/worker.yaml) whatever the images:
a worker of its own runs inside a real memory cgroup with that limit (the kernel OOM-kills it if it goes over)
and gets ~120 MP 16-bit scans and tiny PNG headers declaring 10900 x 11000 pixels, mixed with photos."""
from __future__ import annotations

import asyncio

import pytest

from streams.orchestration.faults import MemoryLimit, peak_rss_bytes
from streams.orchestration.harness import collect_outcomes
from tests.fault_fixtures import SCAN_SIZE, log_tail_on_failure, png_header, publish_events, scan16_png, upload_quietly
from tests.worker_fixtures import jpeg, unique_prefix

pytestmark = pytest.mark.stack

LIMIT = 2**30  # deploy/k8s/base/worker.yaml: limits.memory 1Gi


async def drain_under_limit(own_worker, stack_settings, name: str, ups, content_type: str):
    """A worker of its own inside a LIMIT memory cgroup (when this machine has cgroups) gets an event for each
    upload; asserts it was not OOM-killed, peaked under LIMIT and settled every upload; returns the outcomes."""
    available = MemoryLimit.available()
    limit = MemoryLimit(LIMIT).create() if available else None
    try:
        worker, topic = await own_worker(name, ARTROUTE_MAX_OBJECT_BYTES=str(16 * 2**20),
                                         ARTROUTE_KAFKA_SESSION_TIMEOUT_S="10")
        if limit:
            limit.add(worker.proc.pid)
        with log_tail_on_failure(worker.log_path):
            await publish_events(stack_settings, topic, ups, content_type=content_type)
            out = await collect_outcomes(stack_settings, [u.key for u in ups], timeout=300, linger=0, stall=120)
            rss = await asyncio.to_thread(peak_rss_bytes, worker.proc.pid)
            alive = worker.proc.poll() is None
            peak, kills = (limit.peak_bytes(), limit.oom_kills()) if limit else (rss, 0)
            worker.kill()
    finally:
        if limit:
            limit.remove()
    assert alive and kills == 0, f"the worker was OOM-killed under a {LIMIT >> 20} MiB limit"
    assert peak < LIMIT, f"peak {peak >> 20} MiB"
    missing = [u.key for u in ups if not out.settled(u.key)]
    assert not missing, missing
    print(f"peak memory {peak >> 20} MiB (cgroup: {available}), peak RSS {rss >> 20} MiB")
    return out


async def test_worker_stays_under_its_memory_limit_with_huge_scans_and_bomb_headers(own_worker, stack_settings,
                                                                                    slow_scan):
    p = unique_prefix("memory")
    grey = scan16_png(*SCAN_SIZE)
    objects = {p + "scan16-grey-a.bin": grey, p + "scan16-grey-b.bin": grey, p + "scan16-rgba-a.bin": slow_scan,
               p + "scan16-rgba-b.bin": slow_scan}
    objects |= {p + f"header-{i:02d}.bin": png_header(*SCAN_SIZE) for i in range(16)}
    objects |= {p + f"photo-{i}.bin": jpeg(i % 4, seed=700 + i) for i in range(4)}
    ups = list(upload_quietly(stack_settings, objects).values())
    out = await drain_under_limit(own_worker, stack_settings, "memory", ups, "image/png")
    kinds = {k: v[0]["error_kind"] for k, v in out.dead_letters.items()}
    assert set(out.decisions) == {u.key for u in ups if "header" not in u.key}, kinds
    assert {kinds[u.key] for u in ups if "header" in u.key} <= {"truncated", "corrupt"}


def progressive_jpeg(width: int, height: int, shade: int) -> bytes:
    """A progressive 4:4:4 JPEG: small on disk (one colour), but libjpeg buffers all its DCT coefficients
    (6 bytes per pixel) to decode it, whatever the DCT scaling."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 90, 40)).save(buf, "JPEG", quality=90, progressive=True, subsampling=0)
    return buf.getvalue()


async def test_progressive_jpegs_are_decoded_within_the_memory_limit(own_worker, stack_settings):
    # Each 72 MP progressive JPEG (~0.8 MB) needs ~430 MB of libjpeg's coefficient buffer. The decode budget
    # (512 MiB) counted only the drafted pixels (9 MB), so both decode threads decoded one at once and the
    # worker went over its 1 GiB limit (failed before this fix: OOM-killed). Now the budget admits one at a
    # time, and a 100 MP one (~580 MB, more than the whole budget) is a dead letter `bomb`, named.
    p = unique_prefix("progressive")
    objects = {p + f"progressive-{i}.jpg": progressive_jpeg(9000, 8000, 100 + i) for i in range(4)}
    objects[p + "progressive-100mp.jpg"] = progressive_jpeg(10000, 10000, 50)
    objects |= {p + f"photo-{i}.jpg": jpeg(i % 4, seed=800 + i) for i in range(2)}
    ups = list(upload_quietly(stack_settings, objects).values())
    out = await drain_under_limit(own_worker, stack_settings, "progressive", ups, "image/jpeg")
    assert set(out.decisions) == {u.key for u in ups if "100mp" not in u.key}
    letter = out.dead_letters[p + "progressive-100mp.jpg"][0]
    assert letter["error_kind"] == "bomb" and "decode memory budget" in letter["message"], letter
