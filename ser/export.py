"""``python -m ser export``: the annotation store as training data (datasets, CSV or Parquet).

The export applies one label-resolution policy so the output is what a retrain would see; it
prints how many clips each rule left out so nobody trains on less than they think.
CSV cells a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, tab, CR) are prefixed
with a single quote: annotator names and notes come from users.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

from ser.store import POLICIES, AnnotationStore, ResolvedClip, StoreError

FORMATS = ("datasets", "csv", "parquet")
COLUMNS = ("path", "sha256", "label", "annotators", "agreement", "n_labels", "speaker")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="output folder (datasets) or file (csv, parquet)")
    parser.add_argument("--store", type=Path, required=True, help="the annotation store folder")
    parser.add_argument("--format", choices=FORMATS, default="datasets", help="output format (default: datasets)")
    parser.add_argument("--policy", choices=POLICIES, default="majority", help="how to settle one label per clip")
    parser.add_argument("--min-agreement", type=float, default=2 / 3, help="share that must agree (min_agreement)")
    parser.add_argument("--min-labels", type=int, default=2, help="labels a clip needs (min_agreement)")
    parser.add_argument(
        "--trusted",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=None,
        help="comma-separated trusted annotators (latest_trusted; default: everyone)",
    )


def escape_formula(value: Any) -> Any:
    """Neutralise a text cell a spreadsheet would evaluate (CSV formula injection)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def export_rows(clips: list[ResolvedClip]) -> list[dict[str, Any]]:
    return [
        {
            "path": clip.path,
            "sha256": clip.sha256,
            "label": clip.label,
            "annotators": clip.annotators,
            "agreement": round(clip.agreement, 6),
            "n_labels": clip.n_labels,
            "speaker": clip.speaker,
        }
        for clip in clips
    ]


def write_csv(rows: list[dict[str, Any]], out: Path) -> None:
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            flat = {**row, "annotators": ";".join(row["annotators"])}
            writer.writerow({key: escape_formula(value) for key, value in flat.items()})


def write_parquet(rows: list[dict[str, Any]], out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("path", pa.string()),
            ("sha256", pa.string()),
            ("label", pa.string()),
            ("annotators", pa.list_(pa.string())),
            ("agreement", pa.float64()),
            ("n_labels", pa.int32()),
            ("speaker", pa.string()),
        ]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), out)


def run(args: argparse.Namespace) -> int:
    if not (args.store / "annotations.sqlite").is_file():
        print(f"error: no annotation store at {args.store}", file=sys.stderr)
        return 2
    options = {"min_agreement": args.min_agreement, "min_labels": args.min_labels, "trusted": args.trusted}
    try:
        store = AnnotationStore(args.store)
        resolution = store.resolve(args.policy, **options)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.format == "datasets":
            store.dataset_from(resolution, embed_audio=True).save_to_disk(str(args.out))
        elif args.format == "csv":
            write_csv(export_rows(resolution.clips), args.out)
        else:
            write_parquet(export_rows(resolution.clips), args.out)
    except (StoreError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    left_out = ", ".join(f"{reason}: {n}" for reason, n in sorted(resolution.skipped.items())) or "none"
    print(
        f"exported {len(resolution.clips)} clips to {args.out} ({args.format}, policy {args.policy}); "
        f"left out: {left_out}"
    )
    return 0
