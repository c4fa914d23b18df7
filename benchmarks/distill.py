"""Knowledge distillation on EmoDB, speaker-independent: a light CNN student taught by a Whisper base probe.

Within each of ``--folds`` speaker folds (``finetune.data.speaker_kfold``):

- teacher: the default probe recipe (Whisper base, frozen; concat layer means, linear, L-BFGS) fitted
  on the fold's training speakers only (the embedded default model has heard every EmoDB speaker,
  so it would be no honest teacher here), from the cached hidden states;
- distilled student: the light CNN (``finetune.distill``) on the training clips with their labels
  and the teacher's soft labels, labelled audio only;
- distilled + unlabelled: the same plus unlabelled audio the teacher alone labels: ``--augment``
  augmented copies of the training clips and ``--unlabelled-clips`` clips of other corpora
  (``--unlabelled-corpora``, their labels ignored; spread over each corpus);
- hard student: the same CNN on the training clips with the true labels only (alpha 0), so any
  difference is the teacher's; and, with ``--augment``, the hard student on the training clips plus
  their augmented copies with the true labels (so the unlabelled row's gain is not augmentation alone).

All three are scored on the fold's test speakers; UAR is pooled over folds (and per fold). Speed:
the last fold's teacher and student are saved as checkpoints, loaded with
``Predictor.from_pretrained(runtime="eager")`` and timed on the same clips in the same run.

Run: ``python benchmarks/distill.py [--folds 5] [--epochs 25] [--augment 1] [--unlabelled-corpora nemo,emovo,turev
--unlabelled-root /work/corpora --unlabelled-clips 150]``. Needs EmoDB at
``$SER_SHARED_DATA/emodb``; exits 0 with a message when it is absent. The teacher's hidden states
come from the probe cache (extracted on first use: about 10 min per copy on a loaded 2-CPU machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from finetune.cache import cached_hidden_states, clip_hash  # noqa: E402
from finetune.data import speaker_kfold  # noqa: E402
from finetune.distill import (  # noqa: E402
    UNLABELLED, DistillOptions, augmented_copies, light_features, predict_light, save_student,
    student_extractor, train_light_student,
)
from finetune.probe import ProbeOptions, build_probe, encoder_probe, load_features, probe_config, train_head_lbfgs  # noqa: E402
from ser.corpora import label_names, load_corpus, waveform  # noqa: E402
from ser.metrics import compute_metrics  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_DATA = Path(os.environ.get("SER_SHARED_DATA", REPO.parent / "shared" / "data"))


def _uar(names: list[str], y_true: list[int], y_pred: list[int]) -> dict[str, float]:
    metrics = compute_metrics(y_true, y_pred, names)
    return {key: round(float(metrics[key]), 4) for key in ("uar", "accuracy", "macro_f1")}


def latency(predictor: Any, clips: list[np.ndarray], repeats: int) -> float:
    """Median seconds per clip of ``Predictor.predict`` (one warm-up pass first)."""
    for clip in clips[:2]:
        predictor.predict(clip)
    times = []
    for _ in range(repeats):
        for clip in clips:
            start = time.perf_counter()
            predictor.predict(clip)
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=SHARED_DATA / "emodb", help="EmoDB folder")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=DistillOptions.epochs)
    parser.add_argument("--augment", type=int, default=1, help="augmented copies per training clip (teacher-labelled)")
    parser.add_argument("--unlabelled-corpora", default="", help="other corpora (ser.corpora names, comma-separated) "
                        "whose clips the teacher labels, their own labels ignored")
    parser.add_argument("--unlabelled-root", type=Path, default=None,
                        help="folder holding one sub-folder per unlabelled corpus (default: beside --root)")
    parser.add_argument("--unlabelled-clips", type=int, default=150, help="unlabelled clips in all, spread over the corpora")
    parser.add_argument("--temperature", type=float, default=DistillOptions.temperature)
    parser.add_argument("--alpha", type=float, default=DistillOptions.alpha)
    parser.add_argument("--channels", default="16,32,64")
    parser.add_argument("--corpus-clips", type=int, default=None, help="use only this many clips (tests)")
    parser.add_argument("--latency-clips", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache-dir", default=None, help="probe feature cache (default: the user cache)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not (args.root / "wav").is_dir():
        print(f"EmoDB not found at {args.root}: nothing to benchmark (set SER_SHARED_DATA or --root)")
        return 0
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    loadavg_before = os.getloadavg()

    dataset = load_corpus("emodb", args.root)
    if args.corpus_clips:
        dataset = dataset.shuffle(seed=args.seed).select(range(min(args.corpus_clips, len(dataset))))
    names = label_names(dataset)
    labels = np.asarray(dataset["label"])
    n = len(dataset)
    probe_options = ProbeOptions(augment=args.augment, cache_dir=args.cache_dir, seed=args.seed)
    features = load_features(dataset, probe_options)  # originals, then each augmented copy
    waves = [waveform(row) for row in dataset]
    copies = augmented_copies(waves, [clip_hash(row) for row in dataset], args.augment, args.seed)
    options = DistillOptions(channels=tuple(int(c) for c in args.channels.split(",")), epochs=args.epochs,
                             augment=args.augment, temperature=args.temperature, alpha=args.alpha, seed=args.seed)
    others = unlabelled_corpora(args)
    other_waves = [waveform(row) for row in others] if others is not None else []
    other_means = (torch.from_numpy(np.asarray(cached_hidden_states(
        others, encoder_probe(probe_options.backbone), cache_dir=args.cache_dir).with_format("numpy")["layer_means"])).float()
        if others is not None else torch.zeros((0, *features.means.shape[1:])))
    student_frames = light_features(student_extractor(options), waves + copies + other_waves)
    other_rows = np.arange(len(waves) + len(copies), len(student_frames))
    config = probe_config(encoder_probe(probe_options.backbone).config, names, replace(probe_options, augment=0))

    folds = speaker_kfold(dataset, k=args.folds, seed=args.seed)
    truth: list[int] = []
    kinds = ["distilled", *(["unlabelled"] if len(copies) or len(other_waves) else []), "hard",
             *(["hard_copies"] if len(copies) else [])]
    preds: dict[str, list[int]] = {"teacher": [], **{kind: [] for kind in kinds}}
    per_fold, train_seconds = [], {kind: 0.0 for kind in kinds}
    for fold, (train_idx, test_idx) in enumerate(folds):
        teacher, _ = train_head_lbfgs(config, features, labels, features.rows(train_idx, with_copies=False), probe_options)
        with torch.no_grad():
            # row order = waves + copies + other corpora's clips
            teacher_logits = torch.cat([teacher.forward_pooled(features.means), teacher.forward_pooled(other_means)])
        originals = features.rows(train_idx, with_copies=False)
        with_copies = features.rows(train_idx, with_copies=True)
        true_labels = np.full(len(student_frames), UNLABELLED)
        true_labels[with_copies] = labels[features.clip[with_copies]]
        teacher_only = true_labels.copy()
        teacher_only[with_copies[len(train_idx):]] = UNLABELLED  # the augmented copies: teacher labels only
        fold_preds = {"teacher": teacher_logits[test_idx].argmax(-1).numpy()}
        recipes = {"distilled": (options.alpha, originals, true_labels),
                   "unlabelled": (options.alpha, np.concatenate([with_copies, other_rows]), teacher_only),
                   "hard": (0.0, originals, true_labels), "hard_copies": (0.0, with_copies, true_labels)}
        for kind in kinds:
            alpha, rows, row_labels = recipes[kind]
            t0 = time.perf_counter()
            chosen = [student_frames[i] for i in rows]
            model = train_light_student(chosen, row_labels[rows], teacher_logits[rows], names, replace(options, alpha=alpha))
            train_seconds[kind] += time.perf_counter() - t0
            fold_preds[kind] = predict_light(model, [student_frames[i] for i in test_idx])
            if kind == "distilled":
                last_student = model
        truth.extend(labels[test_idx].tolist())
        for kind, pred in fold_preds.items():
            preds[kind].extend(pred.tolist())
        per_fold.append({"fold": fold, "test_speakers": sorted(set(np.asarray(dataset["speaker"])[test_idx].tolist())),
                         **{kind: _uar(names, labels[test_idx].tolist(), p.tolist())["uar"] for kind, p in fold_preds.items()}})
        print(f"fold {fold}: " + ", ".join(f"{k} UAR {v:.3f}" for k, v in per_fold[-1].items() if k in preds), flush=True)

    pooled = {kind: _uar(names, truth, p) for kind, p in preds.items()}
    from ser.model import Predictor

    with tempfile.TemporaryDirectory() as tmp:
        teacher_dir, student_dir = Path(tmp) / "teacher", Path(tmp) / "student"
        build_probe(teacher, config, probe_options.backbone).save_pretrained(teacher_dir)
        save_student(last_student, student_extractor(options), student_dir, {"model_version": "distill-benchmark"})
        clips = [waves[i] for i in test_idx[: args.latency_clips]]
        teacher_p = Predictor.from_pretrained(teacher_dir, runtime="eager")
        student_p = Predictor.from_pretrained(student_dir, runtime="eager")
        agree = float(np.mean([max(student_p.predict(c), key=student_p.predict(c).get) == names[int(p)]
                               for c, p in zip(clips, fold_preds["distilled"])]))
        speed = {"teacher_s": latency(teacher_p, clips, args.repeats), "student_s": latency(student_p, clips, args.repeats)}
        sizes = {name: sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) for name, d in
                 (("teacher_head_bytes", teacher_dir), ("student_bytes", student_dir))}
    speed["ratio"] = speed["teacher_s"] / speed["student_s"]
    student_params = sum(p.numel() for p in last_student.parameters())
    teacher_params = sum(p.numel() for p in teacher_p.model.parameters())
    meta = {
        "corpus": "emodb", "clips": n, "augmented_copies": len(copies), "folds": len(folds),
        "unlabelled_corpora": args.unlabelled_corpora, "unlabelled_clips": len(other_waves),
        "teacher": f"{probe_options.backbone} probe ({probe_options.layer_mix} layer means, linear, L-BFGS), "
                   "fitted per fold on the training speakers",
        "student": f"{options.student} channels {list(options.channels)}", "options": asdict(options),
        "student_parameters": student_params, "teacher_parameters": teacher_params, **sizes,
        "latency_clips": len(clips), "latency_repeats": args.repeats, "runtime": "eager",
        "saved_student_agrees_with_in_memory": agree,
        "student_train_seconds": {k: round(v, 1) for k, v in train_seconds.items()},
        "seconds": round(time.perf_counter() - started, 1),
        "loadavg_before": loadavg_before, "loadavg_after": os.getloadavg(), "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
    }
    result = {"meta": meta, "pooled": pooled, "folds": per_fold, "latency": speed}
    table = markdown(result)
    print("\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "distill.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.out / "distill.md").write_text(table)
    return 0


def unlabelled_corpora(args: argparse.Namespace) -> Any:
    """``--unlabelled-clips`` clips of the ``--unlabelled-corpora`` (labels dropped), spread evenly over each
    corpus's rows; None when none are asked for or found."""
    from datasets import concatenate_datasets

    names = [name for name in args.unlabelled_corpora.split(",") if name]
    root = args.unlabelled_root or args.root.parent
    parts = [load_corpus(name, root / name) for name in names if (root / name).is_dir()]
    if not parts or args.unlabelled_clips <= 0:
        return None
    per = max(1, args.unlabelled_clips // len(parts))
    parts = [part.select(np.linspace(0, len(part) - 1, min(per, len(part))).round().astype(int).tolist())
             .select_columns(["audio", "path"]) for part in parts]
    return concatenate_datasets(parts)


def markdown(result: dict[str, Any]) -> str:
    meta, pooled, speed = result["meta"], result["pooled"], result["latency"]
    fold_uar = {kind: [fold[kind] for fold in result["folds"]] for kind in pooled}
    lines = [
        f"# Distillation on EmoDB: {meta['folds']} speaker folds, {meta['clips']} clips "
        f"(+ {meta['augmented_copies']} augmented copies and {meta.get('unlabelled_clips', 0)} clips of "
        f"{meta.get('unlabelled_corpora') or 'no other corpus'}, teacher-labelled)",
        "",
        f"Teacher: {meta['teacher']}. Student: {meta['student']}, {meta['options']['epochs']} epochs, "
        f"T = {meta['options']['temperature']}, alpha = {meta['options']['alpha']}.",
        "",
        "| model | UAR (pooled) | accuracy | macro-F1 | UAR per fold (mean ± std) | parameters | per-clip latency |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    extra = (f"{meta['augmented_copies']} augmented copies" if meta["augmented_copies"] else "",
             f"{meta.get('unlabelled_clips', 0)} clips of {meta.get('unlabelled_corpora')}" if meta.get("unlabelled_clips") else "")
    rows = (("teacher (Whisper base probe)", "teacher", meta["teacher_parameters"], speed["teacher_s"]),
            ("student, distilled (labelled clips)", "distilled", meta["student_parameters"], speed["student_s"]),
            (f"student, distilled + unlabelled ({' + '.join(e for e in extra if e)}, teacher labels only)", "unlabelled",
             meta["student_parameters"], speed["student_s"]),
            ("student, hard labels only", "hard", meta["student_parameters"], speed["student_s"]),
            ("student, hard labels + augmented copies (true labels)", "hard_copies", meta["student_parameters"], speed["student_s"]))
    for title, kind, params, seconds in rows:
        if kind not in pooled:
            continue
        m = pooled[kind]
        lines.append(f"| {title} | {m['uar']:.3f} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | "
                     f"{np.mean(fold_uar[kind]):.3f} ± {np.std(fold_uar[kind]):.3f} | {params:,} | {seconds * 1000:.1f} ms |")
    lines += [
        "",
        f"Student vs teacher latency: {speed['ratio']:.1f}x faster (median of {meta['latency_clips']} test clips x "
        f"{meta['latency_repeats']}, both loaded with Predictor.from_pretrained(runtime=\"eager\"), same run, "
        f"{meta['torch_threads']} torch thread). Student checkpoint {meta['student_bytes'] / 1024:.0f} KiB.",
        f"Whole run {meta['seconds']:.0f} s on {meta['cpus']} shared CPUs (load {meta['loadavg_before'][0]:.1f} before, "
        f"{meta['loadavg_after'][0]:.1f} after).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
