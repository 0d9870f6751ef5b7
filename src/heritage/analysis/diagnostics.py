"""The usual diagnostics beside the decompositions: training curves, a bias–variance bar
chart, and the most confident mistakes as thumbnails. Confusion matrix, per-class scores and
the reliability diagram come from :mod:`heritage.evaluation` unchanged."""

from __future__ import annotations

import base64
import io
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from heritage.evaluation import _new_figure, _save

__all__ = [
    "ConfidentMistake",
    "confident_mistakes",
    "plot_decomposition",
    "plot_training_curves",
    "thumbnail_data_uri",
]


def plot_training_curves(
    history: Sequence[dict],
    path: str | Path,
    *,
    pool_epochs: Collection[int] = (),
    greedy_epochs: Collection[int] = (),
) -> Path:
    """Losses and validation scores per epoch (history.json), with the epochs whose
    checkpoints are in the pool (grey dotted) and in the greedy soup (red dashed) marked."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    table = pd.DataFrame(list(history))
    fig = _new_figure(10.0, 4.0)
    ax_loss, ax_score = fig.subplots(1, 2)
    marks = [
        Line2D([], [], color="grey", linestyle=":", label="pool checkpoint"),
        Line2D([], [], color="#d62728", linestyle="--", label="in the greedy soup"),
    ]
    for ax, columns in (
        (ax_loss, ("train_loss", "val_loss")),
        (ax_score, ("val_top1", "val_macro_f1")),
    ):
        for epoch in pool_epochs:
            taken = epoch in greedy_epochs
            ax.axvline(
                epoch,
                color="#d62728" if taken else "grey",
                linestyle="--" if taken else ":",
                linewidth=1.0,
                alpha=0.7,
                zorder=0,
            )
        handles = []
        for column in columns:
            if column in table:
                rows = table[["epoch", column]].dropna()
                (line,) = ax.plot(
                    rows["epoch"], rows[column], marker="o", markersize=3, label=column
                )
                handles.append(line)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.legend(handles=handles + (marks if pool_epochs else []), fontsize=8)
        ax.grid(alpha=0.3)
    ax_loss.set_title("Loss")
    ax_score.set_title("Validation scores")
    return _save(fig, path)


def plot_decomposition(table: pd.DataFrame, path: str | Path) -> Path:
    """Grouped bars of error, bias and variance per method, for 0-1 loss (net variance) and
    cross-entropy (a :func:`~heritage.analysis.bias_variance.compare_methods` table)."""
    fig = _new_figure(11.0, 4.2)
    axes = fig.subplots(1, 2)
    methods = [str(m).replace("_", "\n") for m in table.index]
    x = np.arange(len(table))
    panels = (
        ("0-1 loss", ("error_01", "bias_01", "net_variance_01")),
        ("cross-entropy", ("error_ce", "bias_ce", "variance_ce")),
    )
    colours = ("#4c72b0", "#dd8452", "#55a868")
    for ax, (title, columns) in zip(axes, panels, strict=True):
        for i, (column, colour) in enumerate(zip(columns, colours, strict=True)):
            label = column.rsplit("_", 1)[0].replace("_", " ")
            ax.bar(x + (i - 1) * 0.27, table[column], width=0.27, color=colour, label=label)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xticks(x)
        ax.set_xticklabels(methods, fontsize=8)
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


@dataclass
class ConfidentMistake:
    """A wrong prediction made with high confidence: the images to look at first."""

    index: int  # row in the split
    image: str
    true: str
    predicted: str
    confidence: float  # probability of the predicted class
    true_probability: float

    def to_dict(self) -> dict:
        return asdict(self)


def confident_mistakes(
    proba: np.ndarray,
    y: np.ndarray,
    paths: Sequence[str],
    classes: Sequence[str],
    k: int = 12,
) -> list[ConfidentMistake]:
    """The ``k`` wrong predictions with the highest confidence, most confident first."""
    p = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y)
    pred = p.argmax(axis=1)
    conf = p.max(axis=1)
    wrong = np.flatnonzero(pred != y)
    order = wrong[np.argsort(-conf[wrong], kind="stable")][:k]
    return [
        ConfidentMistake(
            index=int(i),
            image=str(paths[i]),
            true=str(classes[y[i]]),
            predicted=str(classes[pred[i]]),
            confidence=float(conf[i]),
            true_probability=float(p[i, y[i]]),
        )
        for i in order
    ]


def thumbnail_data_uri(path: str | Path, size: int = 128) -> str | None:
    """A PNG thumbnail of an image as a ``data:`` URI, or None if it cannot be read."""
    from heritage.collection import load_image

    try:
        img = load_image(path)
    except (OSError, ValueError):
        return None
    img.thumbnail((size, size))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
