"""Noise robustness: EmoDB speaker-independent UAR when the test clips are noisy or reverberant.

The default model's probe recipe (frozen whisper-base-offline encoder, per-layer mean features,
linear head fit by L-BFGS with L2 0.01, ser/default_model/metrics.json "options"; the plain head
that serves a single clip) on the 4 classes of EmoDB, leave-one-speaker-out over a
speaker-stratified subset of ``--clips`` clips. Test clips are re-scored with:

- additive noise at ``--snrs`` dB SNR: white, pink (1/f, synthesised) and babble (the sum of four
  clips of *other* speakers from the whole corpus);
- reverberation: a synthetic room impulse response (exponentially decaying noise, RT60 0.6 s);

for these variants: the model as is (trained on clean clips); the same with each test clip denoised
(``ser.denoise``, ``--denoisers``) or trimmed to its speech (``ser.speech``); the head trained on
denoised clips and tested on denoised clips (what ``finetune probe --denoise`` trains and
``Predictor`` then serves: no extra encoding, the denoised clean clips are its training set); and the
head trained with noise augmentation (the training folds' features from every noisy copy too, the
same noise types and SNRs: a matched-condition upper bound).

DeepFilterNet3 costs about 2 s per second of audio on one core, so its run takes a subset:
``--conditions`` keeps only the named conditions (the noise of each is the one the full run uses).

    python benchmarks/robustness.py --root /path/to/emodb --clips 200 --snrs 20,10,5,0

Writes benchmarks/results/robustness.{json,md}. Every condition's features are encoded once per run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from finetune import probe as fp  # noqa: E402
from finetune.cache import encode_clip  # noqa: E402
from finetune.data import loso_folds, speaker_groups  # noqa: E402
from ser.corpora import label_names, load_corpus, waveform  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
RATE = 16000
RT60_S = 0.6
# The default model's head (ser/default_model/metrics.json "options"; one corpus, so "corpus"
# balance is class balance).
RECIPE = {"backbone": "whisper-base-offline", "optimizer": "lbfgs", "l2": 1e-2, "balance": "corpus", "adapt": False}


# --- conditions -----------------------------------------------------------------------------------


def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) + 1e-12


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f noise: white noise whose spectrum is shaped by 1/sqrt(f)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spectrum / np.sqrt(f), n)


def babble(n: int, others: list[np.ndarray], rng: np.random.Generator, talkers: int = 4) -> np.ndarray:
    """The sum of ``talkers`` clips of other speakers, each looped to length and at equal power."""
    out = np.zeros(n)
    for index in rng.choice(len(others), size=talkers, replace=False):
        clip = others[index]
        clip = np.tile(clip, n // len(clip) + 1)[rng.integers(len(clip)) :][:n]
        if len(clip) < n:
            clip = np.pad(clip, (0, n - len(clip)))
        out += clip / np.sqrt(power(clip))
    return out


def mix(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``clean`` plus ``noise`` scaled to ``snr_db`` (powers over the whole clip)."""
    scale = np.sqrt(power(clean) / (power(noise) * 10 ** (snr_db / 10)))
    return (clean + scale * noise).astype(np.float32)


def reverberate(clean: np.ndarray, rng: np.random.Generator, rt60_s: float = RT60_S) -> np.ndarray:
    """Convolution with a synthetic room: a direct path then exponentially decaying noise (-60 dB at RT60)."""
    t = np.arange(int(rt60_s * RATE)) / RATE
    rir = rng.standard_normal(len(t)) * np.exp(-6.908 * t / rt60_s) * 0.3
    rir[0] = 1.0
    wet = np.convolve(clean, rir)[: len(clean)]
    return (wet * np.sqrt(power(clean) / power(wet))).astype(np.float32)


def conditions(snrs: list[float]) -> list[str]:
    return ["clean"] + [f"{kind} {snr:g} dB" for kind in ("white", "pink", "babble") for snr in snrs] + ["reverb"]


def corrupt(clean: np.ndarray, condition: str, others: list[np.ndarray], seed: int) -> np.ndarray:
    """The clip under ``condition``; the noise is reproducible from ``seed``."""
    if condition == "clean":
        return clean
    rng = np.random.default_rng(seed)
    if condition == "reverb":
        return reverberate(clean, rng)
    kind, snr = condition.split()[0], float(condition.split()[1])
    noise = {
        "white": lambda: rng.standard_normal(len(clean)),
        "pink": lambda: pink_noise(len(clean), rng),
        "babble": lambda: babble(len(clean), others, rng),
    }[kind]()
    return mix(clean, noise, snr)


# --- data and features ----------------------------------------------------------------------------


def stratified_subset(dataset: Any, clips: int, seed: int = 0) -> np.ndarray:
    """About ``clips`` rows, the same number from each speaker (all of a speaker's if fewer), sorted."""
    groups = speaker_groups(dataset)
    speakers = sorted(set(groups.tolist()))
    per = max(1, -(-clips // len(speakers)))
    rng = np.random.default_rng(seed)
    rows = [rng.permutation(np.flatnonzero(groups == s))[:per] for s in speakers]
    return np.sort(np.concatenate(rows))[: max(clips, len(speakers))]


def features_of(waves: list[np.ndarray], backbone: str, desc: str) -> torch.Tensor:
    """(clips, layers, width) per-layer means, as ``finetune.cache`` computes them."""
    probe = fp.encoder_probe(backbone)
    started = time.perf_counter()
    out = torch.from_numpy(np.stack([encode_clip(probe, w).mean(axis=0) for w in waves])).float()
    print(f"encoded {desc}: {len(waves)} clips in {time.perf_counter() - started:.1f} s", flush=True)
    return out


def as_features(means: list[torch.Tensor]) -> fp.CachedFeatures:
    """Copies 0..k of every clip, in the layout ``finetune.probe`` trains on."""
    n = means[0].shape[0]
    return fp.CachedFeatures(torch.cat(means), None, np.tile(np.arange(n), len(means)), np.repeat(np.arange(len(means)), n))


def uar(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]))


def loso_predictions(
    dataset: Any,
    train_sets: dict[str, list[torch.Tensor]],
    test_sets: dict[tuple[str, str], torch.Tensor],
    options: fp.ProbeOptions | None = None,
) -> dict[tuple[str, str], np.ndarray]:
    """Per (training, test set): predicted class per clip, every clip predicted by the fold that held its speaker out."""
    options = options or fp.options_from(RECIPE)
    preds = {key: np.zeros(len(dataset), dtype=int) for key in test_sets}
    for train_idx, test_idx in loso_folds(dataset):
        for training, means in train_sets.items():
            head, _, _ = fp.fit_head(dataset, train_idx, as_features(means), options)
            for (trained_on, name), test in test_sets.items():
                if trained_on == training:
                    preds[(trained_on, name)][test_idx] = fp.predict_rows(head, as_features([test]), test_idx)
    return preds


# --- the benchmark --------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ser.denoise import denoise

    full = load_corpus("emodb", args.root, label_map="four-class")
    subset = stratified_subset(full, args.clips, args.seed)
    dataset = full.select(subset.tolist())
    groups_full = speaker_groups(full)
    waves_full = [waveform(row) for row in full.select_columns(["audio", "path"])]
    clean = [waves_full[i] for i in subset]
    groups = groups_full[subset]
    snrs = [float(s) for s in args.snrs.split(",") if s.strip()]
    every = conditions(snrs)
    wanted = [c.strip() for c in (args.conditions or "").split(",") if c.strip()]
    unknown = sorted(set(wanted) - set(every))
    if unknown:
        raise SystemExit(f"unknown conditions {unknown}; these exist: {', '.join(every)}")
    names = [c for c in every if not wanted or c in wanted]
    if "clean" not in names:
        names.insert(0, "clean")  # the clean-trained heads' training set
    started = time.perf_counter()
    noisy: dict[str, list[np.ndarray]] = {}
    for condition in names:
        c = every.index(condition)  # the full run's seed for this condition: the same noise
        noisy[condition] = []
        for i, (row, wave) in enumerate(zip(subset, clean)):
            others = [waves_full[j] for j in np.flatnonzero(groups_full != groups[i])]
            noisy[condition].append(corrupt(wave, condition, others, seed=args.seed * 100003 + c * 1009 + int(row)))
    backbone = args.backbone
    means = {condition: features_of(noisy[condition], backbone, condition) for condition in names}
    transforms: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        f"denoised ({method})": (lambda w, m=method: denoise(w, m)) for method in args.denoisers.split(",") if method
    }
    if args.trim:
        transforms["speech trimmed (VAD)"] = _trim_or_keep
    timing: dict[str, float] = {}
    test_sets: dict[tuple[str, str], torch.Tensor] = {("clean", f"as is|{c}"): means[c] for c in names}
    test_sets |= {("noisy", f"noise-trained|{c}"): means[c] for c in names}
    for variant, transform in transforms.items():
        spent = 0.0
        for condition in names:
            t0 = time.perf_counter()
            processed = [transform(w) for w in noisy[condition]]
            spent += time.perf_counter() - t0
            test_sets[("clean", f"{variant}|{condition}")] = features_of(processed, backbone, f"{variant}, {condition}")
        audio_s = sum(len(w) for c in names for w in noisy[c]) / RATE
        timing[variant] = spent / audio_s
    train_sets = {"clean": [means["clean"]], "noisy": [means[c] for c in names]}
    denoisers = [m for m in args.denoisers.split(",") if m]
    for method in denoisers:  # trained on denoised clips, served denoised (finetune probe --denoise)
        train_sets[f"denoised-{method}"] = [test_sets[("clean", f"denoised ({method})|clean")]]
        test_sets |= {(f"denoised-{method}", f"trained and tested denoised ({method})|{c}"):
                      test_sets[("clean", f"denoised ({method})|{c}")] for c in names}
    preds = loso_predictions(dataset, train_sets, test_sets, fp.options_from({**RECIPE, "backbone": backbone}))
    y = np.asarray(dataset["label"])
    table: dict[str, dict[str, float]] = {}
    for (_, key), pred in preds.items():
        variant, condition = key.split("|")
        table.setdefault(variant, {})[condition] = uar(y, pred)
    order = ["as is", *transforms, *(f"trained and tested denoised ({m})" for m in denoisers), "noise-trained"]
    return {
        "clips": len(subset),
        "speakers": len(set(groups.tolist())),
        "labels": label_names(dataset),
        "snrs": snrs,
        "conditions": names,
        "recipe": {**RECIPE, "backbone": backbone},
        "uar": {variant: table[variant] for variant in order},
        "preprocessing_real_time_factor": timing,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _trim_or_keep(wave: np.ndarray) -> np.ndarray:
    """Trimmed to its speech; a clip in which VAD finds none is kept whole (it must still be scored)."""
    from ser import speech

    regions = speech.speech_regions(wave)
    return speech.trim_to_speech(wave, regions) if regions else wave


def markdown(result: dict[str, Any]) -> str:
    names = result["conditions"]
    lines = [
        f"# Noise robustness: EmoDB 4-class UAR, leave-one-speaker-out, {result['clips']} clips "
        f"({result['speakers']} speakers, speaker-stratified subset)",
        "",
        "The default model's probe recipe (whisper-base-offline, linear head, plain single-clip head); test clips "
        "with additive noise at the given SNR (babble: four other speakers' clips summed) or a synthetic "
        f"room (RT60 {RT60_S} s). Variants: trained on clean clips as is, with the test clip denoised or trimmed "
        "to its speech, trained and tested on denoised clips (`finetune probe --denoise`), and trained with the "
        "noise types of this table as augmentation (matched conditions). "
        "Regenerate: `python benchmarks/robustness.py --root DIR --clips N --snrs ...`.",
        "",
        "| variant | " + " | ".join(names) + " | mean (noisy) |",
        "|---|" + "---:|" * (len(names) + 1),
    ]
    for variant, row in result["uar"].items():
        noisy = [row[c] for c in names if c != "clean"]
        lines.append(f"| {variant} | " + " | ".join(f"{row[c]:.3f}" for c in names) + f" | {np.mean(noisy):.3f} |")
    if result["preprocessing_real_time_factor"]:
        lines += ["", "Preprocessing time per second of audio (this run, loaded 2-core machine): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in result["preprocessing_real_time_factor"].items()) + "."]
    return "\n".join(lines) + "\n"


def write_results(out_path: str, result: dict[str, Any], table: str) -> None:
    """``OUT.json`` (the result with its date and machine) and ``OUT.md`` (the table), and print the table."""
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.processor() or platform.machine()}
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, **result}, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(table, encoding="utf-8")
    print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="EmoDB folder (holding wav/)")
    parser.add_argument("--clips", type=int, default=200, help="speaker-stratified subset size")
    parser.add_argument("--snrs", default="20,10,5,0", help="SNRs in dB, comma-separated")
    parser.add_argument("--denoisers", default="spectral", help="ser.denoise methods to test, comma-separated ('' for none)")
    parser.add_argument("--conditions", default=None,
                        help="only these conditions, comma-separated, e.g. 'clean,white 5 dB,babble 5 dB' (default: all)")
    parser.add_argument("--trim", action=argparse.BooleanOptionalAction, default=True, help="the VAD-trimmed variant")
    parser.add_argument("--backbone", default=RECIPE["backbone"], help="encoder of the probe (tests: a tiny one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "robustness"), help="output path without suffix")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    result = run(args)
    write_results(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
