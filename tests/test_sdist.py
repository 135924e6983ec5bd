"""The source distribution carries what a packager or auditor needs to check the library.

Built offline with the build backend itself (hatchling's PEP 517 hook), no isolated
environment and no download: the sdist must hold the tests, docs, examples, benchmarks,
statecharts, LICENSE and CHANGELOG next to the package, and nothing from a local venv.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import hatchling.build
import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("docs", "examples", "benchmarks", "statecharts", "tests", "engine/trio_tradovate")


@pytest.fixture(scope="module")
def sdist_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    out = tmp_path_factory.mktemp("sdist")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        name = hatchling.build.build_sdist(str(out))
    with tarfile.open(out / name) as archive:
        prefix = name.removesuffix(".tar.gz") + "/"
        return {member.removeprefix(prefix) for member in archive.getnames()}


def test_sdist_has_the_top_level_files(sdist_names: set[str]) -> None:
    assert {"LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "Makefile"} <= sdist_names


def test_sdist_has_every_source_of_the_folders(sdist_names: set[str]) -> None:
    expected = {
        str(path.relative_to(ROOT))
        for folder in FOLDERS
        for path in (ROOT / folder).rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.suffix in {".py", ".md", ".json", ".dot", ".mmd", ".typed"}
    }
    assert "docs/protocol.md" in expected
    assert "examples/place_order.py" in expected
    assert "statecharts/connection.mmd" in expected
    missing = sorted(expected - sdist_names)
    assert not missing, missing


def test_sdist_has_nothing_local(sdist_names: set[str]) -> None:
    local = [
        name
        for name in sdist_names
        if name.startswith((".venv", ".venvs/", "certification/")) or "__pycache__" in name
    ]
    assert not local, local


def test_license_is_mit_and_matches_the_metadata() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the trio-tradovate authors" in text
    assert 'license = "MIT"' in (ROOT / "pyproject.toml").read_text()
