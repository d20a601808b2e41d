"""The method notes the code cites are in the repository, with every section the code names."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTES = ROOT / "docs" / "method-notes.md"


def project_text_files() -> list[Path]:
    folders = ("dprope", "configs", "launch", "scripts", "tests", "docs")
    return [ROOT / "README.md"] + [
        path
        for folder in folders
        for path in (ROOT / folder).rglob("*")
        if path.suffix in (".py", ".yaml", ".md")
    ]


def test_every_citation_of_the_method_notes_names_a_section_they_have():
    sections = {int(n) for n in re.findall(r"^## (\d+)\. ", NOTES.read_text(), flags=re.M)}
    assert sections == set(range(1, 10))
    cited = 0
    for path in project_text_files():
        if path == NOTES:
            continue
        text = path.read_text(errors="replace")
        for match in re.finditer(r"\S*method[- ]notes\S*,?\s+(sections?\s+)?(\d+)(-(\d+))?", text):
            where = f"{path.relative_to(ROOT)}: {match.group(0)!r}"
            assert "docs/method-notes.md," in match.group(0), f"{where}: cite docs/method-notes.md"
            first, last = int(match.group(2)), int(match.group(4) or match.group(2))
            assert set(range(first, last + 1)) <= sections, f"{where}: no such section"
            cited += 1
    assert cited >= 10  # the rope, train and eval modules cite it
