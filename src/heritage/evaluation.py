"""Metrics, calibration and reports for a classifier's predicted probabilities.

Pure numpy / scikit-learn / matplotlib (no torch), so evaluation can run anywhere the
predictions have been saved. Plots are drawn on an explicit ``Figure`` with an Agg canvas,
never through ``pyplot``, so callers' backend choice and global figure state are untouched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

__all__ = [
    "ClassReport",
    "Evaluation",
    "confidence_ece",
    "ece_noise_floor",
    "evaluate",
    "expected_calibration_error",
    "plot_confusion",
    "plot_reliability",
    "reliability_table",
    "top_k",
    "write_predictions_csv",
    "write_report",
]

_ROW_SUM_TOL = 1e-3
_NLL_EPS = 1e-12
_MAX_FIG_INCHES = 24.0


@dataclass
class ClassReport:
    """Precision / recall / F1 / support for one class."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class Evaluation:
    """All headline metrics for one set of predictions.

    ``y_true`` and ``proba`` are kept (but not serialised) so reports can draw the
    reliability diagram without the caller passing the raw arrays again.
    """

    classes: list[str]
    n: int
    top1: float
    top5: float | None
    macro_f1: float
    ece: float
    nll: float
    per_class: list[ClassReport]
    confusion: np.ndarray
    y_true: np.ndarray | None = field(default=None, repr=False, compare=False)
    proba: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        """JSON-serialisable view (plain lists / floats / ints; raw arrays excluded)."""
        return {
            "classes": list(self.classes),
            "n": int(self.n),
            "top1": float(self.top1),
            "top5": None if self.top5 is None else float(self.top5),
            "macro_f1": float(self.macro_f1),
            "ece": float(self.ece),
            "nll": float(self.nll),
            "per_class": [
                {
                    "name": r.name,
                    "precision": float(r.precision),
                    "recall": float(r.recall),
                    "f1": float(r.f1),
                    "support": int(r.support),
                }
                for r in self.per_class
            ],
            "confusion": np.asarray(self.confusion).astype(int).tolist(),
        }

    def summary(self) -> str:
        """One line for logs, e.g. ``top-1 0.952 · macro-F1 0.948 · ECE 0.031 · n=71``."""
        return (
            f"top-1 {self.top1:.3f} · macro-F1 {self.macro_f1:.3f} · "
            f"ECE {self.ece:.3f} · n={self.n}"
        )


# --------------------------------------------------------------------------- validation


def _validate(
    y_true: Any, proba: Any, n_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes/ranges early: silent broadcasting or logits give plausible-looking nonsense."""
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"proba must be 2-D (n_samples, n_classes); got shape {p.shape}")
    if n_classes is not None and p.shape[1] != n_classes:
        raise ValueError(f"proba has {p.shape[1]} columns but {n_classes} classes were given")
    if p.shape[0] == 0:
        raise ValueError("cannot evaluate zero samples")
    if not np.all(np.isfinite(p)):
        raise ValueError("proba contains NaN or infinite values")
    row_sums = p.sum(axis=1)
    if np.any(p < -_ROW_SUM_TOL) or np.any(np.abs(row_sums - 1.0) > _ROW_SUM_TOL):
        worst = float(row_sums[np.argmax(np.abs(row_sums - 1.0))])
        raise ValueError(
            "proba rows must be probabilities that sum to 1 (tolerance 1e-3); "
            f"found a row summing to {worst:.4f}. Pass softmax probabilities, not logits."
        )

    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D; got shape {y.shape}")
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"y_true has {y.shape[0]} labels but proba has {p.shape[0]} rows")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise ValueError(f"y_true must contain integer class indices; got dtype {y.dtype}")
    y = y.astype(np.int64)
    c = p.shape[1]
    if np.any(y < 0) or np.any(y >= c):
        bad = y[(y < 0) | (y >= c)]
        raise ValueError(f"y_true contains labels outside [0, {c - 1}] (e.g. {int(bad[0])})")
    return y, p


# --------------------------------------------------------------------------- metrics


def _bin_index(conf: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Equal-width bins on [0, 1], right-closed (lower, upper] so conf=1.0 lands in the top bin."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.searchsorted(edges[1:-1], conf, side="left")
    return np.clip(idx, 0, n_bins - 1), edges


def reliability_table(y_true: Any, proba: Any, n_bins: int = 15) -> pd.DataFrame:
    """Per-bin count / mean confidence / accuracy on max-probability; the data behind ECE.

    Empty bins are kept (count 0, NaN confidence/accuracy) so the table always has
    ``n_bins`` rows with fixed edges.
    """
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    y, p = _validate(y_true, proba)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    idx, edges = _bin_index(conf, n_bins)
    counts = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(counts > 0, conf_sum / np.maximum(counts, 1), np.nan)
        mean_acc = np.where(counts > 0, acc_sum / np.maximum(counts, 1), np.nan)
    return pd.DataFrame(
        {
            "bin_lower": edges[:-1],
            "bin_upper": edges[1:],
            "count": counts.astype(int),
            "confidence": mean_conf,
            "accuracy": mean_acc,
        }
    )


def expected_calibration_error(y_true: Any, proba: Any, n_bins: int = 15) -> float:
    """Count-weighted mean |accuracy - confidence| over equal-width max-probability bins."""
    table = reliability_table(y_true, proba, n_bins=n_bins)
    filled = table[table["count"] > 0]
    n = filled["count"].sum()
    gap = (filled["accuracy"] - filled["confidence"]).abs()
    return float((filled["count"] * gap).sum() / n)


def confidence_ece(confidence: Any, correct: Any, n_bins: int = 15) -> float:
    """ECE from the shown confidences and whether each shown value was right: the same
    binning as :func:`expected_calibration_error`, for predictions pooled across tasks with
    different class sets (e.g. every property of a metadata predictor)."""
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if conf.ndim != 1 or conf.shape != ok.shape or len(conf) == 0:
        raise ValueError("confidence and correct must be non-empty 1-D arrays of equal length")
    idx, _ = _bin_index(conf, n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=ok, minlength=n_bins)
    return float(np.abs(acc_sum - conf_sum).sum() / len(conf))


def ece_noise_floor(proba: Any, n_bins: int = 15, draws: int = 200, seed: int = 0) -> float:
    """The ECE a *perfectly calibrated* model with these confidences would still show on a
    sample this size: each row is drawn correct with probability equal to its confidence,
    and the binned ECE of the draw is averaged over ``draws``. ``proba``: (n, classes)
    probabilities, or the (n,) confidences themselves.

    Why: binned ECE is biased upwards on small samples (each bin's accuracy is a noisy
    proportion), so a measured ECE of 0.05 on 250 records can be pure sampling noise. Read a
    measured ECE against this floor, not against zero.
    """
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim not in (1, 2) or len(p) == 0:
        raise ValueError("proba must be non-empty (n, classes) probabilities or (n,) confidences")
    conf = p.max(axis=1) if p.ndim == 2 else p
    rng = np.random.default_rng(seed)
    draws_ece = [confidence_ece(conf, rng.random(len(conf)) < conf, n_bins) for _ in range(draws)]
    return float(np.mean(draws_ece))


def _topk_indices(p: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest per row, highest first; ties go to the lower index."""
    return np.argsort(-p, axis=1, kind="stable")[:, :k]


def evaluate(y_true: Any, proba: Any, classes: Sequence[str]) -> Evaluation:
    """Compute every headline metric from labels and softmax probabilities."""
    classes = [str(c) for c in classes]
    c = len(classes)
    if c == 0:
        raise ValueError("classes must not be empty")
    y, p = _validate(y_true, proba, n_classes=c)
    labels = list(range(c))
    pred = p.argmax(axis=1)

    top1 = float(np.mean(pred == y))
    top5: float | None = None
    if c >= 6:
        top5 = float(np.mean(np.any(_topk_indices(p, 5) == y[:, None], axis=1)))

    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    # macro-F1 over the classes that occur (in truth or prediction), as scikit-learn does by
    # default: a class absent from this split must not count as an F1 of 0
    macro = float(np.mean(f1[np.union1d(y, pred)]))
    per_class = [
        ClassReport(
            name=classes[i],
            precision=float(prec[i]),
            recall=float(rec[i]),
            f1=float(f1[i]),
            support=int(sup[i]),
        )
        for i in range(c)
    ]
    nll = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], _NLL_EPS, 1.0))))
    cm = confusion_matrix(y, pred, labels=labels).astype(int)
    return Evaluation(
        classes=classes,
        n=len(y),
        top1=top1,
        top5=top5,
        macro_f1=macro,
        ece=expected_calibration_error(y, p),
        nll=nll,
        per_class=per_class,
        confusion=cm,
        y_true=y,
        proba=p,
    )


# --------------------------------------------------------------------------- plots


def _new_figure(width: float, height: float) -> Any:
    """Figure bound to an Agg canvas: no pyplot, no global state, backend-independent."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Any, dpi: int = 100) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=dpi)
    return out


def plot_confusion(
    evaluation: Evaluation,
    path: Any,
    *,
    normalise: bool = True,
    title: str | None = None,
) -> Path:
    """Confusion matrix PNG (rows = true). Row-normalised shows per-class recall at a glance."""
    cm = np.asarray(evaluation.confusion, dtype=np.float64)
    c = cm.shape[0]
    if normalise:
        row = cm.sum(axis=1, keepdims=True)
        data = np.divide(cm, row, out=np.zeros_like(cm), where=row > 0)
    else:
        data = cm

    size = float(min(_MAX_FIG_INCHES, max(5.0, 0.38 * c + 3.0)))
    fig = _new_figure(size, size)
    ax = fig.add_subplot()
    vmax = 1.0 if normalise else max(float(data.max()), 1.0)
    im = ax.imshow(data, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, shrink=1.0 if c <= 25 else 0.5)

    tick_fs = 10 if c <= 20 else 8  # at the 24-inch cap each row still has ~0.4 inch
    ax.set_xticks(range(c))
    ax.set_yticks(range(c))
    ax.set_xticklabels(
        evaluation.classes, rotation=60, ha="right", fontsize=tick_fs, rotation_mode="anchor"
    )
    ax.set_yticklabels(evaluation.classes, fontsize=tick_fs)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    default = "Confusion matrix (row-normalised)" if normalise else "Confusion matrix"
    ax.set_title(title or default)

    if c <= 25:
        ann_fs = 9 if c <= 12 else 7
        for i in range(c):
            for j in range(c):
                v = data[i, j]
                text = f"{v:.2f}" if normalise else f"{int(v)}"
                colour = "white" if v > 0.6 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=ann_fs)
    return _save(fig, path)


def plot_reliability(
    y_true: Any,
    proba: Any,
    path: Any,
    *,
    n_bins: int = 15,
    title: str | None = None,
) -> Path:
    """Reliability diagram: bars below the diagonal mean over-confidence."""
    table = reliability_table(y_true, proba, n_bins=n_bins)
    ece = expected_calibration_error(y_true, proba, n_bins=n_bins)
    width = 1.0 / n_bins
    centres = (table["bin_lower"] + table["bin_upper"]).to_numpy() / 2
    acc = table["accuracy"].fillna(0.0).to_numpy()
    conf = table["confidence"].fillna(0.0).to_numpy()
    filled = table["count"].to_numpy() > 0

    fig = _new_figure(6.0, 7.0)
    ax, ax_hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.bar(
        centres[filled],
        acc[filled],
        width=width,
        edgecolor="black",
        color="#4c72b0",
        label="accuracy",
    )
    ax.bar(
        centres[filled],
        (conf - acc)[filled],
        bottom=acc[filled],
        width=width,
        fill=False,  # hatched outline: the accuracy bar under it stays readable
        hatch="//",
        edgecolor="#c44e52",
        label="gap to mean confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Accuracy")
    ax.set_title(title or f"Reliability (ECE {ece:.3f})")
    ax.legend(loc="upper left")
    ax_hist.bar(centres, table["count"].to_numpy(), width=width, color="grey", edgecolor="black")
    ax_hist.set_xlabel("Confidence (max probability)")
    ax_hist.set_ylabel("Count")
    return _save(fig, path)


# --------------------------------------------------------------------------- reports


def _md_cell(value: Any) -> str:
    """Escape pipes/newlines so class names can't break the Markdown table."""
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _json_default(obj: Any) -> Any:
    """Let numpy scalars / arrays / paths in ``extra`` serialise."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


def write_report(
    evaluation: Evaluation,
    out_dir: Any,
    *,
    title: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write metrics.json, confusion.png, reliability.png and report.md; return name -> path.

    reliability.png needs the raw predictions, so it is skipped (and not linked) when the
    Evaluation was built by hand without ``y_true``/``proba``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})
    paths: dict[str, Path] = {}

    payload = evaluation.to_dict()
    payload["extra"] = extra
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    paths["metrics"] = metrics_path

    paths["confusion"] = plot_confusion(evaluation, out / "confusion.png")
    has_raw = evaluation.y_true is not None and evaluation.proba is not None
    if has_raw:
        paths["reliability"] = plot_reliability(
            evaluation.y_true, evaluation.proba, out / "reliability.png"
        )

    lines = [f"# {title}", "", evaluation.summary(), "", "## Summary", ""]
    lines += ["| metric | value |", "|---|---|"]
    lines.append(f"| samples | {evaluation.n} |")
    lines.append(f"| classes | {len(evaluation.classes)} |")
    lines.append(f"| top-1 accuracy | {evaluation.top1:.4f} |")
    if evaluation.top5 is not None:
        lines.append(f"| top-5 accuracy | {evaluation.top5:.4f} |")
    lines.append(f"| macro-F1 | {evaluation.macro_f1:.4f} |")
    lines.append(f"| ECE (15 bins) | {evaluation.ece:.4f} |")
    lines.append(f"| NLL | {evaluation.nll:.4f} |")

    if extra:
        lines += ["", "## Run", "", "| key | value |", "|---|---|"]
        lines += [f"| {_md_cell(k)} | {_md_cell(v)} |" for k, v in extra.items()]

    lines += ["", "## Per-class (worst F1 first)", ""]
    lines += ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for r in sorted(evaluation.per_class, key=lambda r: (r.f1, r.name)):
        lines.append(
            f"| {_md_cell(r.name)} | {r.precision:.3f} | {r.recall:.3f} | "
            f"{r.f1:.3f} | {r.support} |"
        )

    lines += ["", "## Confusion matrix", "", "![confusion](confusion.png)"]
    if has_raw:
        lines += ["", "## Calibration", "", "![reliability](reliability.png)"]
    lines += [
        "",
        "**How to read this:** ECE is the average gap between the model's confidence and "
        "its actual accuracy (0 = perfectly calibrated); bars below the diagonal in the "
        "reliability diagram mean the model is over-confident.",
        "",
    ]
    report_path = out / "report.md"
    report_path.write_text("\n".join(lines))
    paths["report"] = report_path
    return paths


def top_k(proba: np.ndarray, classes: Sequence[str], k: int = 3) -> list[list[tuple[str, float]]]:
    """Per row, the k most likely (class, probability) pairs, highest first (k clipped to C)."""
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(classes):
        raise ValueError(f"proba must have shape (n, {len(classes)}); got {p.shape}")
    if k < 1:
        raise ValueError("k must be >= 1")
    k = min(k, p.shape[1])
    idx = _topk_indices(p, k)
    names = [str(c) for c in classes]
    return [[(names[j], float(p[i, j])) for j in row] for i, row in enumerate(idx)]


def write_predictions_csv(
    ids: Sequence[str],
    proba: np.ndarray,
    classes: Sequence[str],
    path: Any,
    *,
    k: int = 3,
) -> Path:
    """CSV of the top-k labels per image: image, label_1, confidence_1, ..., label_k, ..."""
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or len(ids) != p.shape[0]:
        raise ValueError(f"got {len(ids)} ids for proba of shape {p.shape}")
    preds = top_k(p, classes, k=k)
    k = min(k, p.shape[1])
    columns: dict[str, list[Any]] = {"image": [str(i) for i in ids]}
    for r in range(k):
        columns[f"label_{r + 1}"] = [row[r][0] for row in preds]
        columns[f"confidence_{r + 1}"] = [round(row[r][1], 6) for row in preds]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(columns).to_csv(out, index=False)
    return out
