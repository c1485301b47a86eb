"""The project's docs are in the repository and the code's references to them resolve.

Every ``docs/ALGORITHMS.md §N`` a source file cites must name a section heading of that file,
every ``docs/<name>.md`` mentioned in code or the README must exist, and every relative link in the
README and in ``docs/`` must point to a file (and, with ``#anchor``, to a heading) that exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALGORITHMS = ROOT / "docs" / "ALGORITHMS.md"
_SECTION = re.compile(r"§\s?(\d+(?:\.\d+)?)(?:\s?[-–]\s?(\d+(?:\.\d+)?))?")
_DOC_PATH = re.compile(r"(?<![\w/.])docs/([A-Za-z_]+\.md)")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_SOURCE_FOLDERS = ("secagg", "privacy", "storage", "federation", "unlearning", "cli", "tests", "bench")


def _sources(*suffixes: str) -> list[Path]:
    """The project's own files with these suffixes (README.md and the package, test and bench folders)."""
    found = [ROOT / "README.md"] if ".md" in suffixes else []
    for folder in _SOURCE_FOLDERS:
        found += [path for path in sorted((ROOT / folder).rglob("*"))
                  if path.suffix in suffixes and path.is_file() and "out" not in path.relative_to(ROOT).parts
                  and path != Path(__file__).resolve()]
    return found


def _headings(path: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in path.read_text(encoding="utf-8").splitlines()
            if re.match(r"#{1,6} ", line)]


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _algorithm_sections() -> set[str]:
    sections = set()
    for heading in _headings(ALGORITHMS):
        match = re.match(r"(\d+(?:\.\d+)?)\.?\s", heading)
        if match:
            sections.add(match.group(1))
    return sections


def _citations() -> list[tuple[str, int, str]]:
    """(file, line number, section) for every § on a line that names docs/ALGORITHMS.md."""
    found = []
    for path in _sources(".py", ".md"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "docs/ALGORITHMS.md" not in line:
                continue
            for match in _SECTION.finditer(line):
                found += [(str(path.relative_to(ROOT)), number, s) for s in match.groups() if s]
    return found


def test_the_code_cites_algorithm_sections_and_each_exists():
    citations = _citations()
    assert len(citations) >= 20  # the scan finds the code's citations (an empty scan would prove nothing)
    sections = _algorithm_sections()
    missing = [f"{name}:{number} cites §{section}" for name, number, section in citations if section not in sections]
    assert not missing, "sections cited but absent from docs/ALGORITHMS.md:\n" + "\n".join(missing)


def test_the_section_check_would_catch_a_missing_section():
    assert "9.9" not in _algorithm_sections()
    assert {"1.4", "2.6", "3.5", "4", "6.4"} <= _algorithm_sections()


def test_every_docs_file_mentioned_in_code_or_readme_exists():
    missing = []
    for path in _sources(".py", ".md"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for name in _DOC_PATH.findall(line):
                if not (ROOT / "docs" / name).is_file():
                    missing.append(f"{path.relative_to(ROOT)}:{number} mentions docs/{name}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("document", ["README.md", "docs/ALGORITHMS.md", "docs/ARCHITECTURE.md", "docs/STORAGE.md",
                                      "docs/UNLEARNING.md", "docs/THREAT_MODEL.md"])
def test_relative_links_resolve(document):
    path = ROOT / document
    broken = []
    for target in _LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL: not checked offline
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in {_anchor(h) for h in _headings(linked)}:
            broken.append(target)
    assert not broken, f"{document}: broken links {broken}"
