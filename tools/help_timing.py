"""Time ``heritage --help`` and every ``heritage COMMAND --help``: median seconds and peak memory.

    python tools/help_timing.py                  # every command, 5 runs each, a Markdown table
    python tools/help_timing.py --runs 3 kg      # only the commands whose path starts so
    python tools/help_timing.py --check          # exit 1 if one is over 0.5 s or 150 MB
    python tools/help_timing.py --against OLD/src  # beside another checkout's (before a change)
    python tools/help_timing.py --no-bytecode    # compiling heritage at every start

Help is what people run first and most often, so it must answer at once on a modest machine:
the command line imports no heavy library until a command runs (tests/test_front_door.py
checks that), and this script measures what is left. Each run is a fresh interpreter started
the way the installed ``heritage`` script starts, so import time counts in full; peak memory is
the child's maximum resident set size. Bytecode is cached (``PYTHONDONTWRITEBYTECODE`` is
dropped for the children), as it is for an installed package: the first run writes it, the
median is that of warm runs. ``--no-bytecode`` times a copy of each tree without bytecode
instead, with ``PYTHONDONTWRITEBYTECODE=1``, as a checkout runs where that is set: every
heritage module is compiled at every start. With ``--against``, the two trees' runs
alternate, so that a machine busy with other work slows both alike.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
START = "import sys\nfrom heritage.cli import app\nsys.argv[0] = 'heritage'\nsys.exit(app())"
LIMIT_SECONDS, LIMIT_MB = 0.5, 150.0


def commands() -> list[list[str]]:
    """Every command path of this checkout's command line, hidden aliases left out."""
    sys.dont_write_bytecode = True  # the children decide about bytecode, not this process
    sys.path.insert(0, str(SRC))
    from heritage.cli import app
    from heritage.cli.base import command_paths

    return command_paths(app)


def measure(argv: list[str], src: Path, bytecode: bool) -> tuple[float, float, float]:
    """Wall seconds, processor seconds and peak resident memory (MB) of one
    ``heritage ARGV --help``; processor time varies less than wall time on a busy machine."""
    env = {**os.environ, "PYTHONPATH": str(src), "COLUMNS": "100"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if not bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", START, *argv, "--help"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, _, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if child.stderr is not None and (err := child.stderr.read()):
        raise RuntimeError(f"heritage {' '.join(argv)} --help failed: {err.decode()}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # KiB on Linux


def summary(runs: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """Median wall and processor seconds, and the most memory, of some runs."""
    return (
        statistics.median(s for s, _, _ in runs),
        statistics.median(c for _, c, _ in runs),
        max(m for _, _, m in runs),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefix", nargs="*", help="only the commands whose path starts so")
    parser.add_argument("--runs", type=int, default=5, help="runs per command (median taken)")
    parser.add_argument("--check", action="store_true", help="exit 1 if one is over the limits")
    parser.add_argument("--src", type=Path, default=SRC, help="the src folder to time")
    parser.add_argument("--against", type=Path, help="another src folder, timed alongside")
    parser.add_argument("--no-bytecode", action="store_true", help="compile at every start")
    args = parser.parse_args()
    trees = [args.src.resolve()] + ([args.against.resolve()] if args.against else [])
    with tempfile.TemporaryDirectory() as scratch:
        if args.no_bytecode:  # copies without __pycache__, which nothing will write
            skip = shutil.ignore_patterns("__pycache__")
            trees = [
                shutil.copytree(t, Path(scratch, str(n)), ignore=skip) for n, t in enumerate(trees)
            ]
        return report(args, trees)


def report(args: argparse.Namespace, trees: list[Path]) -> int:
    """Time every command in each of ``trees``, side by side; print the table."""
    columns = "median s | median CPU s | max MB"
    header = f"| command | {columns} |" + (f" before: {columns} |" if args.against else "")
    print(header + "\n| --- |" + " ---: |" * 3 * len(trees))
    over = []
    for argv in commands():
        if argv[: len(args.prefix)] != args.prefix:
            continue
        runs: list[list[tuple[float, float, float]]] = [[] for _ in trees]
        for _ in range(args.runs):  # the trees in turn
            for tree, done in zip(trees, runs, strict=True):
                done.append(measure(argv, tree, bytecode=not args.no_bytecode))
        name = " ".join(["heritage", *argv, "--help"])
        cells = [f"{s:.2f} | {c:.2f} | {m:.0f}" for s, c, m in map(summary, runs)]
        print(f"| `{name}` | " + " | ".join(cells) + " |", flush=True)
        seconds, _, mb = summary(runs[0])
        if seconds > LIMIT_SECONDS or mb > LIMIT_MB:
            over.append(name)
    if over:
        print(f"over {LIMIT_SECONDS} s or {LIMIT_MB:.0f} MB: {', '.join(over)}", file=sys.stderr)
    return 1 if args.check and over else 0


if __name__ == "__main__":
    sys.exit(main())
