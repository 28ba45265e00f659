"""The image (docs/architecture.md#the-image): ``save`` / ``open`` of both twins, their format and their refusals.

Every test runs against both matchers (the ``matcher_cls`` fixture); the
cross-twin tests need the compiled one and are skipped without it.  The
format is read here through the pure twin's definitions (``_image_py``: the
header and section structs, ``sum64``), so a compiled image that departs from
the contract fails the byte-level tests, not only the round trips.
"""

from __future__ import annotations

import array
import contextlib
import importlib
import ipaddress
import os
import random
import struct
import subprocess
import sys
import textwrap

import pytest

from tcpmgm import ImageError, Profile, ReferenceMatcher, Rule, TcpMgmError
from tcpmgm.matching import _image_py as image
from tcpmgm.matching import matcher as matcher_module
from tcpmgm.model.limits import ID_MAX
from tcpmgm.model.profile import known_attrs
from tcpmgm.model.protocols import BUILTIN_PROTOCOLS, protocol_code

compiled_only = pytest.mark.skipif(not matcher_module.COMPILED, reason="compiled classifier not in use")
LISTENERS = {"internal": "192.0.2.1", "edge": "198.51.100.7", "v6": "2001:db8:ffff::1"}
PROTOS = ["any", "tcp", "tls", "ws", "wss", "bin", "msrps"]
ATTRS = [None, None, "", "", "nodelay=1", "tos=46;nodelay", "max_msg_chunks=8;sndbuf=65536", "mark=7"]
DEFAULT = Profile(connect_timeout=250, keepcount=4, no_new_conn=True, attrs={"tos": 16})
SCHEMA_VERSION = 2
RULE_COUNT = 3000


def _network(rng: random.Random, version: int) -> str:
    bits = 32 if version == 4 else 128
    base = rng.choice([0x0A000000, 0xC0A80000, 0] if version == 4 else [0x20010DB8 << 96, 0xFE80 << 112, 0])
    value = base ^ rng.getrandbits(rng.choice([8, 16, bits]))
    plen = rng.choice([0, 8, 16, 24, bits, bits // 2, rng.randint(0, bits)])
    address = ipaddress.IPv6Address(value) if version == 6 else ipaddress.IPv4Address(value)
    return f"{address}/{plen}"  # host bits and all: from_row masks them (with a warning)


def _row(rng: random.Random, rule_id: int) -> dict[str, object]:
    """A table row of every shape a rule takes: any fields, both families, tags, attrs, odd profiles."""
    version = rng.choice([4, 4, 6])
    local = rng.choice([None, None, "tag", "net"])
    tag = rng.choice(["internal", "edge"] if version == 4 else ["v6"])
    return {
        "id": rule_id,
        "proto": rng.choice(PROTOS),
        "remote_addr": rng.choice([None, _network(rng, version), _network(rng, version)]),
        "remote_port": rng.choice([0, 0, 5060, 5061, 1, 65535]),
        "local_addr": tag if local == "tag" else _network(rng, version) if local == "net" else None,
        "local_port": rng.choice([0, 0, 5060, 65535]),
        "priority": rng.choice([0, 1, -1, 2**31 - 1, -(2**31), rng.randint(-5, 5)]),
        "connect_timeout": rng.choice([None, 0, 100, 2**31 - 1]),
        "con_lifetime": rng.choice([None, 7, 120]),
        "no_new_conn": rng.choice([None, 0, 1]),
        "alias_mode": rng.choice([None, 0, 2]),
        "parallel_read": rng.choice([None, 1]),
        "keepalive": rng.choice([None, 0]),
        "keepidle": rng.choice([None, 30]),
        "attrs": rng.choice(ATTRS),
    }


def generated_rules(count: int, seed: int) -> list[Rule]:
    """``count`` rules with distinct ids (small, large, ID_MAX), in a shuffled order as given."""
    rng = random.Random(seed)
    ids = [*rng.sample(range(1, 10 * count), count - 1), ID_MAX]
    rng.shuffle(ids)
    return [Rule.from_row(_row(rng, rule_id), listeners=LISTENERS, defaults=DEFAULT) for rule_id in ids]


RULES = generated_rules(RULE_COUNT, 12)


def records(matcher_cls: type, rules: list[Rule]) -> object:
    """``rules`` appended to a RuleRecords of ``matcher_cls``'s twin: what ``from_records`` takes
    (the compiled one only its own; the reference anything with ``rules()``)."""
    if matcher_cls is ReferenceMatcher:
        try:
            kind = importlib.import_module("tcpmgm.matching._records_py").RuleRecords
        except ImportError:  # until the pure RuleRecords lands
            kind = ListRecords
    else:
        kind = importlib.import_module(matcher_cls.__module__).RuleRecords
    out = kind()
    for rule in rules:
        out.append(rule)
    return out


def _connections(rules: list[Rule], seed: int, count: int = 400) -> list[tuple[str | None, str, int, str | None, int]]:
    """Lookups inside the rules' networks (on their ports) and anywhere."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        rule = rng.choice(rules)
        version = rule.family or rng.choice([4, 6])

        def inside(network: object, version: int = version) -> str:
            if network is None:
                return str(ipaddress.ip_address(rng.getrandbits(32 if version == 4 else 128)))
            return str(network[rng.randrange(network.num_addresses)] if network.num_addresses < 2**20 else network[0])

        out.append(
            (
                rng.choice([rule.proto, None, "tls"]),
                inside(rule.remote),
                rng.choice([rule.remote_port, 0, 5060]),
                inside(rule.local) if rng.random() < 0.8 else None,
                rng.choice([rule.local_port, 0]),
            )
        )
    return out


CONNECTIONS = _connections(RULES, 3, 200)


def answers(matcher: object) -> list[object]:
    """Everything a matcher answers, as plain values: its rules (in order, as given, by id),
    their profiles, its default, lookups, explain and lookup_many."""
    rules = list(matcher)
    out: list[object] = [
        len(matcher),
        [(rule, rule.profile, rule.local_tag) for rule in rules],
        [(rule, rule.profile, rule.local_tag) for rule in matcher.as_given()],
        [(matcher.get(rule.id), rule.id in matcher) for rule in RULES[::7]],
        [matcher.get(0), matcher.get(ID_MAX - 1), 0 in matcher],
        matcher.default,
        matcher.schema_version,
    ]
    for connection in CONNECTIONS:
        profile = matcher.lookup(*connection)
        explained = matcher.explain(*connection)
        out.append((profile, profile.id, explained.winner, [(rule.id, why) for rule, why in explained.matches]))
    v4 = [c for c in CONNECTIONS if ":" not in c[1]]
    codes = array.array("B", [protocol_code(c[0]) or 0 for c in v4])
    remotes = array.array("I", [int(ipaddress.IPv4Address(c[1])) for c in v4])
    ports = array.array("H", [c[2] for c in v4])
    batch = matcher.lookup_many(codes, remotes, ports)
    out.append((batch.typecode, list(batch)))
    v6 = [c for c in CONNECTIONS if ":" in c[1]]
    packed = b"".join(ipaddress.IPv6Address(c[1]).packed for c in v6)
    out.append(list(matcher.lookup_many("tls", packed, array.array("H", [c[2] for c in v6]))))
    return out


def header_of(data: bytes) -> dict[str, object]:
    return dict(zip((name for name, _ in image.HEADER_FIELDS), image.HEADER.unpack_from(data)))


def sections_of(data: bytes) -> list[bytes]:
    table = image.SECTIONS.unpack_from(data, image.HEADER.size)
    return [data[table[2 * k] : table[2 * k] + table[2 * k + 1]] for k in range(image.N_SECTIONS)]


def records_of(data: bytes) -> tuple[dict[str, object], list[bytes]]:
    """What must not depend on the twin that wrote an image: the records' counts and sections 8..17."""
    header = header_of(data)
    names = (
        "n_rules",
        "n_local",
        "n_profiles",
        "n_strings",
        "n_protocols",
        "default_profile",
        "max_id",
        "schema_version",
    )
    return {name: header[name] for name in names}, sections_of(data)[image.N_INDEX_SECTIONS :]


def resealed(data: bytearray) -> bytes:
    """``data`` with its checksum recomputed: a crafted file that passes the checksum."""
    struct.pack_into("=Q", data, image.CHECKSUM_OFFSET, image.sum64(data))
    return bytes(data)


@pytest.fixture(scope="module")
def reference_answers():
    return answers(
        ReferenceMatcher.from_records(records(ReferenceMatcher, RULES), default=DEFAULT, schema_version=SCHEMA_VERSION)
    )


@pytest.fixture
def saved(matcher_cls, tmp_path):
    """(the path of an image of RULES written by the twin under test, its bytes)."""
    path = tmp_path / "rules.img"
    matcher_cls.from_records(records(matcher_cls, RULES), default=DEFAULT, schema_version=SCHEMA_VERSION).save(path)
    return path, path.read_bytes()


# -- the round trip ---------------------------------------------------------------------


def test_open_answers_as_the_build_did(matcher_cls, saved, reference_answers):
    path, _ = saved
    built = matcher_cls.from_records(records(matcher_cls, RULES), default=DEFAULT, schema_version=SCHEMA_VERSION)
    opened = matcher_cls.open(path)
    assert answers(built) == reference_answers
    assert answers(opened) == reference_answers
    assert [rule.warnings for rule in opened] == [()] * RULE_COUNT
    assert opened.image_path == str(path) and built.image_path is None
    assert isinstance(opened, matcher_cls)


class ListRecords(list):
    """Records as the reference reads them: anything with ``rules()`` (the rules as given)."""

    def rules(self):
        return iter(self)


def _record_classes() -> list[type]:
    """The RuleRecords twins this tree has (both, once the records land), and ListRecords."""
    found: list[type] = [ListRecords]
    for module in ("tcpmgm.matching._records_py", "tcpmgm.matching._matcher"):
        with contextlib.suppress(ImportError, AttributeError):
            found.append(importlib.import_module(module).RuleRecords)
    return found


def test_a_matcher_of_records_saves_as_one_of_rules(matcher_cls, saved, tmp_path):
    """Records in, the same image out: RuleRecords of either twin, or the rules themselves."""
    _, data = saved
    kinds = _record_classes()
    if matcher_cls is not ReferenceMatcher:  # the compiled matcher reads its own records
        kinds = [kind for kind in kinds if kind.__module__ == matcher_cls.__module__]
        if not kinds:
            pytest.skip("the compiled RuleRecords is not built")
    for kind in kinds:
        records = kind()
        for rule in RULES:
            records.append(rule)
        path = tmp_path / f"{kind.__module__}.img"
        matcher_cls.from_records(records, default=DEFAULT, schema_version=SCHEMA_VERSION).save(path)
        assert records_of(path.read_bytes()) == records_of(data), kind.__module__
        assert [(r, r.profile) for r in matcher_cls(records, default=DEFAULT)] == [
            (r, r.profile) for r in matcher_cls(RULES, default=DEFAULT)
        ]


@pytest.mark.parametrize(
    ("version", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (2**32 - 1, ValueError),
        (2**32, ValueError),
        ("2", TypeError),
        (True, TypeError),
    ],
)
def test_a_schema_version_an_image_cannot_hold_is_refused(matcher_cls, version, error):
    with pytest.raises(error, match="schema_version"):
        matcher_cls.from_records(records(matcher_cls, RULES[:3]), schema_version=version)


def test_schema_version_is_kept(matcher_cls, tmp_path):
    path = tmp_path / "version.img"
    assert matcher_cls(RULES[:3]).schema_version is None
    for version in (1, 2, 2**32 - 2, None):
        matcher_cls.from_records(records(matcher_cls, RULES[:3]), schema_version=version).save(path)
        assert matcher_cls.open(path).schema_version == version
        assert header_of(path.read_bytes())["schema_version"] == (version or 0)


def test_counting_is_the_openers_choice(matcher_cls, saved):
    path, _ = saved
    quiet = matcher_cls.open(path, count_hits=False)
    counting = matcher_cls.open(path)
    for connection in CONNECTIONS[:20]:
        quiet.lookup(*connection)
        counting.lookup(*connection)
    assert not quiet.count_hits and quiet.hits() == {}
    assert counting.count_hits and sum(counting.hits().values()) == 20


@pytest.mark.parametrize("rules", [[], RULES[:1], [Rule(id=5)]], ids=["empty", "one", "any"])
def test_small_sets_round_trip(matcher_cls, tmp_path, rules):
    path = tmp_path / "small.img"
    matcher_cls(rules).save(path)
    opened = matcher_cls.open(path)
    assert [(r, r.profile, r.local_tag) for r in opened] == [(r, r.profile, r.local_tag) for r in rules]
    assert opened.schema_version is None and opened.default == matcher_cls(rules).default
    assert len(opened) == len(rules) and list(opened.as_given()) == rules
    assert [opened.get(rule.id) for rule in rules] == rules


def test_the_file_follows_the_format(matcher_cls, saved):
    _, data = saved
    header = header_of(data)
    assert header["magic"] == image.MAGIC and header["version"] == image.IMAGE_VERSION
    assert header["byte_order"] == image.BYTE_ORDER_MARK
    assert header["file_size"] == len(data) and len(data) % image.ALIGN == 0
    assert header["checksum"] == image.sum64(data)
    assert header["n_rules"] == RULE_COUNT and header["max_id"] == ID_MAX
    assert header["schema_version"] == SCHEMA_VERSION
    assert data[image.HEADER.size + image.SECTIONS.size : image.HEADER_SIZE] == bytes(
        image.HEADER_SIZE - image.HEADER.size - image.SECTIONS.size
    )
    table = image.SECTIONS.unpack_from(data, image.HEADER.size)
    end = image.HEADER_SIZE
    for k in range(image.N_SECTIONS):
        offset, size = table[2 * k], table[2 * k + 1]
        if size:
            assert offset % image.ALIGN == 0 and offset >= end, image.SECTION_NAMES[k]
            assert data[end:offset] == bytes(offset - end), f"padding before {image.SECTION_NAMES[k]}"
            end = offset + size
        else:
            assert offset == 0
    assert data[end:] == bytes(len(data) - end)
    ids = array.array("q", sections_of(data)[image.ID_OF_RANK])
    assert list(ids) == [rule.id for rule in ReferenceMatcher(RULES)]
    given = array.array("I", sections_of(data)[image.GIVEN])
    assert [ids[rank] for rank in given] == [rule.id for rule in RULES]


def test_the_same_rules_give_the_same_records(matcher_cls, saved, tmp_path):
    """Two builds of the same rules, and an opened image saved again, write the same records."""
    _, data = saved
    again = tmp_path / "again.img"
    matcher_cls.from_records(records(matcher_cls, list(RULES)), default=DEFAULT, schema_version=SCHEMA_VERSION).save(
        again
    )
    assert records_of(again.read_bytes()) == records_of(data)
    resaved = tmp_path / "resaved.img"
    matcher_cls.open(again).save(resaved)
    assert records_of(resaved.read_bytes()) == records_of(data)


def test_profiles_are_kept_once_by_content(matcher_cls, tmp_path):
    path = tmp_path / "profiles.img"
    shared = Profile(keepcount=3, attrs={"nodelay": 1})
    rules = [Rule(id=i, priority=i % 3, profile=shared) for i in range(1, 50)]
    matcher_cls(rules, default=shared).save(path)
    header = header_of(path.read_bytes())
    assert header["n_profiles"] == 1 and header["default_profile"] == 0
    assert header["n_strings"] == 1 + header["n_protocols"]  # the attrs text and the protocol names


# -- across the twins -------------------------------------------------------------------


@compiled_only
def test_each_twin_opens_the_others_image(tmp_path, reference_answers):
    compiled_cls = matcher_module.Matcher
    compiled_path, pure_path = tmp_path / "compiled.img", tmp_path / "pure.img"
    compiled_cls.from_records(records(compiled_cls, RULES), default=DEFAULT, schema_version=SCHEMA_VERSION).save(
        compiled_path
    )
    ReferenceMatcher.from_records(
        records(ReferenceMatcher, RULES), default=DEFAULT, schema_version=SCHEMA_VERSION
    ).save(pure_path)
    assert header_of(compiled_path.read_bytes())["flags"] == image.HAS_INDEX
    assert header_of(pure_path.read_bytes())["flags"] == 0
    assert answers(ReferenceMatcher.open(compiled_path)) == reference_answers
    assert answers(compiled_cls.open(pure_path)) == reference_answers


@compiled_only
def test_both_twins_write_the_same_records(tmp_path):
    compiled_path, pure_path = tmp_path / "compiled.img", tmp_path / "pure.img"
    matcher_module.Matcher.from_records(
        records(matcher_module.Matcher, RULES), default=DEFAULT, schema_version=SCHEMA_VERSION
    ).save(compiled_path)
    ReferenceMatcher.from_records(
        records(ReferenceMatcher, RULES), default=DEFAULT, schema_version=SCHEMA_VERSION
    ).save(pure_path)
    compiled_counts, compiled_sections = records_of(compiled_path.read_bytes())
    pure_counts, pure_sections = records_of(pure_path.read_bytes())
    assert compiled_counts == pure_counts
    # A RuleRec's node is the index's (NONE without HAS_INDEX): the one field the twins write apart.
    rules_at = image.RULES - image.N_INDEX_SECTIONS
    assert all(node == image.NONE for node in _nodes(pure_sections[rules_at]))
    assert any(node != image.NONE for node in _nodes(compiled_sections[rules_at]))
    compiled_sections[rules_at] = _without_nodes(compiled_sections[rules_at])
    for k, (mine, theirs) in enumerate(zip(pure_sections, compiled_sections), image.N_INDEX_SECTIONS):
        assert mine == theirs, image.SECTION_NAMES[k]


_NODE_OFFSET = 16  # RuleRec.node: after rhi, rlo


def _nodes(rules: bytes) -> list[int]:
    return [struct.unpack_from("=I", rules, at + _NODE_OFFSET)[0] for at in range(0, len(rules), image.RULE_REC.size)]


def _without_nodes(rules: bytes) -> bytes:
    """RULES with every node NONE, as an image without the index has them."""
    out = bytearray(rules)
    for at in range(0, len(out), image.RULE_REC.size):
        struct.pack_into("=I", out, at + _NODE_OFFSET, image.NONE)
    return bytes(out)


# -- refusals ---------------------------------------------------------------------------


def refused(matcher_cls, path, data: bytes, message: str) -> ImageError:
    path.write_bytes(data)
    with pytest.raises(ImageError) as caught:
        matcher_cls.open(path)
    assert str(caught.value).startswith(f"image {path}: "), str(caught.value)
    assert message in str(caught.value), str(caught.value)
    return caught.value


def test_image_error_is_a_value_error():
    assert issubclass(ImageError, TcpMgmError) and issubclass(ImageError, ValueError)


def test_a_file_shorter_than_the_header_is_refused(matcher_cls, saved, tmp_path):
    _, data = saved
    for length in range(image.HEADER_SIZE):
        refused(matcher_cls, tmp_path / "short.img", data[:length], "truncated")


def test_a_truncated_file_is_refused(matcher_cls, saved, tmp_path):
    _, data = saved
    for length in sorted(
        {image.HEADER_SIZE, image.HEADER_SIZE + 1, 1024, len(data) // 2, len(data) - 64, len(data) - 1}
    ):
        refused(matcher_cls, tmp_path / "cut.img", data[:length], f"truncated: {length} of {len(data)} bytes")


def test_a_longer_file_is_refused(matcher_cls, saved, tmp_path):
    """The contract words only the shorter case; a longer file names both sizes too."""
    _, data = saved
    error = refused(matcher_cls, tmp_path / "long.img", data + bytes(64), str(len(data) + 64))
    assert str(len(data)) in str(error).replace(str(len(data) + 64), "")


def test_bad_magic_is_refused(matcher_cls, saved, tmp_path):
    _, data = saved
    refused(matcher_cls, tmp_path / "magic.img", b"TCPMGMIX" + data[8:], "not a tcpmgm image")
    refused(matcher_cls, tmp_path / "zeros.img", bytes(len(data)), "not a tcpmgm image")


def test_another_format_version_is_refused(matcher_cls, saved, tmp_path):
    _, data = saved
    crafted = bytearray(data)
    struct.pack_into("=I", crafted, 8, 2)
    refused(matcher_cls, tmp_path / "version.img", resealed(crafted), "format version 2, this tcpmgm reads 1")


def test_another_byte_order_is_refused(matcher_cls, saved, tmp_path):
    """A header as the other byte order writes it: every field swapped, the mark included."""
    _, data = saved
    foreign = ">" if sys.byteorder == "little" else "<"
    swapped = bytearray(data)
    fields = image.HEADER.unpack_from(data)
    struct.pack_into(foreign + image.HEADER.format[1:], swapped, 0, *fields)
    struct.pack_into(
        f"{foreign}{2 * image.N_SECTIONS}Q",
        swapped,
        image.HEADER.size,
        *image.SECTIONS.unpack_from(data, image.HEADER.size),
    )
    other = "big-endian" if sys.byteorder == "little" else "little-endian"
    refused(matcher_cls, tmp_path / "foreign.img", bytes(swapped), f"written on a {other} machine")


def test_a_file_size_that_is_not_the_files_is_refused(matcher_cls, saved, tmp_path):
    _, data = saved
    crafted = bytearray(data)
    struct.pack_into("=Q", crafted, 16, len(data) + 64)
    refused(matcher_cls, tmp_path / "size.img", resealed(crafted), f"truncated: {len(data)} of {len(data) + 64} bytes")


def test_a_checksum_mismatch_is_refused(matcher_cls, saved, tmp_path):
    _, data = saved
    for where in (image.HEADER.size + 3, image.HEADER_SIZE + 1, len(data) // 2, len(data) - 1, 40):
        crafted = bytearray(data)
        crafted[where] ^= 0x10
        refused(matcher_cls, tmp_path / "sum.img", bytes(crafted), "corrupt: checksum")


def _with_section(data: bytes, k: int, offset: int, size: int) -> bytes:
    crafted = bytearray(data)
    struct.pack_into("=QQ", crafted, image.HEADER.size + 16 * k, offset, size)
    return resealed(crafted)


@pytest.mark.parametrize("k", range(image.N_INDEX_SECTIONS, image.N_SECTIONS), ids=image.SECTION_NAMES[8:])
def test_a_section_out_of_place_is_refused(matcher_cls, saved, tmp_path, k):
    """With a right checksum: out of the file, misaligned, a size its count disagrees with."""
    _, data = saved
    offset, size = image.SECTIONS.unpack_from(data, image.HEADER.size)[2 * k : 2 * k + 2]
    path = tmp_path / "section.img"
    for bad_offset, bad_size in [
        (len(data), max(size, 8)),
        (len(data) - 64, max(size, 128)),
        (offset + 8, size),
        (image.HEADER_SIZE, size + 64),
    ]:
        path.write_bytes(_with_section(data, k, bad_offset, bad_size))
        with pytest.raises(ImageError, match=rf"^image {path}: "):
            matcher_cls.open(path)


def test_a_crafted_record_is_refused(matcher_cls, saved, tmp_path):
    """Records with a right checksum that name what is not there: a rule's profile, its tag,
    its local prefix, its protocol, a given rank, the default profile, an unsorted id index."""
    _, data = saved
    table = image.SECTIONS.unpack_from(data, image.HEADER.size)
    rules_at = table[2 * image.RULES]
    path = tmp_path / "record.img"
    n_rules = header_of(data)["n_rules"]
    crafts = [
        (rules_at + 28, "=I", 0xFFFFFFF0),  # rank 0's profile
        (rules_at + 48 + 32, "=I", 0xFFFFFFF0),  # rank 1's tag
        (rules_at + 96 + 20, "=I", 0xFFFFFFF0),  # rank 2's local id
        (rules_at + 36, "=H", 0xFFF0),  # rank 0's protocol
        (rules_at + 42, "=B", 5),  # rank 0's remote family
        (rules_at + 43, "=B", 200),  # rank 0's remote length
        (table[2 * image.GIVEN], "=I", n_rules),  # a given rank past the rules
        (table[2 * image.IDS_SORTED], "=q", ID_MAX),  # ids_sorted out of order
        (table[2 * image.RANK_OF_SORTED], "=I", 0xFFFFFFF0),
        (128, "=I", 0xFFFFFFF0),  # default_profile
    ]
    indices = len(crafts)
    # A remote prefix with a host bit set: the rule made of it would have no network (Rule.remote raises).
    for rank, rec in enumerate(image.RULE_REC.iter_unpack(sections_of(data)[image.RULES])):
        rhi, rfam, rplen = rec[0], rec[10], rec[11]
        if rfam == 4 and rplen < 32:
            crafts.append((rules_at + rank * image.RULE_REC.size, "=Q", rhi | 1 << 32))
            break
    # And a local prefix with one.
    local_at = table[2 * image.LPREFIXES]
    for k, (hi, _, family, plen) in enumerate(image.PREFIX.iter_unpack(sections_of(data)[image.LPREFIXES])):
        if family == 4 and plen < 32:
            crafts.append((local_at + k * image.PREFIX.size, "=Q", hi | 1 << 32))
            break
    assert len(crafts) == indices + 2, "RULES has an IPv4 remote and an IPv4 local prefix shorter than /32"
    for where, fmt, value in crafts:
        crafted = bytearray(data)
        struct.pack_into(fmt, crafted, where, value)
        path.write_bytes(resealed(crafted))
        with pytest.raises(ImageError, match=rf"^image {path}: "):
            matcher_cls.open(path)


def test_the_reference_refuses_records_that_are_no_rules(tmp_path):
    """The reference makes every rule with Rule.from_row: records it refuses or would change,
    or ranks out of key order, are a corrupt image (with a right checksum)."""
    ReferenceMatcher([Rule(id=1, remote=ipaddress.ip_network("10.0.0.0/8")), Rule(id=2, priority=1)]).save(
        tmp_path / "two.img"
    )
    data = (tmp_path / "two.img").read_bytes()
    table = image.SECTIONS.unpack_from(data, image.HEADER.size)
    rules_at, ids_at, sorted_at = (table[2 * k] for k in (image.RULES, image.ID_OF_RANK, image.IDS_SORTED))
    path = tmp_path / "crafted.img"
    for writes, message in [
        ([(ids_at, "=q", 0), (sorted_at, "=q", 0)], "id must be a positive integer"),  # rule 1 made rule 0
        ([(rules_at, "=Q", 0x0A010000 << 32)], "its records are not a rule"),  # 10.1.0.0/8: host bits set
        ([(rules_at + 24, "=i", 5)], "does not rank after"),  # rank 0's priority past rank 1's
        ([(rules_at + 48 + 24, "=i", -1)], "does not rank after"),  # rank 1's priority before rank 0's
    ]:
        crafted = bytearray(data)
        for where, fmt, value in writes:
            struct.pack_into(fmt, crafted, where, value)
        refused(ReferenceMatcher, path, resealed(crafted), message)


# -- protocols registered elsewhere -----------------------------------------------------

_PROTOCOL_SCRIPT = textwrap.dedent(
    """
    import sys
    from tcpmgm import ImageError, ReferenceMatcher, Rule, register_protocol
    from tcpmgm.matching import matcher
    cls = ReferenceMatcher if sys.argv[1] == "reference" else matcher.Matcher
    action, path, names = sys.argv[2], sys.argv[3], sys.argv[4:]
    for name in names:
        register_protocol(name)
    if action == "save":
        cls([Rule(id=7, proto=names[-1]), Rule(id=8, proto="tls")]).save(path)
    else:
        try:
            opened = cls.open(path)
        except ImageError as exc:
            print("refused:", exc)
        else:
            print("opened:", opened.get(7).proto, opened.lookup(names[-1] if names else "xp2", "10.0.0.1").id)
    """
)


def _in_process(matcher_cls, *args: str) -> str:
    kind = "reference" if matcher_cls is ReferenceMatcher else "compiled"
    done = subprocess.run(
        [sys.executable, "-c", _PROTOCOL_SCRIPT, kind, *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_a_protocol_unknown_here_is_registered_under_the_images_code(matcher_cls, tmp_path):
    path = str(tmp_path / "protocols.img")
    _in_process(matcher_cls, "save", path, "xp1", "xp2")
    assert _in_process(matcher_cls, "open", path) == "opened: xp2 7"
    assert _in_process(matcher_cls, "open", path, "xp1", "xp2") == "opened: xp2 7"


def test_a_protocol_whose_code_cannot_be_given_is_refused(matcher_cls, tmp_path):
    path = str(tmp_path / "protocols.img")
    base = len(BUILTIN_PROTOCOLS)
    _in_process(matcher_cls, "save", path, "xp1", "xp2")
    out = _in_process(matcher_cls, "open", path, "other")
    assert out == f"refused: image {path}: protocol 'xp1' has code {base + 1} in the image, {base + 2} here"
    out = _in_process(matcher_cls, "open", path, "xp2", "xp1")
    assert out == f"refused: image {path}: protocol 'xp1' has code {base + 1} in the image, {base + 2} here"


def test_attrs_names_this_process_does_not_know_are_refused(matcher_cls, tmp_path):
    """attrs are read as the model reads them (parse_attrs): a process serving from an image
    registers the attrs names its writer did, as it would to load the table."""
    path = tmp_path / "attrs.img"
    kind = "reference" if matcher_cls is ReferenceMatcher else "compiled"
    writer = textwrap.dedent(
        """
        import sys
        from tcpmgm import Profile, ReferenceMatcher, Rule, register_attr
        from tcpmgm.matching import matcher
        register_attr("x_written_elsewhere", 0, 9)
        cls = ReferenceMatcher if sys.argv[1] == "reference" else matcher.Matcher
        profile = Profile(attrs={"x_written_elsewhere": 9, "tos": 4})
        cls([Rule(id=3, profile=profile)]).save(sys.argv[2])
        """
    )
    subprocess.run([sys.executable, "-c", writer, kind, str(path)], check=True)
    assert "x_written_elsewhere" not in known_attrs()
    refused(matcher_cls, path, path.read_bytes(), "unknown attribute 'x_written_elsewhere'")


# -- saving is atomic, an opened matcher owns what it read ----------------------------------


def _leftovers(folder) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp") or name.startswith("."))


def test_save_replaces_the_file_in_one_rename(matcher_cls, saved):
    """A reader holding the old file keeps reading the old image whole."""
    path, data = saved
    with open(path, "rb") as old_reader:
        old_inode = os.fstat(old_reader.fileno()).st_ino
        matcher_cls(RULES[:10]).save(path)
        assert os.stat(path).st_ino != old_inode
        assert old_reader.read() == data
    assert len(matcher_cls.open(path)) == 10
    assert _leftovers(path.parent) == []


def test_a_failed_save_leaves_the_old_file(matcher_cls, saved, tmp_path):
    path, data = saved
    folder = tmp_path / "images"
    folder.mkdir()
    small = matcher_cls(RULES[:3])
    with pytest.raises(OSError):
        small.save(folder)  # a path that is a directory
    assert os.listdir(folder) == [] and _leftovers(tmp_path) == []
    with pytest.raises(OSError):
        small.save(tmp_path / "missing" / "rules.img")
    assert path.read_bytes() == data


def test_a_save_that_fails_half_written_leaves_the_old_file(matcher_cls, saved):
    """The disk full half-way (a file size limit, which binds root too): OSError, the old
    image whole, no temporary file left."""
    path, data = saved
    kind = "reference" if matcher_cls is ReferenceMatcher else "compiled"
    script = textwrap.dedent(
        """
        import resource, signal, sys
        from tcpmgm import ReferenceMatcher, Rule
        from tcpmgm.matching import matcher
        cls = ReferenceMatcher if sys.argv[1] == "reference" else matcher.Matcher
        built = cls([Rule(id=i, priority=i) for i in range(1, 2000)])
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
        try:
            built.save(sys.argv[2])
        except OSError as exc:
            print("failed:", exc.errno)
        """
    )
    done = subprocess.run([sys.executable, "-c", script, kind, str(path)], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("failed:"), done.stdout + done.stderr
    assert path.read_bytes() == data and _leftovers(path.parent) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any directory")
def test_a_save_into_a_folder_without_write_permission_leaves_the_old_file(matcher_cls, saved):
    path, data = saved
    path.parent.chmod(0o500)
    try:
        with pytest.raises(OSError):
            matcher_cls(RULES[:3]).save(path)
    finally:
        path.parent.chmod(0o700)
    assert path.read_bytes() == data and _leftovers(path.parent) == []


def test_an_opened_matcher_outlives_its_file(matcher_cls, saved, reference_answers):
    path, _ = saved
    opened = matcher_cls.open(path)
    matcher_cls(RULES[:5]).save(path)  # replaced
    assert answers(opened) == reference_answers
    path.unlink()
    assert answers(opened) == reference_answers
    assert opened.image_path == str(path)


def test_sum64_is_the_contracts_statement():
    """sum64 word by word as docs/architecture.md#the-image states it, on files of 0 to 40 words."""
    rng = random.Random(64)
    for n_words in [*range(9), 40]:
        data = rng.randbytes(8 * n_words)
        words = list(struct.unpack(f"={n_words}Q", data))
        lanes = [0xCBF29CE484222325 ^ j for j in range(4)]
        for i, word in enumerate(words):
            lanes[i % 4] = ((lanes[i % 4] ^ (0 if i == 3 else word)) * 0x100000001B3) % 2**64
        expected = len(data)
        for lane in lanes:
            expected = ((expected ^ lane) * 0x100000001B3) % 2**64
        assert image.sum64(data) == expected
