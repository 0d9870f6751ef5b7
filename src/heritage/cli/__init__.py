"""The ``heritage`` command line: each command is a thin call into the Python API.

One module per command group; each registers its commands on the root ``app`` when imported.
Heavy libraries (torch, timm, scikit-learn) are imported inside the commands, so
``heritage --help`` and every ``heritage COMMAND --help`` answer without loading them.
"""

from heritage.cli import demo, explore, images, kg, metadata, similarity  # noqa: F401  (register)
from heritage.cli.base import app

__all__ = ["app"]
