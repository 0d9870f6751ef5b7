"""Feature regularisers: terms added to the loss that act on the penultimate features.

Entropic regularisation (Baena, Drumetz, Gripon, "Preserving Fine-Grain Feature Information in
Classification via Entropic Regularization", arXiv 2208.03684): cross-entropy on coarse labels
only needs features that separate those labels, and it happily collapses everything else,
including the finer distinctions a collection's curators may care about later. Subtracting
``λ·Ĥ(features)`` from the loss keeps the features spread out, so fine-grained information
survives. ``Ĥ`` is the Kozachenko–Leonenko nearest-neighbour entropy estimate over the
mini-batch, optionally within each class: differentiable, and no density model to fit.

Where the features are taken matters as much as λ: by default the regulariser acts on the
penultimate (pooled) features the head sees, but ``layer`` names any module of the model
(``blocks.5``, ``conv_head``) whose output, averaged over space or tokens, is used instead;
a forward hook taps it during training only (:meth:`EntropyRegulariser.tapping`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from heritage.config import EntropyConfig, check_entropy


def _knn_log_distances(
    features: torch.Tensor, groups: torch.Tensor | None, k: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: log(distance to its k-th nearest other row of the same group + eps), whether
    the row's group has the k + 1 rows that needs, and the group's size. float32 throughout;
    needs n >= k + 1.

    Distances come from the Gram matrix (memory n², not n²·d as a difference tensor would be),
    the diagonal and other groups are set to +inf before ``topk``, and the square root is taken
    of a value clamped at eps² (the derivative of sqrt is infinite at 0: cdist's gradient is NaN
    for duplicate rows, this one is finite). Gram rounding leaves near-duplicates about 1e-3 of
    the feature norm apart rather than 0, far below the distances the regulariser acts on.
    """
    n = features.shape[0]
    # autocast would run the matmul in bf16/fp16 whatever the input dtype
    with torch.autocast(device_type=features.device.type, enabled=False):
        x = features.float()
        sq = (x * x).sum(dim=1)
        d2 = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp(min=0.0)
    eye = torch.eye(n, dtype=torch.bool, device=x.device)
    if groups is None:
        excluded, size = eye, torch.full((n,), n, device=x.device)
    else:
        same = groups[:, None] == groups[None, :]
        excluded, size = eye | ~same, same.sum(dim=1)
    valid = size >= k + 1
    kth = d2.masked_fill(excluded, float("inf")).topk(k, dim=1, largest=False).values[:, -1]
    kth = torch.where(valid, kth, torch.ones_like(kth))  # no inf into the graph
    return torch.log(torch.sqrt(kth.clamp(min=eps * eps)) + eps), valid, size


def knn_entropy(features: torch.Tensor, k: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko–Leonenko entropy estimate up to the additive constant and the factor d:
    mean over rows of log(distance to the k-th nearest other row + eps). Differentiable.

    The constant (digamma terms and the unit-ball volume) and d do not depend on the features,
    so leaving them out changes neither the gradient's direction nor which set of features
    scores higher; it keeps λ independent of the feature width. Needs at least k + 1 rows.
    """
    check_entropy(0.0, k)
    if features.ndim != 2:
        raise ValueError(f"features must be (n, d), got shape {tuple(features.shape)}")
    if features.shape[0] < k + 1:
        raise ValueError(f"a k={k} estimate needs at least {k + 1} rows, got {features.shape[0]}")
    log_dist, _, _ = _knn_log_distances(features, None, k, eps)
    return log_dist.mean()


class EntropyRegulariser(nn.Module):
    """``-weight·Ĥ(features)``, to be added to the loss.

    Global (default): ``Ĥ`` over the whole batch; fewer than k + 1 rows gives zero.
    ``per_class``: ``Ĥ`` within each class present with at least k + 1 rows, averaged with equal
    weight per class, so the frequent classes of a long-tailed batch do not drown the rare ones
    (the point is to keep fine-grained variation inside every class); between-class distances
    play no part. No class with k + 1 rows gives zero. A class-pair batch sampler makes sure
    classes do have k + 1 rows. Zeros keep a ``grad_fn``, so ``backward()`` always works.
    """

    def __init__(
        self,
        weight: float,
        per_class: bool = False,
        k: int = 1,
        normalise: bool = True,
        layer: str = "",
    ) -> None:
        super().__init__()
        check_entropy(weight, k)
        self.weight = float(weight)
        self.per_class = per_class
        self.k = k
        self.normalise = normalise
        self.layer = layer
        self._tapped: torch.Tensor | None = None

    @classmethod
    def from_config(cls, config: EntropyConfig) -> EntropyRegulariser:
        return cls(config.weight, config.per_class, config.k, config.normalise, config.layer)

    @contextlib.contextmanager
    def tapping(self, model: nn.Module) -> Iterator[None]:
        """While open, keep the output of ``model``'s module ``layer`` from each forward pass
        that builds a graph (so validation passes leave it alone); a no-op without ``layer``.
        The hook is removed on exit: checkpoints, copies and evaluation never carry it."""
        if not self.layer:
            yield
            return
        names = dict(model.named_modules())
        if self.layer not in names:
            tops = ", ".join(name for name, _ in model.named_children())
            raise ValueError(
                f"entropy layer {self.layer!r} is not a module of the model; its top-level "
                f"modules: {tops} (nested ones are named like blocks.5)"
            )

        def keep(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if torch.is_grad_enabled():
                self._tapped = output

        handle = names[self.layer].register_forward_hook(keep)
        try:
            yield
        finally:
            handle.remove()
            self._tapped = None

    def _layer_features(self, n: int) -> torch.Tensor:
        """The tapped output for the batch's first ``n`` rows (objectives that forward real and
        mixed images together put the real ones first), averaged over space or tokens."""
        if self._tapped is None:
            raise RuntimeError(
                f"entropy layer {self.layer!r} saw no forward pass: run the model inside "
                "`with regulariser.tapping(model):`"
            )
        if not isinstance(self._tapped, torch.Tensor):
            raise TypeError(
                f"entropy layer {self.layer!r} returns {type(self._tapped).__name__}, not a "
                "tensor: name a module whose output is one feature map"
            )
        x = self._tapped[:n]
        return x.flatten(2).mean(dim=2) if x.ndim == 4 else x.mean(dim=1) if x.ndim == 3 else x

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Returns −weight·Ĥ (to be added to the loss) of ``features``, or of the tapped
        layer's output for the same images when ``layer`` is set."""
        if self.layer:
            features = self._layer_features(features.shape[0])
        if features.ndim != 2:
            raise ValueError(f"features must be (n, d), got shape {tuple(features.shape)}")
        x = features.float()
        zero = x.sum() * 0.0
        if self.weight == 0:
            return zero
        groups = None
        if self.per_class:
            if labels is None:
                raise ValueError(
                    "per-class entropy needs one hard label per image, and input mixing "
                    "(MixUp/CutMix) gives none: turn per_class off or turn off the mixing"
                )
            if labels.shape != (x.shape[0],):
                raise ValueError(
                    f"labels must be ({x.shape[0]},) to match the features, "
                    f"got {tuple(labels.shape)}"
                )
            groups = labels.to(x.device)
        if x.shape[0] < self.k + 1:  # no row (and so no class) has k other rows
            return zero
        if self.normalise:
            x = F.normalize(x, dim=1)
        log_dist, valid, size = _knn_log_distances(x, groups, self.k, eps=1e-8)
        # equal weight per class: row i counts 1/size_i, so each class's rows sum to 1
        row_weight = torch.where(valid, 1.0 / size.float(), torch.zeros_like(log_dist))
        estimate = (row_weight * log_dist).sum() / row_weight.sum().clamp(min=1e-12)
        return torch.where(valid.any(), -self.weight * estimate, zero)
