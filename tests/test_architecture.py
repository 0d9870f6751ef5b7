"""docs/architecture.md stays true to the code: every arrow of its data-flow diagram is backed
by an import, and the page is what tools/architecture.py generates today."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tool():
    spec = importlib.util.spec_from_file_location(
        "architecture", ROOT / "tools" / "architecture.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_flow_arrow_is_backed_by_the_imports() -> None:
    tool = _tool()
    graph = tool.import_graph()
    assert tool.unbacked(graph) == []
    assert "torch" not in graph  # only heritage's own modules are nodes
    # and the check can fail: an arrow the code does not have is reported
    tool.FLOW.append(tool.Flow("explore", "collection", "nothing"))
    try:
        assert tool.unbacked(graph) == ["explore -> collection: collection does not import explore"]
    finally:
        tool.FLOW.pop()


def test_the_architecture_page_is_up_to_date() -> None:
    tool = _tool()
    assert (ROOT / "docs" / "architecture.md").read_text() == tool.page(tool.import_graph()), (
        "docs/architecture.md is stale: run python tools/architecture.py"
    )
