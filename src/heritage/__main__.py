"""``python -m heritage`` is the ``heritage`` command; ``torchrun ... -m heritage train`` starts
a data-parallel run (:mod:`heritage.training.distributed`)."""

from heritage.cli import app

app(prog_name="heritage")
