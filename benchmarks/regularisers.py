"""Regularisers benchmark (issue: training regularisers): CE, MixUp, Manifold MixUp,
SynerMix-Intra, SynerMix and focal loss in a low-data and a full-data regime, each also through
a greedy soup; and coarse → fine with and without entropic feature regularisation.

    python benchmarks/regularisers.py classify                 # everything below, seeds 0 1 2
    python benchmarks/regularisers.py classify --datasets ich-mekong --regimes low --seeds 0
    python benchmarks/regularisers.py choose-entropy           # λ and variant, validation only
    python benchmarks/regularisers.py coarse-fine              # ce vs ce_entropy, test split

Every finished run leaves its scores in ``<run>/bench.json``; a rerun reuses them, so the
benchmark can be stopped and continued. Records go to benchmarks/results/regularisers.json
with the regime in the dataset name (``hieroglyphs-unas/low``). Selection (checkpoints, greedy
order, λ) reads train and val only; test is read once per method, for the report.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import track

from heritage.backbones import batchnorm_layers, create_backbone, resolve_preprocessing
from heritage.collection import Collection
from heritage.config import TrainConfig
from heritage.data import ImageCache, ImageDataset, eval_transform, make_loader, train_transform
from heritage.model import ImageClassifier
from heritage.probe import extract_features, fine_label_scores
from heritage.progress import console
from heritage.run import Run
from heritage.runtime import Precision, configure_threads, hardware_label, resolve_device
from heritage.training.losses import create_loss
from heritage.training.mixing import create_objective
from heritage.training.samplers import ClassAwareBatchSampler
from heritage.training.trainer import Trainer

try:  # run as a script (python benchmarks/regularisers.py) or as a module
    from records import RecordBook
    from soups import DATA, SETUPS, Setup
except ImportError:
    from benchmarks.records import RecordBook
    from benchmarks.soups import DATA, SETUPS, Setup

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "benchmarks" / "runs" / "regularisers"

#: The shared base per dataset: the soups benchmark's settings, made cheaper for hieroglyphs
#: (96 px, 9 epochs = three restart cycles) because this benchmark trains 6 methods x 2 regimes
#: x 3 seeds on two CPU cores. Methods are compared with each other on the same base.
BASE = {
    "ich-mekong": SETUPS["ich-mekong"].config,
    "hieroglyphs-unas": {**SETUPS["hieroglyphs-unas"].config, "image_size": 96, "epochs": 9},
}
#: What each method changes on the base (the issue's names; manifold_mixup is SynerMix's
#: inter-class part alone, so both halves of SynerMix have their own baseline).
METHODS = {
    "ce": {},
    "mixup": {"mix": {"method": "mixup", "alpha": 1.0}},
    "manifold_mixup": {"mix": {"method": "manifold_mixup", "alpha": 1.0}},
    "synermix_intra": {"mix": {"method": "synermix_intra", "beta": 0.5}},
    "synermix": {"mix": {"method": "synermix", "beta": 0.1, "alpha": 1.0}},
    "focal": {"loss": {"name": "focal", "gamma": 2.0}},
    # SynerMix trains on class-pair batches (sampler "auto"); CE on the same batches separates
    # the effect of the batch composition from the effect of the mixing
    "ce_class_pairs": {"sampler": "class_pairs"},
}
REGIMES = {"full": None, "low": 10}  # at most this many training images per class
COARSE_FINE = {"dataset": "hieroglyphs-unas", "coarse": "category", "fine": "sign"}
#: Entropy settings tried on validation by `choose-entropy`: λ × global / per-class with the
#: default estimator (1-NN on L2-normalised penultimate features); then, around the best of
#: those (λ = 0.3, global, the edge of the grid), the 3rd-neighbour estimator and λ = 1.
#: Last, where the features are taken (at the best λ): the output of the last stage before
#: EfficientNet's 1×1 head convolution (``blocks.6``, 320-d, pooled) and of the stage before it
#: (``blocks.5``, 192-d); the fine task is still scored on the penultimate features.
#: Raw (unnormalised) features are not tried: their entropy grows without bound with scale.
ENTROPY_GRID = [{"weight": w, "per_class": pc} for pc in (False, True) for w in (0.03, 0.1, 0.3)]
ENTROPY_GRID += [{"weight": 0.3, "per_class": False, "k": 3}, {"weight": 1.0, "per_class": False}]
ENTROPY_GRID += [{"weight": 0.3, "per_class": False, "layer": f"blocks.{i}"} for i in (6, 5)]


def train_collection(setup: Setup, regime: str, seed: int, label_column: str | None = None):
    collection = Collection.load(
        DATA / setup.manifest,
        label_column=label_column or setup.label_column,
        ignore_splits=setup.ignore_splits,
        check_images=False,
    )
    limit = REGIMES[regime]
    return collection if limit is None else collection.limit_per_class(limit, seed=seed)


def fit_run(cfg: TrainConfig, collection: Collection, run_dir: Path) -> dict:
    """Train (or resume) one run; returns its training summary."""
    result = Trainer(cfg).fit(collection, run_dir)
    steps = [h["step_seconds"] for h in result.history if "step_seconds" in h]
    return {
        "train_seconds": result.train_seconds,
        "step_seconds": float(np.median(steps)),
        "train_images_per_second": result.train_images_per_second,
    }


def cached(
    run_dir: Path,
    compute: Callable[..., dict],
    cfg: TrainConfig,
    *args: Any,
    name: str = "bench.json",
) -> dict:
    """Scores of a finished run, computed once by ``compute(cfg, *args)`` and kept in
    ``run_dir/name``; a run folder left by other settings (BASE or METHODS changed since) is
    refused, not silently reused."""
    path = run_dir / name
    if path.is_file():
        scores = json.loads(path.read_text())
        stored = scores.get("config")
        if stored is not None and TrainConfig.from_dict(stored) != cfg:
            raise SystemExit(f"{run_dir} was run with other settings: delete it to rerun")
        return scores
    scores = {**compute(cfg, *args), "config": cfg.to_dict()}
    path.write_text(json.dumps(scores, indent=2))
    return scores


# ---------------------------------------------------------------------- classify
def classify_scores(cfg: TrainConfig, collection: Collection, run_dir: Path) -> dict:
    summary = fit_run(cfg, collection, run_dir)
    run = Run.open(run_dir)
    run.cook_soups(recipes=("greedy",))
    results = run.evaluate("test", ("best_checkpoint", "greedy_soup"))
    return {
        **summary,
        "single": {
            "top1": results["best_checkpoint"].top1,
            "macro_f1": results["best_checkpoint"].macro_f1,
        },
        "soup": {"top1": results["greedy_soup"].top1, "macro_f1": results["greedy_soup"].macro_f1},
    }


def classify(args: argparse.Namespace, book: RecordBook) -> None:
    for name in args.datasets:
        setup = SETUPS[name]
        for regime in args.regimes:
            for method in args.methods:
                for seed in args.seeds:
                    console.rule(f"{name}/{regime} · {method} · seed {seed}")
                    cfg = TrainConfig.from_dict(
                        {**BASE[name], **METHODS[method], "seed": seed, "device": args.device}
                    )
                    run_dir = args.runs / name / regime / method / f"seed{seed}"
                    scores = cached(
                        run_dir,
                        classify_scores,
                        cfg,
                        train_collection(setup, regime, seed),
                        run_dir,
                    )
                    dataset = f"{name}/{regime}"
                    for metric in ("top1", "macro_f1"):
                        book.add(dataset, method, metric, scores["single"][metric])
                        book.add(dataset, f"{method}+greedy_soup", metric, scores["soup"][metric])
                    book.write()


# ---------------------------------------------------------------------- step overhead
def step_seconds(name: str, args: argparse.Namespace) -> dict[str, list[float]]:
    """Seconds per training step of each method on one fixed batch of ``name`` (the trainer's
    step: objective, loss, backward, AdamW; no data loading), one value per round. Methods
    are interleaved round by round so that a busy moment of the machine hits all alike."""
    device = resolve_device(args.device)
    base = TrainConfig.from_dict({**BASE[name], "device": args.device})
    collection = train_collection(SETUPS[name], "full", 0)
    train = collection.split("train")
    counts = np.bincount(train.targets(), minlength=len(collection.classes)).tolist()
    model = create_backbone(base.backbone, len(collection.classes)).to(device)
    model.to(memory_format=torch.channels_last)
    prep = resolve_preprocessing(model, base.image_size, base.resize_mode)
    batch = next(iter(ClassAwareBatchSampler(train.targets(), base.batch_size, seed=0)))
    paths = [train.paths()[i] for i in batch]
    cache = ImageCache(prep)
    cache.load(paths)
    data = ImageDataset(paths, train.targets()[batch], cache, train_transform(prep, base.augment))
    x = torch.stack([data[i][0] for i in range(len(data))]).to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.as_tensor(data.targets, device=device)
    model.train()
    for module in batchnorm_layers(model):  # as the trainer: pretrained statistics kept
        module.eval()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-7)
    steps = {}
    for method in args.methods:
        cfg = TrainConfig.from_dict({**BASE[name], **METHODS[method]})
        objective = create_objective(cfg.mix, len(collection.classes), cfg.label_smoothing)
        criterion = create_loss(cfg.loss, label_smoothing=cfg.label_smoothing, class_counts=counts)
        steps[method] = (objective, criterion.to(device))

    def step(objective, criterion) -> None:
        loss = objective(model, x, y, criterion).loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    for objective, criterion in steps.values():  # warm-up
        step(objective, criterion)
    seconds: dict[str, list[float]] = {m: [] for m in steps}
    for _ in track(range(args.rounds), description=f"{name}: timing steps"):
        for method, (objective, criterion) in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(objective, criterion)
            seconds[method].append((time.perf_counter() - t0) / args.steps)
    return seconds


def overhead(args: argparse.Namespace, book: RecordBook) -> None:
    """Step time of every method, and its ratio to plain CE's. Run on an otherwise idle
    machine. Recorded under both regimes: the step is the same, only the number of steps
    differs."""
    for name in args.datasets:
        seconds = step_seconds(name, args)
        for regime in args.regimes:
            for method, values in seconds.items():
                for i, value in enumerate(values):
                    book.add(f"{name}/{regime}", method, "step_seconds", value)
                    if "ce" in seconds:
                        ratio = value / seconds["ce"][i]
                        book.add(f"{name}/{regime}", method, "step_time_vs_ce", ratio)
        console.print({m: round(float(np.mean(v)), 4) for m, v in seconds.items()})
        book.write()


# ---------------------------------------------------------------------- coarse -> fine
def entropy_name(
    weight: float, per_class: bool, k: int = 1, normalise: bool = True, layer: str = ""
) -> str:
    """``ce_entropy_0.3_global``; a non-default estimator adds ``_k3`` or ``_raw``, another
    feature location ``_at_blocks.6``."""
    name = f"ce_entropy_{weight:g}_{'per_class' if per_class else 'global'}"
    name += (f"_k{k}" if k != 1 else "") + ("" if normalise else "_raw")
    return name + (f"_at_{layer}" if layer else "")


def coarse_fine_scores(
    cfg: TrainConfig, run_dir: Path, split: str, device: torch.device
) -> dict[str, float]:
    """Train on the coarse label; score the coarse task and the fine task on ``split`` (val for
    choosing λ, test for the report) with the best checkpoint (chosen on coarse val macro-F1)."""
    setup = SETUPS[COARSE_FINE["dataset"]]
    coarse = train_collection(setup, "full", cfg.seed, COARSE_FINE["coarse"])
    summary = fit_run(cfg, coarse, run_dir)
    run = Run.open(run_dir)
    coarse_ev = run.evaluate(split, ("best_checkpoint",))["best_checkpoint"]
    fine = train_collection(setup, "full", cfg.seed, COARSE_FINE["fine"])
    model = ImageClassifier.load(run.model_path("best_checkpoint"), str(device))
    features = {}
    for part_name in ("train", split):
        part = fine.split(part_name)
        run.cache.load(part.paths())
        ds = ImageDataset(part.paths(), part.targets(), run.cache, eval_transform(run.cache.prep))
        loader = make_loader(ds, 64, shuffle=False, workers=0)
        features[part_name] = extract_features(
            model.model, loader, device, Precision.resolve(cfg.precision, device)
        )
    fine_ev = fine_label_scores(*features["train"], *features[split], k=5)
    return {
        **summary,
        "coarse_top1": coarse_ev.top1,
        "fine_knn_top1": fine_ev.fine_knn_top1,
        "fine_probe_top1": fine_ev.fine_probe_top1,
    }


def coarse_fine_config(seed: int, device: str, entropy: dict | None = None) -> TrainConfig:
    overrides = {"entropy": entropy} if entropy else {}
    return TrainConfig.from_dict(
        {**BASE[COARSE_FINE["dataset"]], **overrides, "seed": seed, "device": device}
    )


def choose_entropy(args: argparse.Namespace, book: RecordBook) -> None:
    """Validation only: every entropy setting of ENTROPY_GRID against plain CE, one seed."""
    device = resolve_device(args.device)
    dataset = f"{COARSE_FINE['dataset']}/coarse-fine-val"
    settings = [("ce", None)] + [(entropy_name(**e), e) for e in ENTROPY_GRID]
    if args.settings:  # e.g. only settings added to the grid since the last run
        unknown = set(args.settings) - {name for name, _ in settings}
        if unknown:
            raise SystemExit(f"unknown entropy settings: {sorted(unknown)}")
        settings = [(name, e) for name, e in settings if name in args.settings]
    for name, entropy in settings:
        for seed in args.seeds:
            console.rule(f"coarse → fine (val) · {name} · seed {seed}")
            cfg = coarse_fine_config(seed, args.device, entropy)
            run_dir = args.runs / "coarse-fine" / name / f"seed{seed}"
            scores = cached(
                run_dir, coarse_fine_scores, cfg, run_dir, "val", device, name="bench_val.json"
            )
            for metric in ("coarse_top1", "fine_knn_top1", "fine_probe_top1"):
                book.add(dataset, name, f"val_{metric}", scores[metric])
            book.write()


def chosen_entropy() -> dict:
    """The entropy setting with the best validation fine k-NN top-1 among those whose
    validation coarse top-1 is within 1 point of plain CE (written by `choose-entropy`); a tie
    goes to the better validation coarse top-1."""
    path = ROOT / "benchmarks" / "results" / "regularisers.json"
    records = json.loads(path.read_text()) if path.is_file() else []
    val = {
        (r["method"], r["metric"]): r["mean"]
        for r in records
        if r["dataset"] == f"{COARSE_FINE['dataset']}/coarse-fine-val"
    }
    if ("ce", "val_coarse_top1") not in val:
        raise SystemExit("run `python benchmarks/regularisers.py choose-entropy` first")
    floor = val[("ce", "val_coarse_top1")] - 0.01
    missing = [
        entropy_name(**e) for e in ENTROPY_GRID if (entropy_name(**e), "val_coarse_top1") not in val
    ]
    if missing:
        raise SystemExit(f"run `python benchmarks/regularisers.py choose-entropy` for {missing}")
    scored = [
        (
            val[(entropy_name(**e), "val_fine_knn_top1")],
            val[(entropy_name(**e), "val_coarse_top1")],
            e,
        )
        for e in ENTROPY_GRID
    ]
    candidates = [c for c in scored if c[1] >= floor]
    if not candidates:
        raise SystemExit("no entropy setting keeps validation coarse top-1 within 1 point of CE")
    return max(candidates, key=lambda c: c[:2])[2]


def coarse_fine(args: argparse.Namespace, book: RecordBook) -> None:
    device = resolve_device(args.device)
    entropy = chosen_entropy()
    console.print(f"entropy setting chosen on validation: {entropy}")
    dataset = f"{COARSE_FINE['dataset']}/full"
    for name, setting in (("ce", None), ("ce_entropy", entropy)):
        for seed in args.seeds:
            console.rule(f"coarse → fine (test) · {name} · seed {seed}")
            cfg = coarse_fine_config(seed, args.device, setting)
            # the same folders as choose-entropy: a run trained there (seed 0) is reused, and
            # only its test scores are new
            folder = name if setting is None else entropy_name(**setting)
            run_dir = args.runs / "coarse-fine" / folder / f"seed{seed}"
            scores = cached(
                run_dir, coarse_fine_scores, cfg, run_dir, "test", device, name="bench_test.json"
            )
            for metric in ("coarse_top1", "fine_knn_top1", "fine_probe_top1"):
                book.add(dataset, name, metric, scores[metric])
            book.write()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=("classify", "overhead", "choose-entropy", "coarse-fine"))
    parser.add_argument("--datasets", nargs="+", default=list(BASE), choices=list(BASE))
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument(
        "--settings", nargs="+", default=None, help="choose-entropy: only these settings"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runs", type=Path, default=RUNS)
    parser.add_argument("--rounds", type=int, default=5, help="overhead: timing rounds")
    parser.add_argument("--steps", type=int, default=5, help="overhead: steps per round")
    args = parser.parse_args()
    if args.seeds is None:  # λ is chosen on one seed; reports use three
        args.seeds = [0] if args.task == "choose-entropy" else [0, 1, 2]
    configure_threads()
    book = RecordBook("regularisers", hardware_label(resolve_device(args.device)))
    tasks = {
        "classify": classify,
        "overhead": overhead,
        "choose-entropy": choose_entropy,
        "coarse-fine": coarse_fine,
    }
    tasks[args.task](args, book)
    console.print(f"records written to {book.path}")


if __name__ == "__main__":
    main()
