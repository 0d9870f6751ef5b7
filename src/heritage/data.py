"""Images in memory, augmentation policies, and the datasets the trainer and soups read.

On a 2-core machine JPEG decoding and resizing cost as much as a forward pass of a small
network, and a small collection is read dozens of times. So every image is decoded once,
resized to the model's working size and kept as a uint8 tensor (:class:`ImageCache`); the
augmentations then run on those small tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from heritage.backbones import Preprocessing
from heritage.collection import load_image, to_rgb
from heritage.config import AugmentConfig
from heritage.progress import progress_bar


def _interpolation(name: str) -> InterpolationMode:
    return {
        "bicubic": InterpolationMode.BICUBIC,
        "bilinear": InterpolationMode.BILINEAR,
        "nearest": InterpolationMode.NEAREST,
    }.get(name, InterpolationMode.BICUBIC)


_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


def _pad_to_square(img: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    """Longer side to ``size``, centred on a square of the image's median border colour, so
    the padding looks like background rather than a frame the model could learn from."""
    w, h = img.size
    s = size / max(w, h)
    resized = img.resize((max(1, round(w * s)), max(1, round(h * s))), resample)
    pixels = np.asarray(img)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    fill = tuple(int(v) for v in np.median(border, axis=0))
    canvas = Image.new("RGB", (size, size), fill)
    canvas.paste(resized, ((size - resized.width) // 2, (size - resized.height) // 2))
    return canvas


def decode(image: str | Image.Image, prep: Preprocessing) -> torch.Tensor:
    """Decode and resize one image to the cached working size as a uint8 CHW tensor."""
    img = load_image(image) if isinstance(image, str) else to_rgb(image)
    size = prep.resize_size
    resample = _RESAMPLE.get(prep.interpolation, Image.Resampling.BICUBIC)
    if prep.resize_mode == "squash":
        img = img.resize((size, size), resample)
    elif prep.resize_mode == "pad":
        img = _pad_to_square(img, size, resample)
    else:  # shorter side to `size`, keep aspect ratio (timm's eval transform)
        w, h = img.size
        s = size / min(w, h)
        img = img.resize((max(size, round(w * s)), max(size, round(h * s))), resample)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


@dataclass
class ImageCache:
    """Decoded images at one working size, shared by the train, validation and BN datasets."""

    prep: Preprocessing
    images: dict[str, torch.Tensor] = field(default_factory=dict)
    threads: int = 4

    def load(self, paths: Sequence[str], description: str = "decoding images") -> None:
        todo = [p for p in dict.fromkeys(paths) if p not in self.images]
        if not todo:
            return
        with ThreadPoolExecutor(self.threads) as pool, progress_bar() as bar:
            task = bar.add_task(description, total=len(todo))
            for path, tensor in zip(
                todo, pool.map(lambda p: decode(p, self.prep), todo), strict=True
            ):
                self.images[path] = tensor
                bar.advance(task)

    def __getitem__(self, path: str) -> torch.Tensor:
        if path not in self.images:
            self.images[path] = decode(path, self.prep)
        return self.images[path]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() for t in self.images.values())


def train_transform(prep: Preprocessing, aug: AugmentConfig) -> v2.Transform:
    """Random crop / flip / rotate / colour on uint8 tensors, then normalise."""
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(
            prep.input_size,
            scale=aug.scale,
            ratio=aug.ratio,
            interpolation=_interpolation(prep.interpolation),
            antialias=True,
        )
    ]
    if aug.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(aug.hflip))
    if aug.vflip > 0:
        steps.append(v2.RandomVerticalFlip(aug.vflip))
    if aug.rotate > 0:
        steps.append(
            v2.RandomRotation(aug.rotate, interpolation=InterpolationMode.BILINEAR, fill=255)
        )
    if aug.color_jitter > 0:
        c = aug.color_jitter
        steps.append(v2.ColorJitter(brightness=c, contrast=c, saturation=c))
    if aug.grayscale > 0:
        steps.append(v2.RandomGrayscale(aug.grayscale))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(prep.mean, prep.std)]
    return v2.Compose(steps)


def eval_transform(prep: Preprocessing) -> v2.Transform:
    """Centre crop of the cached image (a no-op for ``squash`` and ``pad``), then normalise."""
    return v2.Compose(
        [
            v2.CenterCrop(prep.input_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(prep.mean, prep.std),
        ]
    )


class ImageDataset(Dataset):
    """(image tensor, class index) pairs over cached images; ``target`` is -1 when unknown."""

    def __init__(
        self,
        paths: Sequence[str],
        targets: Sequence[int] | np.ndarray | None,
        cache: ImageCache,
        transform: v2.Transform,
    ) -> None:
        self.paths = list(paths)
        self.targets = (
            np.full(len(self.paths), -1, dtype=np.int64)
            if targets is None
            else np.asarray(targets, dtype=np.int64)
        )
        if len(self.targets) != len(self.paths):
            raise ValueError(f"{len(self.paths)} paths but {len(self.targets)} targets")
        self.cache = cache
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.cache[self.paths[index]]), int(self.targets[index])


def tensor_to_pil(tensor: torch.Tensor) -> Image.Image:
    """For thumbnails and debugging: a cached uint8 CHW tensor back to a PIL image."""
    return F.to_pil_image(tensor)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    workers: int,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A loader with its own seeded generator (a resumed run restores its state, so the data
    order continues where it stopped) and pinned memory when a GPU is there."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        drop_last=drop_last,
        generator=generator,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
