"""The docs name only modules, files and sections that exist, and the architecture page's layout
lists every top-level module, so that neither can rot silently.

Every Markdown page is checked: README.md, CHANGELOG.md and every ``docs/*.md`` (a page added
later is covered without editing this file)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "perllm"
DOCS = ROOT / "docs"
ARCHITECTURE = DOCS / "architecture.md"
README = ROOT / "README.md"
CHANGELOG = ROOT / "CHANGELOG.md"
PAGES = [README, CHANGELOG, *sorted(DOCS.glob("*.md"))]

# The pages the README's "where to go next" must link.
LINKED_FROM_README = ["guide", "concepts", "results", "limits", "lab-notebook", "architecture"]

# `src/perllm/sim/world.py`, `perllm/bound/`, `perllm/policies/cs_ucb.py`
_PATH = re.compile(r"(?<![\w.~/-])(?:src/)?perllm/(?:[\w-]+/)*(?:[\w-]+\.py|[\w-]+/)")
# `perllm.metrics.summary.summarize`, `perllm.simulate`
_DOTTED = re.compile(r"`(perllm(?:\.\w+)+)`")
# benchmarks/robustness.py, tests/gateway/, scenarios/gateway-example.yaml, profiles/..., docs/...
_REPO_PATH = re.compile(
    r"(?<![\w.~/-])((?:benchmarks|tests|scenarios|profiles|scripts|docs|src)/[\w.-]+(?:/[\w.-]+)*/?)"
)
# [text](target): relative links only (no scheme)
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _ids(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _layout() -> str:
    """The code block of the architecture page's layout section."""
    text = ARCHITECTURE.read_text()
    section = text[text.index("## Layout\n") :]
    end = section.find("\n## ", 1)
    section = section if end < 0 else section[:end]
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


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_the_readme_links_every_docs_page() -> None:
    text = README.read_text()
    missing = [p for p in LINKED_FROM_README if f"](docs/{p}.md" not in text]
    assert not missing, f"README.md does not link docs/: {missing}"
    assert all((DOCS / f"{p}.md").exists() for p in LINKED_FROM_README)


def test_the_readme_stays_short() -> None:
    assert len(README.read_text().splitlines()) <= 250


def test_there_are_docs_pages_to_check() -> None:
    assert {ARCHITECTURE, README, CHANGELOG} <= set(PAGES)
    for page in (ARCHITECTURE, DOCS / "concepts.md"):
        assert _PATH.search(page.read_text()), f"{page.name} names no module path"


@pytest.mark.parametrize("doc", PAGES, ids=_ids)
def test_every_module_path_named_exists(doc: Path) -> None:
    paths = {m.group(0) for m in _PATH.finditer(doc.read_text())}
    missing = [p for p in sorted(paths) if not (ROOT / "src" / p.removeprefix("src/")).exists()]
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


@pytest.mark.parametrize("doc", PAGES, ids=_ids)
def test_every_dotted_module_named_exists(doc: Path) -> None:
    for dotted in sorted({m.group(1) for m in _DOTTED.finditer(doc.read_text())}):
        _resolve(dotted)


@pytest.mark.parametrize("doc", PAGES, ids=_ids)
def test_every_repository_file_named_exists(doc: Path) -> None:
    paths = {m.group(1).rstrip(".") for m in _REPO_PATH.finditer(doc.read_text())}
    missing = [p for p in sorted(paths) if not (ROOT / p).exists()]
    assert not missing, f"{doc.name} names files that do not exist: {missing}"


@pytest.mark.parametrize("doc", PAGES, ids=_ids)
def test_every_relative_link_and_anchor_exists(doc: Path) -> None:
    broken = []
    for target in _LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        file, _, anchor = target.partition("#")
        page = doc if not file else (doc.parent / file).resolve()
        dangling = (
            page.exists() and bool(anchor) and page.suffix == ".md" and anchor not in _anchors(page)
        )
        if not page.exists() or dangling:
            broken.append(target)
    assert not broken, f"{doc.name} has broken links: {broken}"


def test_every_entry_of_the_layout_exists() -> None:
    entries = _tree_paths(_layout())
    assert "domain.py" in entries and "gateway/routes/" in entries
    missing = [e for e in entries if not (PACKAGE / e).exists()]
    assert not missing, f"the architecture page's layout lists paths that do not exist: {missing}"


def test_the_layout_lists_every_top_level_module_and_package() -> None:
    block = _layout()
    names = [
        p.name + ("/" if p.is_dir() else "")
        for p in PACKAGE.iterdir()
        if (p.is_dir() and p.name != "__pycache__") or p.suffix == ".py"
    ]
    unlisted = [n for n in sorted(names) if not re.search(rf"(?<![\w/]){re.escape(n)}", block)]
    assert not unlisted, f"the architecture page's layout does not list: {unlisted}"
