"""Model soups: averaging fine-tuned checkpoints in weight space (Wortsman et al., 2022;
applied to heritage images in arXiv 2603.02181).

* uniform soup: the mean of all checkpoints;
* greedy soup: checkpoints sorted by a validation metric, each added only if the soup's
  validation metric does not drop;
* soft voting: the mean of the checkpoints' softmax outputs, the N-model baseline.

Averaging BatchNorm running statistics is not the same as the statistics of the averaged
weights, so after averaging they are recomputed on training images. By default this happens
whenever the ingredients' BatchNorm statistics differ, i.e. when they were updated during
fine-tuning. heritage's trainer freezes them by default (small batches of a few hundred images
make them drift); then every ingredient shares the pretrained statistics, the layers after each
BatchNorm were trained against exactly those, and recomputing them would shift every layer's
input (``benchmarks/sweep.py`` records this as ``val_macro_f1_uniform_soup_bn_recalibrated``
beside ``val_macro_f1_uniform_soup``). A soup is an ordinary model file and loads like any
checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from heritage.backbones import named_batchnorm_layers
from heritage.calibration import TemperatureScaling, apply_temperature, fit_temperature
from heritage.config import check_choice
from heritage.evaluation import evaluate
from heritage.model import (
    ModelCard,
    build_model,
    load_card,
    load_state,
    predict_logits,
    predict_proba,
    save_model_file,
    softmax,
)
from heritage.modelfile import model_stem
from heritage.progress import console
from heritage.runtime import Precision, resolve_device

#: metric name -> (function of an Evaluation, higher is better)
SOUP_METRICS: dict[str, tuple[Callable, bool]] = {
    "macro_f1": (lambda ev: ev.macro_f1, True),
    "top1": (lambda ev: ev.top1, True),
    "loss": (lambda ev: ev.nll, False),
}


def batchnorm_layers_that_differ(states: Sequence[dict[str, torch.Tensor]]) -> set[str]:
    """Names of the BatchNorm modules whose running statistics are not identical in all the
    checkpoints (layers trained with frozen statistics, e.g. frozen stages, are not)."""
    return {
        key.rsplit(".", 1)[0]
        for key in states[0]
        if key.endswith(("running_mean", "running_var"))
        and any(not torch.equal(states[0][key], s[key]) for s in states[1:])
    }


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating-point tensors; integer buffers (BatchNorm's
    ``num_batches_tracked``) are taken from the first state."""
    if not states:
        raise ValueError("cannot average zero checkpoints")
    keys = states[0].keys()
    for i, s in enumerate(states[1:], start=1):
        if s.keys() != keys:
            raise ValueError(f"checkpoint {i} has different parameters from checkpoint 0")
    out = {}
    for k in keys:
        first = states[0][k]
        if first.is_floating_point():
            out[k] = torch.stack([s[k].float() for s in states]).mean(0).to(first.dtype)
        else:
            out[k] = first.clone()
    return out


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    precision: Precision | None = None,
    max_batches: int | None = None,
    only: Collection[str] | None = None,
) -> nn.Module:
    """Recompute BatchNorm running statistics with a cumulative average over ``loader``
    (momentum ``None``), as ``torch.optim.swa_utils.update_bn`` does, with a batch cap.

    ``only`` names the BatchNorm modules to recompute (default: all); the others keep their
    statistics and normalise with them during the pass, since the layers after them were
    trained against those. A shuffling loader is rewound to its seed first, so every soup
    a greedy search compares is recalibrated on the same batches."""
    precision = precision or Precision(None)
    layers = named_batchnorm_layers(model)
    bns = [m for name, m in layers.items() if only is None or name in only]
    if not bns:
        return model
    momenta = {}
    for bn in bns:
        bn.reset_running_stats()
        momenta[bn] = bn.momentum
        bn.momentum = None
    was_training = model.training
    model.train()
    for bn in layers.values():
        if bn not in momenta:
            bn.eval()
    generator = getattr(loader, "generator", None)
    if generator is not None:
        generator.manual_seed(generator.initial_seed())
    for i, (x, _) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        with precision.autocast(device):
            model(x.to(device).contiguous(memory_format=torch.channels_last))
    for bn, momentum in momenta.items():
        bn.momentum = momentum
    model.train(was_training)
    return model


@dataclass
class SoupStep:
    """One decision of the greedy soup, kept for the report."""

    candidate: str
    score: float
    accepted: bool


class ModelSoup:
    """Uniform or greedy soup of checkpoints, in the scikit-learn shape.

    ``ModelSoup("greedy").fit(checkpoint_paths, val_loader, bn_loader)`` then
    ``predict_proba(loader)`` or ``save(path)``. Learnt state: ``ingredients_`` (checkpoint
    names in the soup), ``model_``, ``card_``, ``val_score_``, ``steps_`` (greedy decisions).

    Parameters
    ----------
    recipe: ``"greedy"`` or ``"uniform"``.
    metric: validation metric for ordering and acceptance: ``macro_f1`` (default), ``top1``,
        ``loss``.
    recalibrate_bn: recompute BatchNorm statistics after averaging; ``None`` (default) = when
        the model has BatchNorm and the ingredients' statistics differ (they were trained).
    bn_batches: cap on batches used for recalibration (``None`` = the whole loader).
    """

    def __init__(
        self,
        recipe: str = "greedy",
        metric: str = "macro_f1",
        *,
        recalibrate_bn: bool | None = None,
        bn_batches: int | None = None,
        device: str = "auto",
        precision: str = "auto",
    ) -> None:
        check_choice("recipe", recipe, ("greedy", "uniform"))
        check_choice("metric", metric, SOUP_METRICS)
        self.recipe = recipe
        self.metric = metric
        self.recalibrate_bn = recalibrate_bn
        self.bn_batches = bn_batches
        self.device = device
        self.precision = precision

    def _score(self, model: nn.Module, loader: DataLoader, classes: list[str]) -> float:
        # targets from the same pass as the predictions, so any loader (shuffled, Subset) works
        logits, targets = predict_logits(model, loader, self._device, self._precision)
        self._last_scored = (logits, targets)  # the chosen soup's temperature fits on them
        return SOUP_METRICS[self.metric][0](evaluate(targets, softmax(logits), classes))

    def fit(
        self,
        checkpoints: Sequence[str | Path],
        val_loader: DataLoader | None,
        bn_loader: DataLoader | None = None,
    ) -> ModelSoup:
        """Cook the soup from checkpoint files. A uniform soup may be cooked without
        validation images (``val_loader=None``, e.g. in a refit on train + val): then
        ``val_score_`` is None."""
        if not checkpoints:
            raise ValueError("a soup needs at least one checkpoint")
        self._resolve()
        cards = [load_card(p) for p in checkpoints]
        card = cards[0]
        for p, c in zip(checkpoints, cards, strict=True):
            if c.architecture != card.architecture or c.classes != card.classes:
                raise ValueError(f"{p} is not from the same architecture and classes as the others")
        states = [load_state(p) for p in checkpoints]
        classes = list(card.classes)
        model = build_model(card, states[0]).to(self._device)
        model.to(memory_format=torch.channels_last)
        score = (
            None if val_loader is None else partial(self._score, loader=val_loader, classes=classes)
        )
        names = [model_stem(p).name for p in checkpoints]
        self.fit_states(states, names, model, score, bn_loader, higher=SOUP_METRICS[self.metric][1])
        # calibrated on the validation pass that scored it; without validation (a refit's
        # uniform soup) the temperature is the caller's to set
        self.temperature_ = (
            1.0 if self._chosen_scored is None else fit_temperature(*self._chosen_scored)
        )
        self.card_ = ModelCard(
            architecture=card.architecture,
            classes=classes,
            preprocessing=card.preprocessing,
            metrics={} if self.val_score_ is None else {f"val_{self.metric}": self.val_score_},
            provenance={
                **{k: v for k, v in card.provenance.items() if k not in ("epoch", "created")},
                "recipe": f"{self.recipe}_soup",
                "ingredients": self.ingredients_,
                "metric": self.metric,
                "bn_recalibrated": bool(self._recalibrate),
            },
            temperature=self.temperature_,
        )
        return self

    def fit_states(
        self,
        states: Sequence[dict[str, torch.Tensor]],
        names: Sequence[str],
        model: nn.Module,
        score: Callable[[nn.Module], float] | None,
        bn_loader: DataLoader | None = None,
        *,
        higher: bool = True,
    ) -> ModelSoup:
        """Cook the soup from state dicts held in memory (the checkpoints a fine-tune kept, as
        the multi-task image model does) into ``model``, whose architecture they share.
        ``score(model)`` is the validation score (``higher`` is better); ``None`` only for a
        uniform soup. Sets ``model_`` (``model``, holding the soup), ``ingredients_``,
        ``val_score_`` and ``steps_``; :meth:`fit` adds the card and temperature.

        The recipe: average the chosen states into ``model`` (recalibrating BatchNorm when
        asked or when the statistics were trained), and for a greedy soup add checkpoints in
        order of their own score while the soup's score does not drop."""
        if not states:
            raise ValueError("a soup needs at least one checkpoint")
        if score is None and self.recipe == "greedy":
            raise ValueError("a greedy soup chooses its ingredients on validation images")
        self._resolve()
        states, names = list(states), list(names)
        # automatic: only the layers whose statistics were trained (and so differ); forced:
        # every BatchNorm layer
        self._bn_layers: set[str] | None = None
        if self.recalibrate_bn is None:
            self._bn_layers = batchnorm_layers_that_differ(states)  # empty when there is no BN
            self._recalibrate = bool(self._bn_layers)
        else:
            self._recalibrate = self.recalibrate_bn
        if self._recalibrate and bn_loader is None:
            raise ValueError("BatchNorm recalibration needs training images (bn_loader)")
        self._last_scored, self._cooked = None, None

        def cook(chosen: list[int]) -> nn.Module:
            model.load_state_dict(average_state_dicts([states[i] for i in chosen]))
            if self._recalibrate:
                recalibrate_batchnorm(
                    model,
                    bn_loader,
                    self._device,
                    self._precision,
                    self.bn_batches,
                    self._bn_layers,
                )
            return model

        if self.recipe == "uniform":
            chosen = list(range(len(states)))
            self.val_score_ = None
            if score is not None:
                self.val_score_, self._cooked = score(cook(chosen)), chosen
            self._chosen_scored = self._last_scored
            self.steps_ = [SoupStep(n, self.val_score_, True) for n in names]
        else:
            chosen = self._greedy(names, cook, score, 1.0 if higher else -1.0)
        self.ingredients_ = [names[i] for i in chosen]
        self.model_ = cook(chosen) if self._cooked != chosen else model
        self._last_scored = None
        return self

    def _resolve(self) -> None:
        self._device = resolve_device(self.device)
        self._precision = Precision.resolve(self.precision, self._device)

    def _greedy(
        self,
        names: list[str],
        cook: Callable[[list[int]], nn.Module],
        score: Callable[[nn.Module], float],
        sign: float,
    ) -> list[int]:
        """Indices of the greedy soup's ingredients; sets ``val_score_`` and ``steps_``."""
        # order by each checkpoint's own validation metric, judged exactly as soups are
        # (recalibrated too when soups are), so the first comparison is like for like
        own, scored = [], []
        for i in range(len(names)):
            own.append(score(cook([i])))
            scored.append(self._last_scored)
        order = sorted(range(len(names)), key=lambda i: -sign * own[i])
        chosen, self._cooked = [order[0]], [len(names) - 1]
        self.val_score_, self._chosen_scored = own[order[0]], scored[order[0]]
        self.steps_ = [SoupStep(names[order[0]], self.val_score_, True)]
        for i in order[1:]:
            trial = [*chosen, i]
            value, self._cooked = score(cook(trial)), trial
            accepted = sign * value >= sign * self.val_score_
            self.steps_.append(SoupStep(names[i], value, accepted))
            console.print(
                f"  greedy soup: {names[i]} → {self.metric} {value:.4f} "
                f"({'kept' if accepted else 'dropped'})"
            )
            if accepted:
                chosen = trial
                self.val_score_, self._chosen_scored = value, self._last_scored
        return chosen

    def predict_proba(self, loader: DataLoader, *, calibrated: bool = True) -> np.ndarray:
        temperature = self.temperature_ if calibrated else 1.0
        return predict_proba(self.model_, loader, self._device, self._precision, temperature)

    def save(self, path: str | Path) -> Path:
        return save_model_file(path, self.model_.state_dict(), self.card_)


class SoftVoting:
    """The N-model baseline: mean of the checkpoints' softmax outputs. Each member keeps its own
    BatchNorm statistics, so no recalibration is needed.

    Averaging softens the members' confidences, so the mean gets its own temperature:
    ``fit(val_loader)`` sets ``temperature_`` (1.0 until then); ``predict_proba`` applies it.
    """

    def __init__(
        self, checkpoints: Sequence[str | Path], device: str = "auto", precision: str = "auto"
    ) -> None:
        if not checkpoints:
            raise ValueError("soft voting needs at least one checkpoint")
        self.checkpoints = [Path(p) for p in checkpoints]
        self.device = resolve_device(device)
        self.precision = Precision.resolve(precision, self.device)
        self.temperature_ = 1.0

    def load_member(self, path: Path) -> nn.Module:
        model = build_model(load_card(path), load_state(path)).to(self.device)
        return model.to(memory_format=torch.channels_last).eval()

    def member_probas(self, loader: DataLoader) -> list[np.ndarray]:
        """Each member's probabilities (one model in memory at a time)."""
        return [
            predict_proba(self.load_member(p), loader, self.device, self.precision)
            for p in self.checkpoints
        ]

    def fit(self, val_loader: DataLoader) -> SoftVoting:
        """Fit the temperature of the members' mean on validation images."""
        probas, targets = [], None
        for path in self.checkpoints:  # targets from the same passes (any loader order)
            logits, targets = predict_logits(
                self.load_member(path), val_loader, self.device, self.precision
            )
            probas.append(softmax(logits))
        self.temperature_ = TemperatureScaling().fit(np.mean(probas, axis=0), targets).temperature_
        return self

    def predict_proba(self, loader: DataLoader, *, calibrated: bool = True) -> np.ndarray:
        mean = np.mean(self.member_probas(loader), axis=0)
        return apply_temperature(mean, self.temperature_) if calibrated else mean
