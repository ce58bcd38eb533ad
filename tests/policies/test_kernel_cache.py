"""The compiled kernels' cache is named by every source compiled into them, so that an edit to a
file a kernel only calls into (physics, the miss probability) does not leave the old kernel in
the cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from numba.core import config

from perllm.policies import kernel_cache
from perllm.policies.cs_ucb_kernel import decide_kernel


@pytest.fixture
def sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the package's kernel sources, which the cache's name is read from."""
    policies = tmp_path / "perllm" / "policies"
    shutil.copytree(
        Path(kernel_cache.__file__).parent, policies, ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(kernel_cache._PHYSICS, policies.parent / "physics.py")
    monkeypatch.setattr(kernel_cache, "_POLICIES", policies)
    monkeypatch.setattr(kernel_cache, "_PHYSICS", policies.parent / "physics.py")
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    return policies


def name(sources: Path) -> str:
    return Path(kernel_cache.cache_directory.__wrapped__()).name  # type: ignore[attr-defined]


def test_an_edit_to_any_file_compiled_into_a_kernel_names_a_new_cache(sources: Path) -> None:
    first = name(sources)
    assert first == name(sources)  # the same sources, the same cache
    for edited in (sources / "miss.py", sources.parent / "physics.py", sources / "estimates.py"):
        text = edited.read_text()
        edited.write_text(text + "\n# an edit\n")
        assert name(sources) != first, edited.name
        edited.write_text(text)
    assert name(sources) == first


def test_files_that_compile_nothing_leave_the_cache_alone(sources: Path) -> None:
    first = name(sources)
    registry = sources / "registry.py"
    assert b"numba" not in registry.read_bytes() and b"kernel_cache" not in registry.read_bytes()
    registry.write_text(registry.read_text() + "\n# an edit\n")
    assert name(sources) == first


def test_a_numba_cache_dir_of_the_user_holds_the_named_cache(
    sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    directory = Path(kernel_cache.cache_directory.__wrapped__())
    assert directory.parent == tmp_path / "mine" and directory.name.startswith("numba-")


def test_the_kernels_cache_there_and_numba_s_setting_is_left_as_it_was() -> None:
    cache_path = Path(getattr(decide_kernel, "_cache")._cache_path)  # noqa: B009
    assert Path(kernel_cache.cache_directory()) in cache_path.parents
    assert vars(config)["CACHE_DIR"] != kernel_cache.cache_directory()
