"""The docs name only modules that exist, and the README's layout lists every top-level one, so
that neither can rot silently."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "perllm"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
TUNING = ROOT / "docs" / "cs-ucb-tuning.md"
README = ROOT / "README.md"

# `src/perllm/sim/world.py`, `perllm/bound/`, `perllm/policies/cs_ucb.py`
_PATH = re.compile(r"(?<![\w.~/-])(?:src/)?perllm/(?:[\w-]+/)*(?:[\w-]+\.py|[\w-]+/)")
# `perllm.metrics.summary.summarize`, `perllm.simulate`
_DOTTED = re.compile(r"`(perllm(?:\.\w+)+)`")


def _layout() -> str:
    """The code block of the README's layout section."""
    text = README.read_text()
    section = text[text.index("## Layout\n") :]
    section = section[: section.index("\n## ", 1)]
    return section[section.index("```\n") + 4 : section.index("\n```", section.index("```\n"))]


def _tree_paths(block: str) -> list[str]:
    """The entries of the layout's ``src/perllm/`` tree, as paths below the package."""
    paths = []
    inside = False
    for line in block.splitlines():
        if line.startswith("src/perllm/"):
            inside = True
            continue
        if inside and not line.startswith(" "):
            break
        match = re.match(r"  ([\w/]+(?:\.py|/))\s", line + " ")
        if inside and match:
            paths.append(match.group(1))
    return paths


def _resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted`` and look the rest up as attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            thing: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            thing = getattr(thing, name)
        return thing
    raise ModuleNotFoundError(dotted)


def test_the_readme_links_the_architecture_and_tuning_pages() -> None:
    assert ARCHITECTURE.exists() and TUNING.exists()
    assert "](docs/architecture.md)" in README.read_text()
    assert "](docs/cs-ucb-tuning.md)" in README.read_text()


@pytest.mark.parametrize("doc", [ARCHITECTURE, README, TUNING], ids=lambda p: p.name)
def test_every_module_path_named_exists(doc: Path) -> None:
    paths = {m.group(0) for m in _PATH.finditer(doc.read_text())}
    assert paths, f"{doc.name} names no module path"
    missing = [p for p in sorted(paths) if not (ROOT / "src" / p.removeprefix("src/")).exists()]
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


@pytest.mark.parametrize("doc", [ARCHITECTURE, README, TUNING], ids=lambda p: p.name)
def test_every_dotted_module_named_exists(doc: Path) -> None:
    for dotted in sorted({m.group(1) for m in _DOTTED.finditer(doc.read_text())}):
        _resolve(dotted)


def test_every_entry_of_the_readme_layout_exists() -> None:
    entries = _tree_paths(_layout())
    assert "domain.py" in entries and "gateway/routes/" in entries
    missing = [e for e in entries if not (PACKAGE / e).exists()]
    assert not missing, f"the README's layout lists paths that do not exist: {missing}"


def test_the_readme_layout_lists_every_top_level_module_and_package() -> None:
    block = _layout()
    names = [
        p.name + ("/" if p.is_dir() else "")
        for p in PACKAGE.iterdir()
        if (p.is_dir() and p.name != "__pycache__") or p.suffix == ".py"
    ]
    unlisted = [n for n in sorted(names) if not re.search(rf"(?<![\w/]){re.escape(n)}", block)]
    assert not unlisted, f"the README's layout does not list: {unlisted}"
