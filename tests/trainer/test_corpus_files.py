"""`corpus folder` and `corpus csv` on real files (and real URLs served by the fake): valid manifests,
one-line file:line errors for bad input."""
from __future__ import annotations

import asyncio
import csv
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streams.contract.cli import dispatch
from trainer.__main__ import COMMANDS
from trainer.corpus.manifest import assign_split, read_manifest, resolve_image

from .conftest import trainer_cmd

LABELS = ("bowls", "masks", "scrolls")


def make_image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (24 + seed % 7, 32, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)


def run(*argv: str) -> int:
    return dispatch("python -m trainer", "", COMMANDS, list(argv))


@pytest.fixture
def label_tree(tmp_path) -> Path:
    root = tmp_path / "photos"
    for i, label in enumerate(LABELS):
        for k in range(6):
            make_image(root / label / f"img{k}.{'png' if k % 2 else 'jpg'}", 10 * i + k)
    return root


def check_rows(out: Path, n: int):
    rows = read_manifest(out)
    assert len(rows) == n and len({r.object_id for r in rows}) == n
    for r in rows:
        img = Image.open(resolve_image(out, r))
        assert img.size == (r.width, r.height)
    return rows


def test_folder_hash_splits(label_tree, tmp_path):
    out = tmp_path / "corpus"
    assert run("corpus", "folder", str(label_tree), "--out", str(out), "--split-seed", "4") == 0
    rows = check_rows(out, 18)
    assert {r.label for r in rows} == set(LABELS)
    assert all(r.split == assign_split(r.object_id, 4) for r in rows)
    assert rows[0].object_id.startswith("bowls/img") and not (out / "images").exists()


def test_folder_split_subfolders_and_copy(tmp_path):
    root = tmp_path / "photos"
    for split, k in (("train", 0), ("train", 1), ("val", 2), ("test", 3)):
        for label in LABELS[:2]:
            make_image(root / split / label / f"{k}.jpg", k * 3 + len(label))
    out = tmp_path / "corpus"
    assert run("corpus", "folder", str(root), "--out", str(out), "--copy", "--drop-label", "masks") == 0
    rows = check_rows(out, 4)
    assert sorted(r.split for r in rows) == ["test", "train", "train", "val"]
    assert {r.object_id for r in rows} == {"bowls/0", "bowls/1", "bowls/2", "bowls/3"}
    assert all(r.path.startswith("images/bowls/") and (out / r.path).is_file() for r in rows)


def test_folder_bad_image_names_the_file(label_tree, tmp_path, capsys):
    bad = label_tree / "masks" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert run("corpus", "folder", str(label_tree), "--out", str(tmp_path / "c")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "not a decodable image" in err[0]
    assert run("corpus", "folder", str(label_tree), "--out", str(tmp_path / "c"), "--skip-bad") == 0
    check_rows(tmp_path / "c", 18)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


async def test_csv_with_paths_and_urls(label_tree, tmp_path, fake_api):
    oid = next(i for i in fake_api.eligible(10))
    url = f"{fake_api.base_url.split('/public')[0]}/images/web-large/{oid}.jpg"
    rows = [[f"photos/bowls/img{k}.jpg", "bowls", "", f"b{k}", "A bowl"] for k in (0, 2, 4)]
    rows += [[url, "egyptian", "test", "", ""]]
    src = write_csv(tmp_path / "items.csv", ["path", "label", "split", "object_id", "title"], rows)
    out = tmp_path / "corpus"
    proc = await _subprocess("corpus", "csv", str(src), "--out", str(out), "--labels", "bowls,egyptian")
    assert proc.returncode == 0, proc.stderr
    got = {r.object_id: r for r in check_rows(out, 4)}
    assert got[str(oid)].split == "test" and got[str(oid)].image_url == url
    assert got[str(oid)].path == f"images/egyptian/{oid}.jpg"
    assert got["b0"].split == assign_split("b0", 0) and got["b0"].title == "A bowl"


async def _subprocess(*argv: str):
    """The CLI in a child process, while this test's event loop keeps serving the fake."""
    return await asyncio.to_thread(subprocess.run, trainer_cmd(*argv), capture_output=True, text=True)


@pytest.mark.parametrize("header,row,message", [
    (["file", "label"], ["photos/bowls/img0.jpg", "bowls"], ":1: missing column 'path' (columns: file, label)"),
    (["path", "label", "split"], ["photos/bowls/img0.jpg", "bowls", "training"],
     ":3: split 'training' is not one of train, val, test"),
    (["path", "label"], ["photos/bowls/img0.jpg", "vases"], ":3: unknown label 'vases' (--labels: bowls, masks)"),
    (["path", "label"], ["photos/bowls/nope.jpg", "bowls"], ":3: ") ,
    (["path", "label"], ["photos/bowls/img0.jpg", ""], ":3: empty 'label'"),
    (["path", "label", "object_id"], ["photos/bowls/img2.jpg", "bowls", "x1"], ":3: duplicate object id 'x1'"),
])
def test_csv_bad_input_names_file_and_line(label_tree, tmp_path, capsys, header, row, message):
    first = ["photos/masks/img0.jpg", "masks"] + (["train"] if "split" in header else []) + \
        (["x1"] if "object_id" in header else [])
    src = write_csv(tmp_path / "bad.csv", header, [first, row])
    assert run("corpus", "csv", str(src), "--out", str(tmp_path / "c"), "--labels", "bowls,masks") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"python -m trainer corpus csv: error: {src}{message}"), err
    if "nope" in row[0]:
        assert "nope.jpg: no such image file" in err[0]


def test_csv_undecodable_image_in_a_subprocess_has_no_traceback(label_tree, tmp_path):
    (label_tree / "bowls" / "cut.jpg").write_bytes((label_tree / "bowls" / "img0.jpg").read_bytes()[:200])
    src = write_csv(tmp_path / "items.csv", ["path", "label"], [["photos/bowls/img2.jpg", "bowls"],
                                                                ["photos/bowls/cut.jpg", "bowls"]])
    proc = subprocess.run(trainer_cmd("corpus", "csv", str(src), "--out", str(tmp_path / "c")),
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"python -m trainer corpus csv: error: {src}:3: ")
    assert "cut.jpg: not a decodable image" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_egyptian_corpus_in_one_command(shared_dir, tmp_path):
    labels = shared_dir / "data" / "egyptian-met" / "labels.csv"
    out = tmp_path / "egyptian"
    assert run("corpus", "csv", str(labels), "--path-column", "file", "--drop-label", "Unclassified",
               "--out", str(out)) == 0
    rows = read_manifest(out)
    with labels.open(newline="") as f:
        src = {r["object_id"]: r for r in csv.DictReader(f) if r["label"] != "Unclassified"}
    assert len(rows) == len(src) > 1000
    assert {r.label for r in rows} == {"Statuary", "Jewellery", "Pottery", "Reliefs"}
    same = sum(r.split == src[r.object_id]["split"] for r in rows)
    assert same >= 0.99 * len(rows)          # the CSV's split, except duplicate images pulled together
    assert all(Path(resolve_image(out, r)).is_file() for r in rows[:50])
