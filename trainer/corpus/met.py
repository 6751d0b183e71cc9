"""Harvest a department-labelled corpus from the MET Collection API (the engine behind `corpus met`).

Sampling is stratified and reproducible: each department's object ids are shuffled with
``Random(f"{seed}:{department_id}")`` and walked in that order; the department's sample is the first
``per_department`` objects that are public domain, have an image, and whose image downloads and decodes.
Candidates are fetched in waves, concurrently, but accepted strictly in shuffled order, so the sample
does not depend on timing, concurrency or interruptions.

Resumable: the id lists are cached in ``OUT/.harvest/`` and every examined candidate is appended to
``OUT/.harvest/journal.jsonl`` (one `JournalEntry` a line, flushed at once) as soon as it is decided.
A rerun reuses decided candidates ("ok" with its image file still in place, "skipped"), retries "failed"
ones, and writes the manifest atomically at the end — so a killed harvest continues with no duplicate and
no gap, and gives the same manifest as an uninterrupted one.
"""
from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError
from tqdm import tqdm

from trainer.corpus.common import CorpusInfo, CorpusInputError, finish_corpus, inspect_image, utc_now, write_atomic
from trainer.corpus.manifest import ManifestRow, assign_split
from trainer.metapi.client import ClientConfig, FetchError, MetClient
from trainer.metapi.models import DEPARTMENT_LABELS, Department, MetObject, department_id

STATE_DIR = ".harvest"
JOURNAL_NAME = "journal.jsonl"


class HarvestConfig(BaseModel):
    out: Path
    departments: list[str] = Field(default_factory=list)    # ids or names; empty = all
    per_department: int = Field(100, ge=1)
    seed: int = 0
    split_seed: int = 0
    original: bool = False                                   # primaryImage instead of primaryImageSmall
    concurrency: int = Field(64, ge=1)
    progress: bool = True
    client: ClientConfig = Field(default_factory=ClientConfig)


class JournalEntry(BaseModel):
    department_id: int
    object_id: int
    status: Literal["ok", "skipped", "failed"]
    reason: str = ""
    row: ManifestRow | None = None


class DepartmentSummary(BaseModel):
    department_id: int
    label: str
    listed: int = 0
    examined: int = 0
    images: int = 0
    reasons: dict[str, int] = Field(default_factory=dict)   # skipped/failed reason -> n


class Journal:
    """Append-only JSONL of decided candidates; a torn last line (a kill mid-write) is ignored."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[tuple[int, int], JournalEntry] = {}
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            for line in text.splitlines():
                try:
                    e = JournalEntry.model_validate_json(line)
                except ValidationError:  # a line torn by a crash mid-write
                    continue
                self.entries[(e.department_id, e.object_id)] = e
            if text and not text.endswith("\n"):
                with path.open("a", encoding="utf-8") as f:
                    f.write("\n")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = path.open("a", encoding="utf-8")

    def append(self, e: JournalEntry) -> None:
        self.entries[(e.department_id, e.object_id)] = e
        self._f.write(e.model_dump_json() + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class Harvester:
    def __init__(self, cfg: HarvestConfig, client: MetClient):
        self.cfg, self.client = cfg, client
        self.state = cfg.out / STATE_DIR
        self.journal = Journal(self.state / JOURNAL_NAME)
        self.slots = asyncio.Semaphore(cfg.concurrency)
        self.summaries: dict[int, DepartmentSummary] = {}
        self.bar: tqdm | None = None

    # --- stage 1: departments and their id lists (cached, so a resume walks the same order) ----------
    async def departments(self) -> list[Department]:
        cache = self.state / "departments.json"
        if cache.is_file():
            deps = [Department.model_validate(d) for d in json.loads(cache.read_text())]
        else:
            deps = await self.client.departments()
            write_atomic(cache, json.dumps([d.model_dump() for d in deps]).encode())
        if not self.cfg.departments:
            return deps
        known = {d.departmentId: d for d in deps}
        chosen = []
        for want in self.cfg.departments:
            i = int(want) if want.strip().isdigit() else department_id(want)
            if i not in known:
                raise CorpusInputError(f"unknown department {want!r}; known: "
                                 + ", ".join(f"{d.departmentId} {d.label}" for d in deps))
            chosen.append(known[i])
        return chosen

    async def object_ids(self, dep: Department) -> list[int]:
        cache = self.state / f"ids-{dep.departmentId}.json"
        if cache.is_file():
            return json.loads(cache.read_text())
        ids = await self.client.object_ids([dep.departmentId])
        write_atomic(cache, json.dumps(ids).encode())
        return ids

    # --- stage 2: candidates -------------------------------------------------------------------------
    def _reusable(self, e: JournalEntry | None) -> bool:
        if e is None or e.status == "failed":
            return False
        return e.status == "skipped" or (
            e.row is not None and (self.cfg.out / e.row.path).is_file()
            and (self.cfg.out / e.row.path).stat().st_size == e.row.bytes)

    async def candidate(self, dept: int, oid: int) -> JournalEntry:
        old = self.journal.entries.get((dept, oid))
        if self._reusable(old):
            return old
        async with self.slots:
            try:
                entry = await self._fetch(dept, oid)
            except FetchError as e:
                entry = JournalEntry(department_id=dept, object_id=oid, status="failed", reason=str(e))
        self.journal.append(entry)
        return entry

    async def _fetch(self, dept: int, oid: int) -> JournalEntry:
        def skip(reason: str) -> JournalEntry:
            return JournalEntry(department_id=dept, object_id=oid, status="skipped", reason=reason)

        obj = await self.client.object(oid)
        if obj is None:
            return skip("object 404")
        if not obj.isPublicDomain:
            return skip("not public domain")
        url = obj.image_url(self.cfg.original)
        if not url:
            return skip("no image")
        stem = self.cfg.out / "images" / str(dept) / str(oid)

        def store(data: bytes):
            info = inspect_image(data)
            write_atomic(stem.with_suffix(info.suffix), data)
            return info
        info = await self.client.image(url, check=store)
        if info is None:
            return skip("image 404")
        row = self._row(dept, obj, url, stem.with_suffix(info.suffix).relative_to(self.cfg.out).as_posix(), info)
        return JournalEntry(department_id=dept, object_id=oid, status="ok", row=row)

    def _row(self, dept: int, obj: MetObject, url: str, path: str, info) -> ManifestRow:
        oid = str(obj.objectID)
        return ManifestRow(object_id=oid, label=DEPARTMENT_LABELS.get(dept, obj.label), department_id=dept,
                           department=obj.department, classification=obj.classification,
                           object_name=obj.objectName, title=obj.title, culture=obj.culture,
                           period=obj.period, object_date=obj.objectDate, medium=obj.medium, image_url=url,
                           path=path, sha256=info.sha256, bytes=info.bytes, width=info.width,
                           height=info.height, split=assign_split(oid, self.cfg.split_seed))

    async def department(self, dep: Department, ids: list[int]) -> list[ManifestRow]:
        """The department's sample: first N good candidates in seeded shuffled order."""
        dept, n = dep.departmentId, self.cfg.per_department
        order = list(ids)
        random.Random(f"{self.cfg.seed}:{dept}").shuffle(order)
        summary = self.summaries[dept]
        accepted: list[ManifestRow] = []
        reasons: Counter[str] = Counter()
        pos = 0
        while len(accepted) < n and pos < len(order):
            need = n - len(accepted)
            wave = order[pos: pos + need + need // 4 + 2]
            pos += len(wave)
            for e in await asyncio.gather(*(self.candidate(dept, oid) for oid in wave)):
                if len(accepted) == n:
                    break
                summary.examined += 1
                if e.status == "ok":
                    accepted.append(e.row)
                    if self.bar is not None:
                        self.bar.update(1)
                else:
                    reasons[e.reason if e.status == "skipped" else "failed"] += 1
        summary.images, summary.reasons = len(accepted), dict(reasons)
        return accepted

    async def run(self) -> list[ManifestRow]:
        deps = await self.departments()
        with tqdm(total=len(deps), desc="listing departments", unit="dept", disable=not self.cfg.progress) as bar:
            async def listing(dep: Department) -> list[int]:
                ids = await self.object_ids(dep)
                bar.update(1)
                return ids
            lists = dict(zip((d.departmentId for d in deps), await asyncio.gather(*map(listing, deps))))
        for dep in deps:
            self.summaries[dep.departmentId] = DepartmentSummary(
                department_id=dep.departmentId, label=dep.label, listed=len(lists[dep.departmentId]))
        target = sum(min(self.cfg.per_department, len(v)) for v in lists.values())
        self.bar = tqdm(total=target, desc="harvesting images", unit="img", disable=not self.cfg.progress)
        try:
            per_dept = await asyncio.gather(*(self.department(d, lists[d.departmentId]) for d in deps))
        finally:
            self.bar.close()
            self.journal.close()
        return [row for rows in per_dept for row in rows]


def prune_images(out: Path, rows: list[ManifestRow]) -> int:
    """Delete downloaded images no manifest row names (candidates fetched beyond a department's N)."""
    keep = {out / r.path for r in rows}
    stale = [p for p in (out / "images").rglob("*") if p.is_file() and p not in keep]
    for p in stale:
        p.unlink()
    return len(stale)


async def harvest(cfg: HarvestConfig, args: dict | None = None) -> tuple[list[ManifestRow], list[DepartmentSummary]]:
    """Run (or resume) a harvest and write the corpus; returns its rows and per-department summaries."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    async with MetClient(cfg.client) as client:
        h = Harvester(cfg, client)
        rows = await h.run()
    skipped: Counter[str] = Counter()
    for s in h.summaries.values():
        skipped.update(s.reasons)
    info = CorpusInfo(source="met", created=utc_now(), seed=cfg.seed, split_seed=cfg.split_seed,
                      args=args or json.loads(cfg.model_dump_json()), skipped=dict(skipped))
    rows = finish_corpus(cfg.out, rows, info)
    prune_images(cfg.out, rows)
    return rows, list(h.summaries.values())


def format_summary(summaries: list[DepartmentSummary], rows: list[ManifestRow]) -> str:
    """The per-department table printed at the end of a harvest."""
    splits: dict[int, Counter[str]] = {}
    for r in rows:
        splits.setdefault(r.department_id or 0, Counter())[r.split] += 1
    lines = [f"{'id':>3}  {'department':<42}{'listed':>8}{'examined':>9}{'images':>8}"
             f"{'train':>7}{'val':>5}{'test':>6}  skipped/failed"]
    for s in sorted(summaries, key=lambda s: s.department_id):
        sp = splits.get(s.department_id, Counter())
        why = ", ".join(f"{k}: {v}" for k, v in sorted(s.reasons.items())) or "-"
        lines.append(f"{s.department_id:>3}  {s.label[:41]:<42}{s.listed:>8}{s.examined:>9}{s.images:>8}"
                     f"{sp['train']:>7}{sp['val']:>5}{sp['test']:>6}  {why}")
    lines.append(f"total images: {len(rows)}")
    return "\n".join(lines)
