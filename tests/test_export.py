"""``python -m ser export``: the store as datasets / CSV / Parquet, safe to open in a spreadsheet."""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ser import export
from ser.store import AnnotationStore

REPO = Path(__file__).resolve().parents[1]
# The store already strips leading tabs / CRs from names; escape_formula's own test covers those.
HOSTILE = ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)"]


@pytest.fixture
def store_dir(tmp_path) -> Path:
    """Clips labelled by annotators whose names a spreadsheet would execute, plus a tie."""
    root = tmp_path / "store"
    with AnnotationStore(root) as store:
        rng = np.random.default_rng(0)
        shas = [store.add_clip((0.2 * rng.standard_normal(4000)).astype(np.float32), speaker=f"s{i}") for i in range(3)]
        for name in HOSTILE:
            store.add_label(shas[0], name, "angry")
        store.add_label(shas[1], "ann", "sad")
        store.add_label(shas[2], "ann", "sad")
        store.add_label(shas[2], "bob", "happy")
    return root


def run_export(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    export.add_arguments(parser)
    return export.run(parser.parse_args(list(argv)))


@pytest.mark.parametrize(
    ("cell", "expected"),
    [("=1+1", "'=1+1"), ("+x", "'+x"), ("-x", "'-x"), ("@x", "'@x"), ("\tx", "'\tx"), ("\rx", "'\rx"),
     ("angry", "angry"), ("a=b", "a=b"), ("", ""), (0.5, 0.5), (-1, -1)],
)
def test_escape_formula(cell, expected):
    assert export.escape_formula(cell) == expected


def test_csv_export_escapes_formulas(store_dir, tmp_path, capsys):
    out = tmp_path / "out" / "labels.csv"
    assert run_export(str(out), "--store", str(store_dir), "--format", "csv") == 0
    printed = capsys.readouterr().out
    assert "exported 2 clips" in printed and "tie: 1" in printed
    with open(out, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(export.COLUMNS)
    assert [row["label"] for row in rows] == ["angry", "sad"]
    assert rows[0]["annotators"] == "'" + ";".join(sorted(HOSTILE))
    assert rows[0]["n_labels"] == "4" and float(rows[0]["agreement"]) == 1.0
    assert Path(rows[1]["path"]).is_file() and rows[1]["speaker"] == "s1"


def test_csv_escapes_every_hostile_cell(tmp_path):
    root = tmp_path / "store"
    out = tmp_path / "x.csv"
    with AnnotationStore(root) as store:
        rng = np.random.default_rng(1)
        for i, name in enumerate(HOSTILE):
            sha = store.add_clip((0.2 * rng.standard_normal(2000)).astype(np.float32), speaker=name)
            store.add_label(sha, name, "sad")
    assert run_export(str(out), "--store", str(root), "--format", "csv") == 0
    with open(out, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["annotators"] for row in rows] == ["'" + name for name in HOSTILE]
    assert [row["speaker"] for row in rows] == ["'" + name for name in HOSTILE]


def test_parquet_export(store_dir, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "labels.parquet"
    options = ["--format", "parquet", "--policy", "latest_trusted", "--trusted", "bob,carol"]
    assert run_export(str(out), "--store", str(store_dir), *options) == 0
    rows = pq.read_table(out).to_pylist()
    assert [(row["label"], row["annotators"], row["n_labels"]) for row in rows] == [("happy", ["ann", "bob"], 2)]
    assert rows[0]["agreement"] == pytest.approx(0.5)


def test_datasets_export_is_self_contained(store_dir, tmp_path):
    import datasets

    out = tmp_path / "ds"
    assert run_export(str(out), "--store", str(store_dir), "--policy", "min_agreement", "--min-labels", "1") == 0
    ds = datasets.load_from_disk(str(out))
    assert ds.num_rows == 2 and [ds.features["label"].int2str(i) for i in ds["label"]] == ["angry", "sad"]
    audio = ds[0]["audio"]
    assert audio["bytes"][:4] == b"fLaC" and audio["path"] == f"{ds[0]['sha256']}.flac"


def test_missing_store_is_an_error(tmp_path, capsys):
    assert run_export(str(tmp_path / "o.csv"), "--store", str(tmp_path / "nope"), "--format", "csv") == 2
    assert "no annotation store" in capsys.readouterr().err
    assert not (tmp_path / "nope").exists()


def test_module_entry_point(store_dir, tmp_path):
    out = tmp_path / "cli.csv"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "ser", "export", "--store", str(store_dir), "--format", "csv", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_text(encoding="utf-8").count("\n") == 3
