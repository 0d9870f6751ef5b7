"""``heritage analyse``: one self-contained HTML report (and a JSON of its numbers) per run.

:func:`analyse` reads a run folder written by ``heritage train`` / ``heritage soup`` — also a
partial one — and puts in one place what explains its results:

* the bias–variance decomposition of the test error over the run's checkpoints (0-1 loss:
  Domingos; cross-entropy: Heskes), and where the best checkpoint, the soups and soft voting
  land relative to it;
* the checkpoint geometry: symmetric cross-entropy distances between the models' predictions,
  the symmetrised KL divergence derived from them, an MDS map marking the greedy soup's
  ingredients;
* training curves, confusion matrix, per-class F1, reliability diagram with ECE, and the most
  confident mistakes as thumbnails.

Each model's probabilities are computed once per split and cached
(:mod:`heritage.analysis.probabilities`); soft voting is the mean of the checkpoints'
probabilities, with no extra forward pass. What cannot be computed (no soups yet, one
checkpoint, no history) is listed in the report with the command that would make it.

Within one run a soup is one model, so its own variance is only defined across runs:
:func:`analyse_runs` takes runs of the same collection with different seeds (or resampled
training sets) and decomposes each method's error across them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from heritage import __version__
from heritage.analysis.bias_variance import compare_methods, describe_changes
from heritage.analysis.diagnostics import (
    ConfidentMistake,
    confident_mistakes,
    plot_decomposition,
    plot_training_curves,
    thumbnail_data_uri,
)
from heritage.analysis.geometry import SOUPS, Geometry, checkpoint_geometry, plot_geometry
from heritage.analysis.html import png_data_uri, render
from heritage.analysis.probabilities import split_probabilities
from heritage.evaluation import (
    Evaluation,
    _json_default,
    evaluate,
    plot_confusion,
    plot_reliability,
)
from heritage.locking import folder_lock
from heritage.model import load_card
from heritage.modelfile import model_paths
from heritage.progress import console
from heritage.training.pool import epoch_of
from heritage.training.runfolder import group_members

__all__ = ["AnalysisResult", "SeedAnalysis", "Skipped", "analyse", "analyse_runs"]

#: single-model methods compared with the checkpoints, in report order
METHODS = ("best_checkpoint", "uniform_soup", "greedy_soup", "soft_voting")
REFERENCE = "single_checkpoints"


@dataclass
class Skipped:
    """A part of the report that could not be made, why, and the command that would make it."""

    what: str
    reason: str
    command: str | None = None


@dataclass
class AnalysisResult:
    """Everything :func:`analyse` computed for one run (the report shows it, the JSON has it)."""

    run: Path
    split: str
    classes: list[str]
    checkpoints: list[str]  # pool names, in epoch order
    best_checkpoint: str  # by validation macro-F1
    methods: list[str]  # available single-model methods of METHODS
    reference: str  # model the diagnostics describe: greedy soup if cooked, else best ckpt
    decomposition: pd.DataFrame  # compare_methods over the checkpoints and each method
    summary: list[str]  # generated sentences on variance removed / bias added
    geometry: Geometry | None
    greedy_ingredients: list[str]
    mistakes: list[ConfidentMistake]
    skipped: list[Skipped]
    notes: list[str]
    report: Path
    json: Path
    targets: np.ndarray = field(repr=False)
    paths: list[str] = field(repr=False)
    probas: dict[str, np.ndarray] = field(repr=False)  # every model, incl. soft_voting
    evaluations: dict[str, Evaluation] = field(repr=False)  # every model and method


@dataclass
class SeedAnalysis:
    """The across-seed decomposition of :func:`analyse_runs`, plus each run's own analysis."""

    runs: list[AnalysisResult]
    split: str
    n_images: int  # test images shared by every run
    decomposition: pd.DataFrame
    summary: list[str]
    skipped: list[Skipped]
    report: Path
    json: Path


# ------------------------------------------------------------------------------- helpers


def _read_json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _ingredients(run_folder: Path, soup: str, summary: dict) -> list[str] | None:
    """Checkpoint names a soup was cooked from: soups/soups.json, else the soup's card."""
    entry = summary.get(soup)
    if isinstance(entry, dict) and isinstance(entry.get("ingredients"), list):
        return [str(n) for n in entry["ingredients"]]
    path = run_folder / "soups" / soup
    if model_paths(path)[1].is_file():
        found = load_card(path).provenance.get("ingredients")
        return [str(n) for n in found] if isinstance(found, list) else None
    return None


def _missing_checkpoints(run) -> list[str]:
    """Names in pool.json whose files are gone (the pool left them out when it opened)."""
    index = _read_json(run.pool.index_path) or {}
    listed = [e.get("name") for e in index.get("entries", []) if isinstance(e, dict)]
    present = {e.name for e in run.pool.entries}
    return [str(n) for n in listed if n and n not in present]


def _decomposition_table(frame: pd.DataFrame) -> dict:
    header = [
        "method",
        "models",
        "0-1 error",
        "bias",
        "variance",
        "unbiased var.",
        "biased var.",
        "net variance",
        "CE",
        "CE bias",
        "CE variance",
    ]
    rows = [
        [str(m).replace("_", " "), int(r.models), *(float(v) for v in r.iloc[1:])]
        for m, r in frame.iterrows()
    ]
    return {"header": header, "rows": rows}


def _write_json(path: Path, payload: dict) -> Path:
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    return path


def _greedy_diversity(geometry: Geometry, checkpoints: list[str], greedy: list[str]) -> str | None:
    """A sentence comparing the divergence among the greedy ingredients with all checkpoints."""
    index = {n: i for i, n in enumerate(geometry.names)}
    taken = [index[n] for n in greedy if n in index]
    pool = [index[n] for n in checkpoints if n in index]
    if len(pool) < 3 or len(taken) < 2:
        return None

    def mean_pair(ids: list[int]) -> float:
        sub = geometry.divergence[np.ix_(ids, ids)]
        return float(sub[np.triu_indices(len(ids), 1)].mean())

    inside, overall = mean_pair(taken), mean_pair(pool)
    word = "more" if inside > overall else "less"
    return (
        f"The greedy soup's {len(taken)} ingredients are {word} spread out than the pool: mean "
        f"symmetrised KL {inside:.4f} between ingredients vs {overall:.4f} between any two "
        "checkpoints."
    )


def _find_models(
    run, skipped: list[Skipped], notes: list[str]
) -> tuple[dict[str, Path], list[str]]:
    """Model files to analyse (pool checkpoints, then the soups present) and the greedy soup's
    ingredients; what is missing goes to ``skipped``, stale soups to ``notes``."""
    models = {e.name: run.pool.folder / e.name for e in run.pool.entries}
    checkpoints = set(models)
    for name in _missing_checkpoints(run):
        skipped.append(
            Skipped(f"checkpoint {name}", "listed in pool/pool.json but its files are missing")
        )
    summary = _read_json(run.folder / "soups" / "soups.json")
    summary = summary if isinstance(summary, dict) else {}
    for soup in SOUPS:
        if not model_paths(run.model_path(soup))[0].is_file():
            skipped.append(
                Skipped(
                    soup.replace("_", " "),
                    f"{run.folder / 'soups'} has no {soup}, so it is missing from the tables, "
                    "the bias–variance comparison and the geometry map",
                    f"heritage soup {run.folder}",
                )
            )
            continue
        models[soup] = run.model_path(soup)
        gone = sorted(set(_ingredients(run.folder, soup, summary) or []) - checkpoints)
        if gone:
            notes.append(
                f"The {soup.replace('_', ' ')} was cooked from checkpoints no longer in the "
                f"pool ({', '.join(gone)}); rerun `heritage soup {run.folder}` to cook it from "
                "the current pool."
            )
    greedy = _ingredients(run.folder, "greedy_soup", summary) if "greedy_soup" in models else None
    return models, greedy or []


# ------------------------------------------------------------------------------- one run


def _locks_run(run_of: Callable[..., str | Path | None]) -> Callable:
    """An analysis writes into its run folder (``analysis/``): it holds the folder's lock
    meanwhile, so that it never reads a pool that a training or soup is changing. A folder
    that does not exist is left to the analysis to report (and not created)."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def locked(*args, **kwargs):
            folder = run_of(*args, **kwargs)
            if folder is None or not Path(folder).is_dir():
                return fn(*args, **kwargs)
            with folder_lock(folder, "analysing"):
                return fn(*args, **kwargs)

        return locked

    return decorate


def _open_analysable(run_dir: str | Path, split: str):
    """The run, if it can be analysed on ``split``: checkpoints chosen on validation (not a
    refit) and images in the split; else :class:`~heritage.run.RunError` saying what to do."""
    from heritage.run import Run, RunError

    run = Run.open(run_dir)
    if not any("val_macro_f1" in e.metrics for e in run.pool.entries):
        # before any forward pass: the analysis is built around validation-chosen models
        raise RunError(
            f"{run.folder} has no validation scores (a refit on train + val): the analysis "
            "compares checkpoints and soups chosen on validation, so analyse the run it was "
            f"refitted from, and score this one with `heritage evaluate {run.folder}`"
        )
    if len(run.collection.split(split)) == 0:
        raise RunError(f"the {split} split of {run.folder} has no images; try --split val")
    return run


def _geometry_and_curves(
    run,
    out: Path,
    probas: dict[str, np.ndarray],
    models: dict,
    greedy: list[str],
    skipped: list[Skipped],
    figures: dict[str, Path],
) -> Geometry | None:
    """The checkpoint map and the training curves (into ``figures``); what cannot be drawn
    goes to ``skipped`` with the reason. Returns the geometry (None with one checkpoint)."""
    checkpoints = [e.name for e in run.pool.entries]
    geometry = None
    if len(checkpoints) >= 2:
        names = [*checkpoints, *(s for s in SOUPS if s in models), "soft_voting"]
        geometry = checkpoint_geometry({n: probas[n] for n in names})
        figures["geometry"] = plot_geometry(
            geometry.names, geometry.xy, set(greedy), out / "geometry.png"
        )
    else:
        skipped.append(Skipped("checkpoint geometry", "needs at least two checkpoints (see above)"))
    history = _read_json(run.folder / "history.json")
    if isinstance(history, list) and history:
        pool_epochs = [e.epoch for e in run.pool.entries]
        greedy_epochs = [ep for ep in map(epoch_of, greedy) if ep is not None]
        figures["curves"] = plot_training_curves(
            history, out / "curves.png", pool_epochs=pool_epochs, greedy_epochs=greedy_epochs
        )
    else:
        skipped.append(_no_history(run.folder))
    return geometry


def _no_history(folder: Path) -> Skipped:
    """Why the training curves are missing, and what shows them: a group of runs never
    trained itself (each of its runs has its own curves); a run's history is rewritten by
    resuming it."""
    members = group_members(folder)
    if members is None:
        return Skipped(
            "training curves",
            f"{folder / 'history.json'} is missing or empty",
            "heritage train (with the run's options and --out; it resumes and rewrites it)",
        )
    return Skipped(
        "training curves",
        f"{folder} is a group of {len(members)} runs gathered by heritage soup: it has no "
        "training of its own, so no history.json; its pool holds one model per run (compared "
        "in this report), and each run's curves are in that run's own report",
        "; ".join(f"heritage analyse {m}" for m in members) or None,
    )


def _method_probabilities(
    probas: dict[str, np.ndarray], stack: np.ndarray, best: str, models: dict[str, Path]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every model's probabilities plus soft voting over the checkpoints (``stack``), and
    those of the methods the report compares: the best checkpoint, the run's soups, soft
    voting."""
    all_probas = dict(probas)
    all_probas["soft_voting"] = stack.mean(axis=0)
    method_probas = {"best_checkpoint": all_probas[best]}
    method_probas.update({s: all_probas[s] for s in SOUPS if s in models})
    method_probas["soft_voting"] = all_probas["soft_voting"]
    return all_probas, method_probas


def _single_checkpoint() -> Skipped:
    """Why a run with one checkpoint has no variance within it, and how to add checkpoints."""
    return Skipped(
        "variance across checkpoints",
        "the pool holds a single checkpoint, so there is no variance to remove; rerun "
        "`heritage train` with the same options, this --out and more --epochs (it "
        "resumes) to add checkpoints",
    )


@_locks_run(lambda run_dir, *args, **kwargs: run_dir)
def analyse(
    run_dir: str | Path,
    split: str = "test",
    out: str | Path | None = None,
    *,
    device: str | None = None,
    n_mistakes: int = 12,
) -> AnalysisResult:
    """Analyse one run on one split; write ``report.html`` and ``analysis.json`` to ``out``
    (default ``RUN/analysis``). The probability cache always lives in ``RUN/analysis``.

    Raises :class:`~heritage.run.RunError` for a folder that is not a run, a run without
    checkpoints or an empty split, and ``CollectionError`` for an unknown split name."""
    run = _open_analysable(run_dir, split)
    out = Path(out) if out is not None else run.folder / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    skipped: list[Skipped] = []
    notes: list[str] = []
    classes = list(run.collection.classes)

    models, greedy = _find_models(run, skipped, notes)
    checkpoints = [e.name for e in run.pool.entries]

    # ---- probabilities, once
    probs = split_probabilities(
        run, split, models, run.folder / "analysis" / f"probs_{split}.npz", device
    )
    y, paths = probs.targets, probs.paths
    stack = np.stack([probs.probas[c] for c in checkpoints])  # (m, n, C)
    best = run.pool.best("val_macro_f1").name
    all_probas, method_probas = _method_probabilities(probs.probas, stack, best, models)
    evaluations = {name: evaluate(y, p, classes) for name, p in all_probas.items()}
    evaluations["best_checkpoint"] = evaluations[best]

    # ---- bias–variance within the run
    groups = {REFERENCE: stack, **{m: p[None] for m, p in method_probas.items()}}
    decomposition = compare_methods(groups, y)
    summary = describe_changes(decomposition, REFERENCE, across_seeds=False)
    if len(checkpoints) < 2:
        skipped.append(_single_checkpoint())
    figures = {"bias_variance": plot_decomposition(decomposition, out / "bias_variance.png")}

    geometry = _geometry_and_curves(run, out, all_probas, models, greedy, skipped, figures)

    # ---- diagnostics of the reference model
    reference = "greedy_soup" if "greedy_soup" in models else "best_checkpoint"
    ev = evaluations[reference]
    ref_label = reference.replace("_", " ") + (
        f" ({best})" if reference == "best_checkpoint" else ""
    )
    figures["confusion"] = plot_confusion(
        ev, out / "confusion.png", title=f"Confusion — {ref_label}"
    )
    figures["reliability"] = plot_reliability(y, method_probas[reference], out / "reliability.png")
    mistakes = confident_mistakes(method_probas[reference], y, paths, classes, k=n_mistakes)

    result = AnalysisResult(
        run=run.folder,
        split=split,
        classes=classes,
        checkpoints=checkpoints,
        best_checkpoint=best,
        methods=list(method_probas),
        reference=reference,
        decomposition=decomposition,
        summary=summary,
        geometry=geometry,
        greedy_ingredients=greedy,
        mistakes=mistakes,
        skipped=skipped,
        notes=notes,
        report=out / "report.html",
        json=out / "analysis.json",
        targets=y,
        paths=paths,
        probas=all_probas,
        evaluations=evaluations,
    )
    _write_json(result.json, _run_payload(result, probs.computed, probs.reused))
    result.report.write_text(_run_html(result, figures), encoding="utf-8")
    console.print(
        f"analysis of {run.folder} on {split}: {len(probs.computed)} model(s) run, "
        f"{len(probs.reused)} from the cache → {result.report}"
    )
    return result


def _model_rows(result: AnalysisResult, best: str) -> list[dict]:
    rows = []
    for name in [*result.checkpoints, *(m for m in result.methods if m != "best_checkpoint")]:
        ev = result.evaluations[name]
        kind = {"soft_voting": "ensemble"}.get(name, "soup")
        if name in result.checkpoints:
            kind = "checkpoint (best by val macro-F1)" if name == best else "checkpoint"
        rows.append(
            {
                "model": name,
                "kind": kind,
                "top1": ev.top1,
                "macro_f1": ev.macro_f1,
                "ece": ev.ece,
                "nll": ev.nll,
                "models_at_inference": len(result.checkpoints) if name == "soft_voting" else 1,
            }
        )
    return rows


def _run_payload(result: AnalysisResult, computed: list, reused: list) -> dict:
    best = result.best_checkpoint
    return {
        "run": str(result.run),
        "split": result.split,
        "n_images": len(result.targets),
        "n_classes": len(result.classes),
        "checkpoints": result.checkpoints,
        "best_checkpoint": best,
        "reference_model": result.reference,
        "models": {r.pop("model"): r for r in _model_rows(result, best)},
        "bias_variance": {
            "scope": "within_run",
            "reference": REFERENCE,
            "methods": result.decomposition.to_dict(orient="index"),
            "summary": result.summary,
        },
        "geometry": None
        if result.geometry is None
        else {**result.geometry.to_dict(), "greedy_ingredients": result.greedy_ingredients},
        "per_class_f1": {
            m: {c.name: c.f1 for c in result.evaluations[m].per_class} for m in result.methods
        },
        "confident_mistakes": [m.to_dict() for m in result.mistakes],
        "skipped": [s.__dict__ for s in result.skipped],
        "notes": result.notes,
        "cache": {"computed": computed, "reused": reused},
        "heritage_version": __version__,
    }


def _mistake_cards(mistakes: list[ConfidentMistake]) -> list[dict]:
    return [
        {
            "uri": thumbnail_data_uri(m.image),
            "name": Path(m.image).name,
            "predicted": m.predicted,
            "confidence": m.confidence,
            "true": m.true,
            "true_probability": m.true_probability,
        }
        for m in mistakes
    ]


def _per_class_table(result: AnalysisResult) -> dict:
    ref = result.evaluations[result.reference]
    order = sorted(
        range(len(result.classes)), key=lambda i: (ref.per_class[i].f1, result.classes[i])
    )
    header = ["class", "support", *(m.replace("_", " ") for m in result.methods)]
    rows = [
        [
            result.classes[i],
            ref.per_class[i].support,
            *(result.evaluations[m].per_class[i].f1 for m in result.methods),
        ]
        for i in order
    ]
    return {"header": header, "rows": rows}


def _geometry_view(result: AnalysisResult) -> dict | None:
    g = result.geometry
    if g is None:
        return None
    return {
        "stress": g.stress,
        "sentence": _greedy_diversity(g, result.checkpoints, result.greedy_ingredients),
        "header": ["", *(n.replace("_", " ") for n in g.names)],
        "rows": [
            [n.replace("_", " "), *map(float, row)]
            for n, row in zip(g.names, g.divergence, strict=True)
        ],
    }


def _run_html(result: AnalysisResult, figures: dict[str, Path]) -> str:
    best = result.best_checkpoint
    ev = result.evaluations[result.reference]
    reference = result.reference.replace("_", " ") + (
        f" ({best})" if result.reference == "best_checkpoint" else ""
    )
    return render(
        "run.html",
        title=f"heritage analysis — {result.run.name}",
        name=result.run.name,
        run=result.run,
        split=result.split,
        n_images=len(result.targets),
        n_classes=len(result.classes),
        n_checkpoints=len(result.checkpoints),
        version=__version__,
        when=f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M}",
        skipped=result.skipped,
        notes=result.notes,
        model_rows=[list(r.values()) for r in _model_rows(result, best)],
        summary=result.summary,
        decomposition=_decomposition_table(result.decomposition),
        figures={
            k: png_data_uri(figures[k]) if k in figures else None
            for k in ("bias_variance", "geometry", "curves", "confusion", "reliability")
        },
        geometry=_geometry_view(result),
        greedy_ingredients=result.greedy_ingredients,
        reference=reference,
        evaluation={"summary": ev.summary(), "nll": ev.nll, "ece": ev.ece},
        per_class=_per_class_table(result),
        mistakes=_mistake_cards(result.mistakes),
    )


# ------------------------------------------------------------------------------- seeds


def _shared_images(results: list[AnalysisResult], split: str) -> tuple[list[str], list[np.ndarray]]:
    """The split's images every run has, and each run's row of each (runs of one
    collection with one class list only)."""
    first = results[0]
    for r in results[1:]:
        if r.classes != first.classes:
            raise ValueError(f"{r.run} has other classes than {first.run}: not the same collection")
    common = set(first.paths)
    for r in results[1:]:
        common &= set(r.paths)
    shared = [p for p in first.paths if p in common]
    if not shared:
        raise ValueError(
            f"the runs share no {split} images (each drew its own split): train them on a "
            "collection with a split column so they are evaluated on the same images"
        )
    aligned = []
    for r in results:
        index = {p: i for i, p in enumerate(r.paths)}
        aligned.append(np.array([index[p] for p in shared]))
    return shared, aligned


def _groups_across_runs(
    results: list[AnalysisResult], aligned: list[np.ndarray], skipped: list[Skipped]
) -> dict[str, np.ndarray]:
    """Each method's models across the runs (every checkpoint of every run for the
    reference), on the shared images; a method some run lacks is skipped, with the command."""
    runs = list(zip(results, aligned, strict=True))
    groups = {
        REFERENCE: np.concatenate(
            [np.stack([r.probas[c][idx] for c in r.checkpoints]) for r, idx in runs]
        )
    }
    for method in METHODS:
        missing = [r for r in results if method not in r.methods]
        if missing:
            skipped.append(
                Skipped(
                    method.replace("_", " "),
                    f"not in {len(missing)} of the runs",
                    "; ".join(f"heritage soup {r.run}" for r in missing),
                )
            )
            continue
        groups[method] = np.stack(
            [
                r.probas[r.best_checkpoint if method == "best_checkpoint" else method][idx]
                for r, idx in runs
            ]
        )
    return groups


def _write_seed_files(seeds: SeedAnalysis, plot: Path) -> None:
    """analysis.json and report.html of an across-run analysis."""
    results, split, skipped = seeds.runs, seeds.split, seeds.skipped
    decomposition, summary, shared_n = seeds.decomposition, seeds.summary, seeds.n_images
    per_run = [
        {
            "run": str(r.run),
            "checkpoints": len(r.checkpoints),
            **{f"top1_{m}": r.evaluations[m].top1 for m in r.methods},
            "report": str(r.report),
        }
        for r in results
    ]
    _write_json(
        seeds.json,
        {
            "runs": [str(r.run) for r in results],
            "split": split,
            "n_images": shared_n,
            "bias_variance": {
                "scope": "across_runs",
                "reference": REFERENCE,
                "methods": decomposition.to_dict(orient="index"),
                "summary": summary,
            },
            "per_run": per_run,
            "skipped": [s.__dict__ for s in skipped],
            "heritage_version": __version__,
        },
    )
    runs_table = {
        "header": [
            "run",
            "checkpoints",
            *(f"top-1 {m.replace('_', ' ')}" for m in METHODS),
            "report",
        ],
        "rows": [
            [
                r.run.name,
                len(r.checkpoints),
                *(r.evaluations[m].top1 if m in r.methods else float("nan") for m in METHODS),
                str(r.report),
            ]
            for r in results
        ],
    }
    seeds.report.write_text(
        render(
            "seeds.html",
            title=f"heritage analysis — {len(results)} runs",
            n_runs=len(results),
            split=split,
            n_images=shared_n,
            n_classes=len(results[0].classes),
            version=__version__,
            skipped=skipped,
            summary=summary,
            decomposition=_decomposition_table(decomposition),
            figure=png_data_uri(plot),
            runs=runs_table,
        ),
        encoding="utf-8",
    )


@_locks_run(lambda run_dirs, *args, **kwargs: run_dirs[0] if len(run_dirs) else None)
def analyse_runs(
    run_dirs: Sequence[str | Path],
    split: str = "test",
    out: str | Path | None = None,
    *,
    device: str | None = None,
) -> SeedAnalysis:
    """Each run's own report, then the decomposition across runs (seeds, resampled training
    sets) of the same collection, written to ``out`` (default ``FIRST_RUN/analysis/seeds``).

    The model set of each method: ``single_checkpoints`` = every checkpoint of every run;
    ``best_checkpoint``, ``uniform_soup``, ``greedy_soup``, ``soft_voting`` = one model per
    run. Only images in the split of *every* run are used (runs whose splits were drawn with
    different seeds share few), so no run is scored on its training images."""
    if len(run_dirs) < 2:
        raise ValueError("the across-seed analysis needs at least two runs")
    results = [analyse(r, split, device=device) for r in run_dirs]
    first = results[0]
    shared, aligned = _shared_images(results, split)
    skipped: list[Skipped] = []
    groups = _groups_across_runs(results, aligned, skipped)
    y = first.targets[aligned[0]]
    decomposition = compare_methods(groups, y)
    summary = describe_changes(decomposition, REFERENCE, across_seeds=True)

    out = Path(out) if out is not None else first.run / "analysis" / "seeds"
    out.mkdir(parents=True, exist_ok=True)
    plot = plot_decomposition(decomposition, out / "bias_variance.png")
    files = {"report": out / "report.html", "json": out / "analysis.json"}
    seeds = SeedAnalysis(results, split, len(shared), decomposition, summary, skipped, **files)
    _write_seed_files(seeds, plot)
    console.print(f"across-run analysis of {len(results)} runs → {seeds.report}")
    return seeds
