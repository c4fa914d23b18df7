"""Archives too large for one machine: Ray Data over a pool of ``Predictor`` actors, written as Parquet.

Ray (``pip install "ray[data]"``, optional; pinned in requirements-dev.txt) reads the list of
files, hands batches of paths to actors that each hold one loaded ``Predictor`` (loading a model
per batch would cost more than the batch), and writes Parquet files in parallel. Each actor
decodes its own files, so audio never travels through the driver.

    python -m ser predict /archive --engine ray --address ray://head:10001 --out /archive-results
    ray job submit --address http://head:8265 --working-dir . -- \\
        python -m ser predict /archive --engine ray --out /archive-results

Files must be readable at the same path on every node (a shared or mounted file system).
``--vad`` and ``--denoise`` work as on the local engine, inside each actor (a clip without speech
becomes an error row); ``--segments`` is the local engine's only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np


class PredictorActor:
    """One loaded model per Ray actor: paths in, one row of probabilities (or an error) per path out."""

    def __init__(self, model: str | None, runtime: str | None, vad: bool = False, denoise: str | None = None) -> None:
        from ser.model import Predictor

        self.predictor = Predictor.from_pretrained(model, runtime=runtime)
        self.vad, self.denoise = vad, denoise

    def predict(self, path: str) -> dict[str, float]:
        """As ``python -m ser predict`` does it locally: denoised (the model's own method first, see
        ``Predictor.heard``) and, with ``vad``, refused without speech and trimmed to it."""
        if self.vad:
            return self.predictor.predict_speech(path, trim=True, denoise=self.denoise)
        return self.predictor.predict(path, denoise=self.denoise)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        from ser.audio import InvalidAudio

        labels = self.predictor.labels
        rows: dict[str, list[Any]] = {"path": [], "label": [], "error": [], **{name: [] for name in labels}}
        for path in batch["path"]:
            path = str(path)
            try:
                probs = self.predict(path)
                error = None
            except (InvalidAudio, OSError) as failure:
                probs, error = None, str(failure)
            rows["path"].append(path)
            rows["error"].append(error)
            rows["label"].append(max(probs, key=probs.get) if probs else None)
            for name in labels:
                rows[name].append(float(probs[name]) if probs else float("nan"))
        return rows


def predict_dataset(
    files: list[Path],
    *,
    model: str | None = None,
    runtime: str | None = None,
    actors: int = 2,
    batch_size: int = 16,
    vad: bool = False,
    denoise: str | None = None,
) -> Any:
    """A Ray dataset of predictions for ``files`` (lazy: write or collect it to run it); ``vad`` and
    ``denoise`` as ``python -m ser predict --vad --denoise METHOD``."""
    import ray

    items = [{"path": str(path)} for path in files]
    return ray.data.from_items(items).map_batches(
        PredictorActor,
        fn_constructor_kwargs={"model": model, "runtime": runtime, "vad": vad, "denoise": denoise},
        batch_size=batch_size,
        concurrency=actors,
        num_cpus=1,
    )


def run_cli(args: argparse.Namespace, files: list[Path], out: Path | None) -> int:
    """``python -m ser predict --engine ray``: connect (or start a local Ray), predict, write Parquet."""
    try:
        import ray
    except ImportError:
        print('error: --engine ray needs Ray: pip install "ray[data]"', file=sys.stderr)
        return 2
    if out is None:
        print("error: --engine ray writes Parquet files: give --out FOLDER", file=sys.stderr)
        return 2
    if args.resume:
        print("error: --resume is for the local engine; Ray retries failed tasks itself", file=sys.stderr)
        return 2
    if getattr(args, "segments", False):
        print("error: --segments is for the local engine (one row per utterance); drop --engine ray", file=sys.stderr)
        return 2
    ray.init(address=args.address, ignore_reinit_error=True, log_to_driver=False)
    try:
        actors = max(1, int(ray.cluster_resources().get("CPU", 2)) // 2)
        dataset = predict_dataset(files, model=args.model, runtime=args.runtime, actors=actors,
                                  vad=bool(getattr(args, "vad", False)), denoise=getattr(args, "denoise", None))
        dataset.write_parquet(str(out))
        failures = ray.data.read_parquet(str(out)).filter(lambda row: row["error"] is not None).count()
    finally:
        ray.shutdown()
    print(f"wrote predictions for {len(files)} files to {out} (Parquet)")
    if failures:
        print(f"{failures} of {len(files)} files could not be read (see the error column).", file=sys.stderr)
        return 1
    return 0
