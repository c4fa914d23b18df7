"""Write an evaluation as a Markdown report plus two PNG plots, for humans and model cards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def write_report(metrics: dict[str, Any], out_dir: str | Path, *, title: str = "Evaluation") -> dict[str, Path]:
    """Write ``report.md``, ``confusion_matrix.png`` and ``per_class.png`` into ``out_dir``.

    ``metrics`` is what :func:`ser.metrics.compute_metrics` returns. Returns the written paths by kind.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "report": out / "report.md",
        "confusion_matrix": out / "confusion_matrix.png",
        "per_class": out / "per_class.png",
    }
    paths["report"].write_text(markdown(metrics, title=title), encoding="utf-8")
    plot_confusion_matrix(metrics, paths["confusion_matrix"], title=title)
    plot_per_class(metrics, paths["per_class"], title=title)
    return paths


def markdown(metrics: dict[str, Any], *, title: str = "Evaluation") -> str:
    """The report as Markdown: summary, per-class table, confusion matrix (counts)."""
    labels = metrics["labels"]
    lines = [
        f"# {title}",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| accuracy | {metrics['accuracy']:.4f} |",
        f"| UAR (unweighted average recall) | {metrics['uar']:.4f} |",
        f"| macro-F1 | {metrics['macro_f1']:.4f} |",
        f"| clips | {metrics.get('n', sum(sum(row) for row in metrics['confusion_matrix']))} |",
        "",
        "## Per class",
        "",
        "| class | precision | recall | F1 | support |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label in labels:
        row = metrics["per_class"][label]
        lines.append(
            f"| {label} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {row['support']} |"
        )
    lines += [
        "",
        "## Confusion matrix (rows: reference, columns: prediction)",
        "",
        "| reference \\ predicted | " + " | ".join(labels) + " |",
        "| --- |" + " --- |" * len(labels),
    ]
    for label, row in zip(labels, metrics["confusion_matrix"]):
        lines.append(f"| {label} | " + " | ".join(str(count) for count in row) + " |")
    return "\n".join(lines) + "\n"


def plot_confusion_matrix(metrics: dict[str, Any], path: Path, *, title: str) -> None:
    """Rows normalised to recall (so small classes read as clearly as big ones), counts in each cell."""
    labels = metrics["labels"]
    counts = np.asarray(metrics["confusion_matrix"], dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    size = max(4.0, 0.8 * len(labels) + 2.0)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of reference row")
    for i in range(len(labels)):
        for j in range(len(labels)):
            colour = "white" if normalised[i, j] > 0.5 else "black"
            ax.text(j, i, f"{normalised[i, j]:.2f}\n({int(counts[i, j])})", ha="center", va="center",
                    color=colour, fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(f"{title}\nUAR {metrics['uar']:.3f} · accuracy {metrics['accuracy']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_per_class(metrics: dict[str, Any], path: Path, *, title: str) -> None:
    """Grouped bars of precision, recall and F1 per class."""
    labels = metrics["labels"]
    keys = ("precision", "recall", "f1")
    x = np.arange(len(labels))
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) + 2.0), 4.0))
    for k, key in enumerate(keys):
        values = [metrics["per_class"][label][key] for label in labels]
        ax.bar(x + (k - 1) * width, values, width, label=key)
    ax.set_xticks(x, labels, rotation=45, ha="right")
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("score")
    ax.set_title(f"{title}: per class (macro-F1 {metrics['macro_f1']:.3f})")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
