"""The ``heritage`` command line: each command is a thin call into the Python API.

One module per command group; each registers its commands on the root ``app`` when imported,
in the order below (the order of ``heritage --help``). Heavy libraries (torch, timm,
scikit-learn) are imported inside the commands, so ``heritage --help`` and every
``heritage COMMAND --help`` answer without loading them.
"""

import importlib

from heritage.cli.base import app, prepare_help

for _group in ("images", "sweep", "demo", "metadata", "kg", "explore", "similarity"):
    importlib.import_module(f"heritage.cli.{_group}")
prepare_help(app)

__all__ = ["app"]
