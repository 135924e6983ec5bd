"""Every citation in the repository points at something a reader of the repository can open.

Facts about Tradovate come from ``docs/protocol.md`` (cited as ``docs/protocol.md §N``, or as a
bare ``§N`` in a file that cites it, or as ``[§N](protocol.md#sN)`` from another doc), whose
sources table gives each source key (``P-RL``, ``OAS``, ...) a public URL. Working notes kept
outside the repository must never be cited: a reader cannot open them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = ROOT / "docs" / "protocol.md"
SCANNED = ("engine", "tests", "docs", "examples", "benchmarks", "statecharts")
SUFFIXES = {".py", ".md", ".json", ".dot", ".mmd", ".toml"}
# Assembled from parts so that this file does not match itself.
UNREACHABLE = re.compile(
    "|".join(
        [
            "tradovate" + r"-protocol",
            "trio" + r"-stack-notes",
            "reliability" + r" notes",
            "reliability" + r"-and-performance",
            "peer" + r"-clients",
            "design" + r"[- ]notes",
            "design" + r" card",
            "market-data" + r"-and-conformance",
            r"\.\./" + "shared",
            "/work/" + "shared",
        ]
    ),
    re.IGNORECASE,
)


def scanned_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "pyproject.toml"]
    for folder in SCANNED:
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in SUFFIXES and p.is_file()]
    return sorted(files)


FILES = scanned_files()


def sections() -> set[str]:
    text = PROTOCOL.read_text()
    headings = set(re.findall(r"^## §(\d+)\. ", text, re.M))
    anchors = set(re.findall(r'<a id="s(\d+)"></a>', text))
    assert headings == anchors, "every section of docs/protocol.md has its anchor"
    return headings


def test_files_are_scanned() -> None:
    assert PROTOCOL in FILES
    assert len([p for p in FILES if p.suffix == ".py"]) > 50


def test_no_citation_of_a_document_outside_the_repository() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in FILES
        if path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if UNREACHABLE.search(line)
    ]
    assert not found, "cite docs/protocol.md or a public URL instead:\n" + "\n".join(found)


def test_protocol_sections_cited_exist() -> None:
    known = sections()
    cited = {
        (path.relative_to(ROOT), section)
        for path in FILES
        for section in re.findall(r"protocol\.md §(\d+)", path.read_text())
        + re.findall(r"protocol\.md#s(\d+)", path.read_text())
    }
    assert cited, "the scan finds citations"
    missing = sorted(f"{path}: §{section}" for path, section in cited if section not in known)
    assert not missing, missing


@pytest.mark.parametrize(
    "path",
    [p for p in FILES if p != PROTOCOL and "§" in p.read_text()],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_a_file_with_section_marks_says_whose_sections_they_are(path: Path) -> None:
    text = path.read_text()
    bare = re.sub(r"\[§\d+(\.\d+)?\]\(protocol\.md#s\d+\)", "", text)
    if "§" not in bare:
        return  # every mark is a link into docs/protocol.md
    assert "docs/protocol.md" in text, f"{path}: '§N' without naming docs/protocol.md"


def test_every_source_key_is_in_the_sources_table() -> None:
    table = PROTOCOL.read_text().split("## Sources", 1)[1].split("<a id=", 1)[0]
    keys = {key for key in re.findall(r"^\| (\S+) \|", table, re.M) if key not in ("key", "---")}
    assert {"P-RL", "P-S2", "OAS", "WSMD", "JS"} <= keys
    used = {
        key
        for path in FILES
        for key in re.findall(r"\bP-[A-Z0-9]+\b", path.read_text())
        if path != PROTOCOL
    }
    assert used, "the scan finds source keys"
    assert used <= keys, sorted(used - keys)
