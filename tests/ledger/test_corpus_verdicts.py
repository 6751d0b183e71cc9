"""Back into training on the real stack: uploads -> worker -> ledger -> curators' verdicts over HTTP ->
`trainer corpus verdicts` (images through the ledger API by key and etag) -> `trainer train` -> `trainer
evaluate --corpus` on the curated intake."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import httpx
import pytest

from streams.contract.curation import NOT_ROUTABLE_LABEL
from streams.orchestration.harness import LedgerProcess, Upload, upload_all
from streams.stack.processes import free_port
from tests.ledger.test_ledger_stack import _open, ledger_env, wait_until
from tests.model_fixture import DEPARTMENTS, training_corpus
from tests.worker_fixtures import jpeg

pytestmark = pytest.mark.stack
N = 48


def trainer(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


async def test_verdicts_make_a_corpus_that_trains_and_evaluates(worker, stack, stack_settings, tmp_path,
                                                                 served_model_repository):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    settings = stack_settings.model_copy(update={"ledger_url": url, "ledger_api_port": free_port()})
    proc = LedgerProcess(ledger_env(stack, settings, url), log_path=tmp_path / "ledger.log").start()
    try:
        # Fixed keys (one run per session): the hash split of the curated corpus is the same every run.
        uploads = [Upload(f"curated-intake/{i:03d}.jpg", jpeg(i % 4, seed=7000 + i)) for i in range(N)]
        truth = {u.key: DEPARTMENTS[i % 4] for i, u in enumerate(uploads)}
        upload_all(stack_settings, uploads)
        ledger = await wait_until(lambda: _open(settings), 60, "the ledger's database")
        await wait_until(lambda: ledger.counts("curated-intake/").decided == N, 180, "every upload decided")
        base = f"http://127.0.0.1:{settings.ledger_api_port}"
        async with httpx.AsyncClient(base_url=base) as http:
            for u in uploads:
                obj = ledger.history(bucket=settings.bucket, key=u.key).object
                body = {"decision_id": obj.decision_id, "curator": "amy", "kind": "correct",
                        "department": truth[u.key]}
                if u.key.endswith("000.jpg"):
                    body.update(kind="not_routable", department=None)
                r = await http.post("/api/v1/verdicts", json=body)
                assert r.status_code == 201, r.text
        ledger.close()

        curated = tmp_path / "curated"
        trainer("corpus", "verdicts", "--ledger", base, "--out", str(curated), "--not-routable-class")
        rows = [json.loads(line) for line in (curated / "manifest.jsonl").read_text().splitlines()]
        assert len(rows) == N
        by_id = {r["object_id"]: r for r in rows}
        for u in uploads:
            row = by_id[f"{settings.bucket}/{u.key}"]
            assert row["label"] == (NOT_ROUTABLE_LABEL if u.key.endswith("000.jpg") else truth[u.key])
            assert row["sha256"] == hashlib.sha256(u.data).hexdigest()       # the very photo, by key and etag
            assert (curated / row["path"]).read_bytes() == u.data
        assert {r["split"] for r in rows} == {"train", "val", "test"}

        # Merged with the model's own training corpus (--base), without the not-routable class.
        merged = tmp_path / "merged"
        base_corpus = training_corpus(served_model_repository)
        trainer("corpus", "verdicts", "--ledger", base, "--out", str(merged), "--base", str(base_corpus))
        merged_rows = (merged / "manifest.jsonl").read_text().splitlines()
        base_rows = (base_corpus / "manifest.jsonl").read_text().splitlines()
        assert len(merged_rows) == len(base_rows) + N - 1
        assert json.loads((merged / "corpus.json").read_text())["skipped"] == {"not routable": 1}

        run = tmp_path / "run"
        trainer("train", "--corpus", str(merged), "--out", str(run), "--arch", "tiny", "--no-pretrained",
                "--image-size", "48", "--epochs", "1", "--batch-size", "16", "--workers", "0", "--device", "cpu")
        r = trainer("evaluate", "--run", str(run), "--corpus", str(curated), "--workers", "0")
        result = json.loads((run / "eval_test.json").read_text())
        n_test = sum(1 for row in rows if row["split"] == "test" and row["label"] != NOT_ROUTABLE_LABEL)
        assert result["metrics"]["n"] == n_test > 0 and "top1=" in r.stdout
    finally:
        proc.stop()
