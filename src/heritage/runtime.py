"""Devices, precision, threads and seeds: decided here once, plugged into every loop.

Keeping these out of the training loop (as Lightning Fabric does) means the same code runs on a
2-core laptop and on a GPU without a single ``if cuda`` in the model or trainer code.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


def check_device(spec: str) -> str:
    """``spec`` when it names a device (``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``, …),
    else a ValueError saying which names work. Whether that device is present is checked
    only when it is used (:func:`resolve_device`), so a config written on a GPU machine still
    loads elsewhere."""
    if spec == "auto":
        return spec
    try:
        torch.device(spec)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device {spec!r} is not a device name; use auto, cpu, cuda, cuda:N (the N-th GPU) "
            "or mps"
        ) from exc
    return spec


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; anything else is passed to torch."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(check_device(spec))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {spec!r} was asked for but CUDA is not available; use 'auto' or 'cpu'"
        )
    return device


def configure_threads(num_threads: int | None = None) -> int:
    """Use every available core for intra-op parallelism (torch may undercount in containers)."""
    if num_threads is None:
        cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        num_threads = len(cores) if cores else (os.cpu_count() or 1)
    n = num_threads
    torch.set_num_threads(n)
    return n


def resolve_workers(workers: int | None, device: torch.device) -> int:
    """Data-loader processes. ``None``: none on CPU (the cores are busier computing; images are
    cached in memory), several on an accelerator so augmentation keeps it fed."""
    if workers is not None:
        return workers
    if device.type == "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(8, (cores or 1) - 1))


def seed_everything(seed: int) -> None:
    """The one place seeds are set: Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Precision:
    """Mixed precision policy: bf16 autocast on CUDA by default, full fp32 on CPU (where bf16 is
    slower on most machines and fp16 is unsupported for many kernels)."""

    dtype: torch.dtype | None

    @classmethod
    def resolve(cls, spec: str, device: torch.device) -> Precision:
        if spec == "auto":
            spec = "bf16" if device.type == "cuda" else "fp32"
        table = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
        if spec not in table:
            raise ValueError(f"precision must be one of auto, {', '.join(table)}; got {spec!r}")
        return cls(table[spec])

    @contextlib.contextmanager
    def autocast(self, device: torch.device) -> Iterator[None]:
        if self.dtype is None:
            yield
        else:
            with torch.autocast(device_type=device.type, dtype=self.dtype):
                yield


def hardware_label(device: torch.device, processes: int = 1) -> str:
    """A short label for benchmark records, e.g. ``cpu-2core`` or ``cuda-NVIDIA H100 80GB HBM3``;
    a data-parallel run's is prefixed with its number of processes (``2x cpu-1core``: two
    processes of one core each), since a process's own share alone would understate it."""
    if device.type == "cuda":
        label = f"cuda-{torch.cuda.get_device_name(device)}"
    else:
        label = f"cpu-{torch.get_num_threads()}core"
    return label if processes == 1 else f"{processes}x {label}"
