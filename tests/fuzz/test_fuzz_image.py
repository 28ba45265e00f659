"""Fuzz: ``Matcher.open`` and ``ReferenceMatcher.open`` on real images with bytes changed.

The images are written by each twin from small rule sets of every shape (both
families, tags, attrs, protocols, ports); a mutation sets 1, 2, 4 or 8 bytes
of the header's fields, of the section table or of a section's content to
a value a misread lands on (0, 1, ``NONE``, all ones, a count, any), or cuts
the file.  The checksum is recomputed through the pure twin's ``sum64`` in
half the examples, so that a mutation gets past it to the structural checks.
Each twin opening each mutant gives an ``ImageError``, or a matcher whose
``len``, iteration, ``get``, ``as_given``, ``lookup``, ``lookup_many`` and
``explain`` all answer: never a crash, a hang or another exception.  A
mutant whose checksum was not recomputed is always refused.  The example
budget comes from the hypothesis profile (tests/conftest.py); tests/fuzz runs
in the sanitizers stage of .ci/run.
"""

from __future__ import annotations

import array
import ipaddress
import struct
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from tcpmgm import ImageError, Profile, ReferenceMatcher, Rule
from tcpmgm.matching import _image_py as image
from tcpmgm.matching import matcher as matcher_module
from tcpmgm.model import protocols as registry

LISTENERS = {"internal": "192.0.2.1", "v6": "2001:db8::1"}
TWINS = [ReferenceMatcher] + ([matcher_module.Matcher] if matcher_module.COMPILED else [])
ROWS = [
    {"id": 1, "proto": "tls", "remote_addr": "10.0.0.0/8", "remote_port": 5061, "attrs": "nodelay=1"},
    {"id": 2, "proto": "any", "remote_addr": "10.1.0.0/16", "local_addr": "internal", "priority": -1},
    {"id": 3, "proto": "tcp", "remote_addr": "2001:db8::/32", "local_addr": "v6", "keepalive": 0},
    {"id": 4, "proto": "ws", "remote_addr": None, "local_port": 5060, "attrs": "tos=46;mark=3"},
    {"id": 2**40, "proto": "msrps", "remote_addr": "192.0.2.0/24", "local_addr": "198.51.100.0/24"},
    {"id": 6, "proto": "any", "remote_addr": "::/0", "connect_timeout": 7, "no_new_conn": 1},
    {"id": 7, "proto": "wss", "remote_addr": "10.0.0.1", "remote_port": 1, "alias_mode": 2},
    {"id": 8, "proto": "bin", "remote_addr": "fe80::/10", "local_addr": "2001:db8:ffff::/48"},
]
RULES = [Rule.from_row(row, listeners=LISTENERS) for row in ROWS]
DEFAULT = Profile(keepcount=3, attrs={"sndbuf": 4096})
CONNECTIONS = [
    ("tls", "10.1.2.3", 5061, "192.0.2.1", 0),
    ("tcp", "2001:db8::5", 0, "2001:db8::1", 5060),
    (None, "192.0.2.9", 0, "198.51.100.1", 5060),
    ("ws", "11.0.0.1", 9, None, 5060),
    ("bin", "fe80::1", 0, "2001:db8:ffff::9", 0),
]
NONE = image.NONE


class Images(NamedTuple):
    """Each twin's image of RULES, and a folder for the mutants."""

    written: list[tuple[str, bytes]]  # (the twin that wrote it, its bytes)
    folder: Path

    def __repr__(self) -> str:  # a failing example names the mutant, not every byte of the images
        return f"Images({[name for name, _ in self.written]}, {self.folder})"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    written = []
    for twin in TWINS:
        path = folder / f"{twin.__name__}.img"
        twin(RULES, default=DEFAULT).save(path)
        written.append((twin.__name__, path.read_bytes()))
    return Images(written, folder)


@contextmanager
def registry_kept() -> Iterator[None]:
    """A mutant may name a protocol that open registers: the process's registry is put back after."""
    codes, names = dict(registry._codes), dict(registry._names)
    try:
        yield
    finally:
        with registry._lock:
            registry._codes.clear()
            registry._codes.update(codes)
            registry._names.clear()
            registry._names.update(names)


def _regions(data: bytes) -> list[tuple[int, int]]:
    """(start, stop) of the header's fields, the section table and each non-empty section."""
    table = image.SECTIONS.unpack_from(data, image.HEADER.size)
    regions = [(0, image.HEADER.size), (image.HEADER.size, image.HEADER.size + image.SECTIONS.size)]
    regions += [(table[2 * k], table[2 * k] + table[2 * k + 1]) for k in range(image.N_SECTIONS) if table[2 * k + 1]]
    return regions


class Mutant(NamedTuple):
    writer: str  # the twin that wrote the image
    data: bytes
    edits: list[tuple[int, int, int]]  # (offset, width, value) set, for the report of a failure
    cut: int | None  # the length it was cut to
    resealed: bool  # whether its checksum was recomputed

    def __repr__(self) -> str:
        return f"Mutant({self.writer}, edits={self.edits}, cut={self.cut}, resealed={self.resealed})"


@st.composite
def mutants(draw: st.DrawFn, images: list[tuple[str, bytes]]) -> Mutant:
    writer, original = draw(st.sampled_from(images))
    data = bytearray(original)
    header = dict(zip((name for name, _ in image.HEADER_FIELDS), image.HEADER.unpack_from(original)))
    counts = [header[name] for name in ("n_rules", "n_local", "n_profiles", "n_strings", "n_protocols")]
    edits, cut = [], None
    for _ in range(draw(st.integers(1, 4))):
        start, stop = draw(st.sampled_from(_regions(original)))
        width = draw(st.sampled_from([1, 2, 4, 8]))
        if stop - start < width:
            width = 1
        where = draw(st.integers(start, stop - width)) // width * width
        if where < start:
            where += width
        top = (1 << (8 * width)) - 1
        value = draw(
            st.one_of(
                st.sampled_from([0, 1, 2, top, top - 1, NONE & top, 64, 512, len(data)]),
                st.sampled_from(counts),
                st.integers(0, top),
            )
        )
        data[where : where + width] = (value & top).to_bytes(width, sys.byteorder)
        edits.append((where, width, value & top))
    if draw(st.integers(0, 9)) == 0:  # cut, and say so in file_size (a header that agrees with the cut)
        cut = draw(st.integers(image.HEADER_SIZE, len(data) - 1)) // image.ALIGN * image.ALIGN
        del data[cut:]
        struct.pack_into("=Q", data, 16, len(data))
    reseal = draw(st.booleans())
    if reseal and len(data) % 8 == 0:
        struct.pack_into("=Q", data, image.CHECKSUM_OFFSET, image.sum64(data))
    else:
        reseal = False
    return Mutant(writer, bytes(data), edits, cut, reseal)


def exercise(matcher: object) -> None:
    """Every reader of an opened matcher answers."""
    rules = list(matcher)
    assert len(matcher) == len(rules) == len(list(matcher.as_given()))
    for rule in rules:
        assert matcher.get(rule.id) == rule and rule.id in matcher  # == reads every field, networks too
        assert rule.profile.id == rule.id
        rule.describe()
    assert matcher.get(0) is None
    assert matcher.default.id == 0
    # Answers only, not their agreement: a crafted index that passes every check is served as it
    # says (docs/architecture.md#the-image), and explain reads the records, not the index.
    for connection in CONNECTIONS:
        assert isinstance(matcher.lookup(*connection), Profile)
        explained = matcher.explain(*connection)
        assert [rule.id for rule, _ in explained.matches] == sorted(
            (rule.id for rule, _ in explained.matches), key=[rule.id for rule in rules].index
        )
        assert all((rule.remote, rule.local) for rule, _ in explained.matches)  # their networks exist
    v4 = array.array("I", [int(ipaddress.IPv4Address(c[1])) for c in CONNECTIONS if ":" not in c[1]])
    v6 = b"".join(ipaddress.IPv6Address(c[1]).packed for c in CONNECTIONS if ":" in c[1])
    matcher.lookup_many(None, v4, array.array("H", [5061] * len(v4)))
    matcher.lookup_many("tcp", v6)
    matcher.hits()
    matcher.top_hits(3)


@given(data=st.data())
def test_a_mutated_image_is_refused_or_answers(images, data):
    written, folder = images
    writer, mutant, _, _, resealed = data.draw(mutants(written))
    path = folder / "mutant.img"
    path.write_bytes(mutant)
    original = dict(written)[writer]
    for twin in TWINS:
        with registry_kept():
            try:
                opened = twin.open(path)
            except ImageError as exc:
                assert str(exc).startswith(f"image {path}: ")
                event(f"{twin.__name__}: refused, {str(exc).removeprefix(f'image {path}: ')[:24]}")
                continue
            event(f"{twin.__name__}: opened{'' if mutant == original else ' a mutant'}")
            assert resealed or mutant == original, f"{twin.__name__} opened a mutant whose checksum is wrong"
            exercise(opened)
