"""Data-parallel throughput (issue 20): the same ich-mekong run trained by 1 and by 2
processes (``torchrun --nproc-per-node N -m heritage train``: gloo on CPU, NCCL on CUDA), so that
a user sees what a second process buys on their hardware. Reported, not targeted: on a 2-core
machine two processes share the cores one process already uses.

    python benchmarks/distributed.py                       # 1 and 2 processes, seed 0
    python benchmarks/distributed.py --nprocs 1 2 4 --device cuda --seeds 0 1

Records ``benchmarks/results/distributed.json``: per process count, training images per second
and training seconds (from the run's ``train_summary.json``), wall seconds of the whole command
(start, probe head, training, validation) and the last epoch's validation macro-F1 (a check
that both learn; test is not read).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

try:  # run as a script (python benchmarks/distributed.py) or as a module
    from records import RecordBook
except ImportError:
    from benchmarks.records import RecordBook

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("HERITAGE_DATA", ROOT.parent / "shared" / "datasets"))


def train(manifest: Path, out: Path, nproc: int, args: argparse.Namespace) -> float:
    """One fresh run of ``heritage train`` with ``nproc`` processes; its wall seconds."""
    if out.exists():
        shutil.rmtree(out)
    # torchrun for every count, 1 included, so that each pays the same launch cost
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={nproc}", "-m", "heritage", "train", str(manifest)]
    command += ["--out", str(out), "--epochs", str(args.epochs), "--seed", str(args.seed_now)]
    command += ["--device", args.device]
    env = {**os.environ, "HERITAGE_NO_PROGRESS": "1"}
    t0 = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ich-mekong")
    parser.add_argument("--nprocs", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=Path, default=ROOT / "benchmarks" / "runs" / "distributed")
    args = parser.parse_args()

    from heritage.runtime import hardware_label, resolve_device

    book = RecordBook("distributed", hardware_label(resolve_device(args.device)))
    manifest = DATA / args.dataset / "manifest.csv"
    for seed in args.seeds:
        args.seed_now = seed
        for nproc in args.nprocs:
            out = args.runs / args.dataset / f"seed{seed}" / f"n{nproc}"
            wall = train(manifest, out, nproc, args)
            summary = json.loads((out / "train_summary.json").read_text())
            history = json.loads((out / "history.json").read_text())
            method = f"{nproc}_process" + ("es" if nproc > 1 else "")
            book.add(args.dataset, method, "train_images_per_second",
                     summary["train_images_per_second"])  # fmt: skip
            book.add(args.dataset, method, "train_seconds", summary["train_seconds"])
            book.add(args.dataset, method, "wall_seconds", wall)
            book.add(args.dataset, method, "val_macro_f1", history[-1]["val_macro_f1"])
            book.add(args.dataset, method, "epochs", args.epochs)
            print(f"{nproc} process(es): {summary['train_images_per_second']:.1f} images/s")
    print(f"records written to {book.write()}")


if __name__ == "__main__":
    main()
