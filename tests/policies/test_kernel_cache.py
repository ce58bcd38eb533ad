"""The compiled kernels' cache is named by every source a kernel could compile in, so that an
edit to a file a kernel only calls into (physics, the miss probability) does not leave the old
kernel in the cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from numba.core import config

from perllm.policies import kernel_cache


@pytest.fixture
def sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the package's sources, which the cache's name is read from."""
    policies = tmp_path / "perllm" / "policies"
    package = Path(kernel_cache.__file__).parent
    shutil.copytree(package, policies, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(kernel_cache._PHYSICS, policies.parent / "physics.py")
    monkeypatch.setattr(kernel_cache, "_POLICIES", policies)
    monkeypatch.setattr(kernel_cache, "_PHYSICS", policies.parent / "physics.py")
    return policies


def digest() -> str:
    return str(kernel_cache.sources_digest.__wrapped__())


def test_an_edit_to_any_file_a_kernel_compiles_in_names_a_new_cache(sources: Path) -> None:
    first = digest()
    assert first == digest()  # the same sources, the same cache
    for edited in (sources / "miss.py", sources.parent / "physics.py", sources / "estimates.py"):
        text = edited.read_text()
        edited.write_text(text + "\n# an edit\n")
        assert digest() != first, edited.name
        edited.write_text(text)
    assert digest() == first


def test_the_cache_is_under_numba_s_directory_where_one_is_set(tmp_path: Path) -> None:
    directory = Path(kernel_cache.cache_directory(str(tmp_path / "mine")))
    assert directory.parent == tmp_path / "mine"
    assert directory.name == f"numba-{kernel_cache.sources_digest()}"


def test_a_read_only_package_caches_under_the_user_s_cache(
    sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernel_cache, "_writable", lambda directory: False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    directory = Path(kernel_cache.cache_directory())
    assert directory.parent == tmp_path / "xdg" / "perllm"
    assert directory.name.startswith("numba-")


def test_a_kernel_caches_there_and_numba_s_setting_is_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = vars(config)
    monkeypatch.setitem(settings, "CACHE_DIR", str(tmp_path / "theirs"))

    def twice(x: float) -> float:
        return 2.0 * x

    compiled = kernel_cache.kernel(twice)
    cache_path = Path(getattr(compiled, "_cache")._cache_path)  # noqa: B009
    assert Path(kernel_cache.cache_directory(str(tmp_path / "theirs"))) in cache_path.parents
    assert settings["CACHE_DIR"] == str(tmp_path / "theirs")

    def broken(x: float) -> float:
        return x

    monkeypatch.setattr(kernel_cache, "njit", lambda **options: _raise)
    with pytest.raises(RuntimeError):
        kernel_cache.kernel(broken)
    assert settings["CACHE_DIR"] == str(tmp_path / "theirs")


def _raise(func: object) -> object:
    raise RuntimeError("no compiler")
