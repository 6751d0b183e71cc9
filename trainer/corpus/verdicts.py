"""Make a corpus from curators' verdicts in the routing ledger: the museum's own intake, labelled by curators.

Reads every object's current verdict from the ledger's HTTP API (`python -m streams ledger serve`, or
`ledger run --api`), fetches each photo through the API by key and etag (the ledger checks the etag: a
photo replaced since the verdict is skipped, never labelled with another photo's verdict), checks that
it decodes, and writes OUT/manifest.jsonl + OUT/corpus.json (docs/manifest.md). label = the curator's
department; "not routable" verdicts are left out, or with --not-routable-class become the class
"Not routable". object_id = "bucket/key"; the split is the hash split of the object id. --base merges an
existing corpus (paths rewritten, images not copied), e.g. the MET harvest, so that a model is retrained
on MET data plus the museum's verdicts. ARTROUTE_LEDGER_API_TOKEN is sent as the bearer token when set.

example (the full loop, docs/curation.md):
  python -m trainer corpus verdicts --ledger http://127.0.0.1:8300 --out corpora/curated --base corpora/met
  python -m trainer train --corpus corpora/curated --out runs/curated
  python -m trainer evaluate --run runs/curated --corpus corpora/curated-only
"""
from __future__ import annotations

import argparse
import asyncio
import os
from collections import Counter
from pathlib import Path

import httpx

from streams.contract.cli import UserError
from streams.contract.curation import CURATED_PATH, IMAGE_PATH, NOT_ROUTABLE_LABEL, TOKEN_ENV, CuratedItem, CuratedPage
from streams.contract.retry import RetryPolicy, call_with_retries
from trainer.corpus.common import (BadImage, CorpusInfo, finish_corpus, inspect_image, jsonable_args, utc_now,
                                   write_atomic)
from trainer.corpus.files import safe_name
from trainer.corpus.manifest import (ManifestError, ManifestRow, assign_split, dumps_summary, manifest_path,
                                     read_manifest, relocate)

POLICY = RetryPolicy("ledger API", initial_s=0.5, max_s=10.0, attempts=6)


class LedgerUnavailable(UserError):
    """The ledger API cannot be reached or refuses (wrong URL or token)."""


def transient(e: BaseException) -> bool:
    if isinstance(e, httpx.TransportError):
        return True
    return isinstance(e, httpx.HTTPStatusError) and (e.response.status_code == 429 or e.response.status_code >= 500)


class LedgerClient:
    def __init__(self, base_url: str, token: str | None = None, concurrency: int = 8):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=60.0)
        self.slots = asyncio.Semaphore(concurrency)

    async def _get(self, path: str, params: dict) -> httpx.Response:
        async def once() -> httpx.Response:
            r = await self.http.get(path, params=params)
            if r.status_code >= 500 or r.status_code == 429:
                r.raise_for_status()
            return r

        try:
            return await call_with_retries(once, transient=transient, policy=POLICY)
        except (httpx.TransportError, httpx.HTTPStatusError) as e:
            raise LedgerUnavailable(f"ledger {self.http.base_url}: {type(e).__name__}: {e}") from None

    async def curated(self) -> list[CuratedItem]:
        items, cursor = [], None
        while True:
            r = await self._get(CURATED_PATH, {"limit": 1000, **({"cursor": cursor} if cursor else {})})
            if r.status_code != 200:
                raise LedgerUnavailable(f"ledger {self.http.base_url}{CURATED_PATH}: HTTP {r.status_code}: "
                                        f"{r.text[:200]}")
            page = CuratedPage.model_validate_json(r.content)
            items += page.items
            if page.next_cursor is None:
                return items
            cursor = page.next_cursor

    async def image(self, item: CuratedItem) -> bytes | str:
        """The photo, or why it is not available ("object gone", "object changed")."""
        async with self.slots:
            r = await self._get(IMAGE_PATH, {"bucket": item.bucket, "key": item.key, "etag": item.etag})
        if r.status_code == 200:
            return r.content
        if r.status_code in (404, 409):
            return "object changed" if r.status_code == 409 else "object gone"
        raise LedgerUnavailable(f"ledger {self.http.base_url}{IMAGE_PATH}: HTTP {r.status_code}: {r.text[:200]}")

    async def close(self) -> None:
        await self.http.aclose()


def label_of(item: CuratedItem, not_routable_class: bool) -> str | None:
    if item.kind == "not_routable":
        return NOT_ROUTABLE_LABEL if not_routable_class else None
    return item.department


async def verdict_rows(client: LedgerClient, out: Path, not_routable_class: bool, split_seed: int,
                       skipped: Counter) -> list[ManifestRow]:
    everything = await client.curated()
    items = [i for i in everything if label_of(i, not_routable_class) is not None]
    if len(items) < len(everything):
        skipped["not routable"] += len(everything) - len(items)
    images = await asyncio.gather(*(client.image(i) for i in items))
    rows = []
    for item, data in zip(items, images):
        if isinstance(data, str):
            skipped[data] += 1
            continue
        try:
            info = inspect_image(data)
        except BadImage:
            skipped["bad image"] += 1
            continue
        label, object_id = label_of(item, not_routable_class), f"{item.bucket}/{item.key}"
        dest = out / "images" / safe_name(label) / (safe_name(object_id) + info.suffix)
        write_atomic(dest, data)
        rows.append(ManifestRow(object_id=object_id, label=label, department_id=item.department_id,
                                department=item.department, path=dest.relative_to(out).as_posix(),
                                sha256=info.sha256, bytes=info.bytes, width=info.width, height=info.height,
                                split=assign_split(object_id, split_seed)))
    return rows


def base_rows(base: str, out: Path) -> list[ManifestRow]:
    path = manifest_path(base)
    if not path.is_file():
        raise UserError(f"--base {base}: no manifest.jsonl")
    try:
        return [relocate(r, path.parent, out) for r in read_manifest(path)]
    except ManifestError as e:
        raise UserError(str(e)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ledger", required=True, metavar="URL", help="base URL of the ledger API, e.g. http://127.0.0.1:8300")
    p.add_argument("--out", required=True, help="corpus directory to write (required)")
    p.add_argument("--base", metavar="CORPUS", help="merge this corpus' rows (e.g. corpora/met) (default: none)")
    p.add_argument("--not-routable-class", action="store_true",
                   help=f'keep "not routable" verdicts as the class "{NOT_ROUTABLE_LABEL}" (default: leave them out)')
    p.add_argument("--split-seed", type=int, default=0, help="seed of the hash split (default: 0)")
    p.add_argument("--concurrency", type=int, default=8, help="images fetched at once (default: 8)")


def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.base and manifest_path(args.base).parent.resolve() == out.resolve():
        raise UserError(f"--out {args.out}: is the --base corpus; choose a new directory")
    base = base_rows(args.base, out) if args.base else []
    skipped: Counter[str] = Counter()

    async def fetch() -> list[ManifestRow]:
        client = LedgerClient(args.ledger, os.environ.get(TOKEN_ENV), args.concurrency)
        try:
            return await verdict_rows(client, out, args.not_routable_class, args.split_seed, skipped)
        finally:
            await client.close()

    curated = asyncio.run(fetch())
    if not curated and not base:
        raise UserError(f"ledger {args.ledger}: no verdicts with a department yet")
    ids = {r.object_id for r in curated}
    rows = [r for r in base if r.object_id not in ids] + curated  # a curator's verdict beats the base label
    info = CorpusInfo(source="verdicts", created=utc_now(), split_seed=args.split_seed, args=jsonable_args(args),
                      skipped=dict(skipped))
    rows = finish_corpus(out, rows, info)
    print(dumps_summary(rows))
    print(f"wrote {len(rows)} rows ({len(curated)} from verdicts, {len(rows) - len(curated)} from the base) to "
          f"{out / 'manifest.jsonl'}" + (f"; skipped {dict(skipped)}" if skipped else ""))
    return 0
