"""The project's own documentation holds together: every link and every citation resolves.

Docstrings and comments cite a page of docs/ by file and heading anchor (or the benchmark page, benchmarks/README.md)
instead of an outside text; the Markdown pages link to each other.  A renamed heading or
a moved page must fail here, not leave a reader at a dead end.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from checkout import CHECKOUT

PAGES = sorted([*CHECKOUT.glob("docs/*.md"), CHECKOUT / "README.md", CHECKOUT / "benchmarks" / "README.md"])
SOURCES = sorted(
    path
    for folder in ("tcpmgm", "benchmarks", "tests")
    for path in (CHECKOUT / folder).rglob("*")
    if path.suffix in {".py", ".pyx", ".pxd", ".pxi", ".pyi"}
)
# A citation in code: a page of ours, with or without an anchor.
CITATION = re.compile(r"\b((?:docs/[\w-]+|benchmarks/README)\.md)(#[\w-]+)?")
# A Markdown link to a relative target: [text](target) with no scheme.
LINK = re.compile(r"\[[^\]]*\]\((?![a-z]+:)([^)\s]+)\)")

pytestmark = pytest.mark.skipif(not (CHECKOUT / "docs").is_dir(), reason="not run from a source checkout")


def anchors(page: Path) -> set[str]:
    """The anchors a Markdown renderer gives the headings of ``page`` (GitHub's rule)."""
    found = set()
    inside_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            inside_code = not inside_code
        elif not inside_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def resolves(target: str, base: Path) -> str | None:
    """Why ``target`` (a path relative to ``base``, maybe with ``#anchor``) does not resolve, or None."""
    path_part, _, anchor = target.partition("#")
    page = (base / path_part).resolve() if path_part else None
    if page is not None and not page.exists():
        return f"{path_part} does not exist"
    if anchor and (page is None or page.suffix == ".md") and anchor not in anchors(page or base):
        return f"#{anchor} is no heading of {(page or base).name}"
    return None


def test_the_anchor_rule_matches_known_headings() -> None:
    assert {"which-rule-wins", "a-rule", "the-connection-profile", "reload"} <= anchors(CHECKOUT / "docs/behaviour.md")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(CHECKOUT)))
def test_every_relative_link_of_a_page_resolves(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        # "#anchor" alone points into the page itself.
        reason = resolves(page.name + target if target.startswith("#") else target, page.parent)
        if reason:
            broken.append(f"{target}: {reason}")
    assert not broken


def test_every_citation_in_the_code_resolves() -> None:
    broken = []
    for source in SOURCES:
        for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
            for page, anchor in CITATION.findall(line):
                reason = resolves(page + anchor, CHECKOUT)
                if reason:
                    broken.append(f"{source.relative_to(CHECKOUT)}:{number}: {page}{anchor}: {reason}")
    assert not broken


def test_no_code_cites_an_outside_spec() -> None:
    """The behaviour is documented in docs/; a citation of "SPEC" points outside the project."""
    citing = [
        f"{source.relative_to(CHECKOUT)}:{number}"
        for source in SOURCES
        if source.name != "test_docs.py"
        for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bSPEC\b", line)
    ]
    assert not citing
