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


# A release, or a range of them, as the pages write it: "3.3", "3.3 to 3.6", "4.0 and later", "4.0 to 4.1.0-dev".
_RELEASES = r"(\d+\.\d+(?:\.\d+)?(?:-\w+)?(?: to \d+\.\d+(?:\.\d+)?(?:-\w+)?| and later)?)"
# The ways a page says which OpenSIPS releases read a schema version: (pattern, group of the version).
_VERSION_CLAIMS = [
    (re.compile(r"[Vv]ersion (\d) \((?:OpenSIPS )?" + _RELEASES + r"\)"), 1),  # version 1 (OpenSIPS 3.3 to 3.6)
    (re.compile(r"--schema-version (\d)\W+(?:for )?OpenSIPS " + _RELEASES), 1),  # --schema-version 1  # OpenSIPS ...
    (re.compile(r"^\| (\d) \| " + _RELEASES + r" \|", re.M), 1),  # the table of docs/operations.md
    (re.compile(r"OpenSIPS " + _RELEASES + r" wants? schema version (\d)"), 2),
    (re.compile(r"`" + _RELEASES + r"` for version (\d)"), 2),  # the report's heading, docs/opensips.md
]


def test_the_pages_name_the_opensips_releases_of_each_schema_version_as_the_code_does() -> None:
    """sql.schema.OPENSIPS_RELEASES is the one statement; the pages say it in its words (or, where they
    speak of the report, in the words of its heading: up to the OpenSIPS source read)."""
    from tcpmgm.opensips.pitfalls import OPENSIPS_VERSIONS
    from tcpmgm.sql.schema import SCHEMA_VERSIONS, opensips_releases

    claims = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for pattern, version_group in _VERSION_CLAIMS:
            for match in pattern.finditer(text):
                version, releases = int(match[version_group]), match[3 - version_group]
                claims.append((page.relative_to(CHECKOUT), version, releases))
    wrong = [
        claim
        for claim in claims
        if claim[1] not in SCHEMA_VERSIONS or claim[2] not in {opensips_releases(claim[1]), OPENSIPS_VERSIONS[claim[1]]}
    ]
    assert not wrong
    # Each form is still found (a page rewritten past a pattern would silently stop being checked).
    assert {version for _, version, _ in claims} == set(SCHEMA_VERSIONS) and len(claims) >= 8, claims
