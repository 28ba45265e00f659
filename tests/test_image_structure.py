"""The compiled image (docs/architecture.md#the-image): round trips of the compiled matcher, and
files with a right checksum whose index is wrong, each refused with its own ImageError.

A checksum proves that a file is the one its writer sealed, not that its writer was tcpmgm:
every array a lookup, ``explain``, ``get`` or iteration follows is checked when the file is
opened, so that a crafted file cannot send a lookup out of its arrays or round a loop forever.
These files are made here from a saved image, by changing one field and sealing the file again
with ``sum64`` as the format defines it (the independent statement of it, below).  The format of
the records sections and the refusals both twins share are in tests/test_image.py.
"""

import array
import ipaddress
import os
import random
import struct
import sys

import pytest

from tcpmgm import ImageError, Profile, ReferenceMatcher, Rule
from tcpmgm.matching import matcher as matcher_module
from tcpmgm_bench.workloads import WORKLOADS, batch

pytestmark = pytest.mark.skipif(not matcher_module.COMPILED, reason="compiled classifier not in use")
Matcher = matcher_module.Matcher

NONE = 0xFFFFFFFF
LAST_SHORT = 0x8000
HAS_INDEX = 1

# -- the format, as docs/architecture.md#the-image gives it ----------------------------------

HEADER_FIELDS = (
    ("magic", "8s"), ("version", "I"), ("byte_order", "I"), ("file_size", "Q"), ("checksum", "Q"),
    ("flags", "I"), ("schema_version", "I"), ("n_rules", "I"), ("n_nodes", "I"), ("n_pool", "I"),
    ("n_groups", "I"), ("root0", "I"), ("root1", "I"), ("slot_bits0", "i"), ("slot_bits1", "i"),
    ("hmask", "Q"), ("n_entries", "Q"), ("lmask", "Q"), ("n_local", "I"), ("n_lslots", "I"),
    ("any_off", "I"), ("any_cnt", "I"), ("any_best", "I"), ("n_profiles", "I"), ("n_strings", "I"),
    ("n_protocols", "I"), ("default_profile", "I"), ("reserved0", "I"), ("max_id", "q"),
)  # fmt: skip
SECTION_NAMES = (
    "NODES", "GROUPS", "TABLE", "SLOTS4", "SLOTS6", "POOL", "LTABLE", "LSLOTS", "ID_OF_RANK", "RULES",
    "LPREFIXES", "IDS_SORTED", "RANK_OF_SORTED", "PROFILES", "STRING_OFFSETS", "STRING_BYTES", "PROTOCOLS",
    "GIVEN",
)  # fmt: skip
SECTIONS_AT = 144  # the section table follows max_id
# Each section's record: (field, struct code) in order, "=": native order, no implicit padding.
RECORDS = {
    "NODES": (("hi", "Q"), ("lo", "Q"), ("child0", "I"), ("child1", "I"), ("own_best", "I"), ("sub_best", "I"),
              ("group_off", "I"), ("group_cnt", "H"), ("plen", "B"), ("family", "B")),
    "GROUPS": (("best", "I"), ("mask", "H"), ("lslot", "H"), ("local_id", "I"), ("proto", "H"), ("rport", "H"),
               ("lport", "H"), ("pad", "H")),
    "TABLE": (("a", "Q"), ("local_id", "I"), ("lport", "I"), ("rank", "I"), ("pad", "4s")),
    "SLOTS4": (("chain", "I"), ("start", "I")),
    "SLOTS6": (("chain", "I"), ("start", "I")),
    "POOL": (("own_best", "I"), ("group_off", "I"), ("group_cnt", "H"), ("proto", "H"), ("rport", "H"),
             ("lport", "H")),
    "LTABLE": (("hi", "Q"), ("lo", "Q"), ("fp", "I"), ("id", "I")),
    "LSLOTS": (("hi", "Q"), ("lo", "Q"), ("family", "B"), ("plen", "B"), ("pad", "6s")),
    "ID_OF_RANK": (("id", "q"),),
    "RULES": (("rhi", "Q"), ("rlo", "Q"), ("node", "I"), ("local_id", "I"), ("priority", "i"), ("profile", "I"),
              ("tag", "I"), ("proto", "H"), ("rport", "H"), ("lport", "H"), ("rfam", "B"), ("rplen", "B"),
              ("pad", "I")),
    "LPREFIXES": (("hi", "Q"), ("lo", "Q"), ("family", "B"), ("plen", "B"), ("pad", "6s")),
    "IDS_SORTED": (("id", "q"),),
    "RANK_OF_SORTED": (("rank", "I"),),
    "PROFILES": (*((f"value{k}", "i") for k in range(11)), ("attrs", "I")),
    "STRING_OFFSETS": (("offset", "I"),),
    "STRING_BYTES": (("byte", "B"),),
    "PROTOCOLS": (("string", "I"),),
    "GIVEN": (("rank", "I"),),
}  # fmt: skip

_P = 0x100000001B3
_M64 = (1 << 64) - 1


def sum64(data: bytes) -> int:
    """The image checksum: four lanes of 64-bit words, word 3 (the checksum) read as 0."""
    words = list(memoryview(data).cast("Q"))
    words[3] = 0
    lanes = []
    for lane in range(4):
        acc = 0xCBF29CE484222325 ^ lane
        for word in words[lane::4]:
            acc = ((acc ^ word) * _P) & _M64
        lanes.append(acc)
    r = len(data)
    for acc in lanes:
        r = ((r ^ acc) * _P) & _M64
    return r


class Image:
    """A saved image to change field by field and seal again."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)

    def header(self, name: str) -> int:
        return struct.unpack_from("=" + self._code(name), self.data, self._header_offset(name))[0]

    def set_header(self, name: str, value) -> "Image":
        struct.pack_into("=" + self._code(name), self.data, self._header_offset(name), value)
        return self

    def section(self, name: str) -> tuple[int, int]:
        k = SECTION_NAMES.index(name)
        return struct.unpack_from("=QQ", self.data, SECTIONS_AT + 16 * k)

    def set_section(self, name: str, offset: int, size: int) -> "Image":
        struct.pack_into("=QQ", self.data, SECTIONS_AT + 16 * SECTION_NAMES.index(name), offset, size)
        return self

    def count(self, name: str) -> int:
        return self.section(name)[1] // struct.calcsize("=" + "".join(code for _, code in RECORDS[name]))

    def get(self, name: str, index: int, field: str):
        code, at = self._field(name, index, field)
        return struct.unpack_from("=" + code, self.data, at)[0]

    def set(self, name: str, index: int, field: str, value) -> "Image":
        code, at = self._field(name, index, field)
        struct.pack_into("=" + code, self.data, at, value)
        return self

    def sealed(self) -> bytes:
        self.set_header("checksum", sum64(bytes(self.data)))
        return bytes(self.data)

    def _field(self, name: str, index: int, field: str) -> tuple[str, int]:
        fields = RECORDS[name]
        codes = [code for _, code in fields]
        k = [f for f, _ in fields].index(field)
        size = struct.calcsize("=" + "".join(codes))
        offset, used = self.section(name)
        assert 0 <= index < used // size, (name, index)
        return codes[k], offset + index * size + struct.calcsize("=" + "".join(codes[:k]))

    @staticmethod
    def _code(name: str) -> str:
        return dict(HEADER_FIELDS)[name]

    @staticmethod
    def _header_offset(name: str) -> int:
        names = [n for n, _ in HEADER_FIELDS]
        return struct.calcsize("=" + "".join(code for _, code in HEADER_FIELDS[: names.index(name)]))


# -- the rules ---------------------------------------------------------------------------


def net(text: str):
    return ipaddress.ip_network(text)


def structured_rules() -> list[Rule]:
    """Every structure of the index: short prefixes (the pool), a trie with children in both
    families, a hashed group (the table), local prefixes (their hash, their slots), tags (one of
    them not ASCII), profiles, remote "any", then generated rules for a larger trie."""
    fast = Profile(connect_timeout=5, keepalive=False)
    rules = [
        Rule(id=1, proto="tcp", remote=net("10.0.0.0/8")),
        Rule(id=2, remote=net("10.1.0.0/16"), remote_port=5060),
        Rule(id=3, remote=net("10.1.2.0/24"), remote_port=5060, profile=fast),
        Rule(id=4, remote=net("10.1.2.0/24"), remote_port=5061),
        Rule(id=5, remote=net("10.1.2.0/24"), local=net("192.0.2.1/32"), local_tag="caf\u00e9"),
        Rule(id=6, proto="tls", remote=net("2001:db8::/32")),
        Rule(id=10, remote=net("2c00::/8"), remote_port=80),
        Rule(id=7, remote=net("2001:db8:1::/48"), local=net("2001:db8:ffff::1/128"), local_tag="edge"),
        Rule(id=8, proto="ws", local_port=443, priority=3),
        Rule(id=9, remote=net("192.168.0.0/16"), priority=5, profile=fast),
    ]
    generated = WORKLOADS["carrier"](300, 0, seed=5).rules
    return rules + [Rule(**{**_fields(rule), "id": rule.id + 100}) for rule in generated]


def reloaded(rules: list[Rule]):
    """The compiled matcher of ``rules`` as a reload builds it: from records, schema version 2."""
    from tcpmgm.matching._matcher import RuleRecords

    records = RuleRecords()
    for rule in rules:
        records.append(rule)
    return Matcher.from_records(records, schema_version=2)


def _fields(rule: Rule) -> dict:
    return {
        "proto": rule.proto, "remote": rule.remote, "remote_port": rule.remote_port, "local": rule.local,
        "local_port": rule.local_port, "priority": rule.priority, "profile": rule.profile,
        "local_tag": rule.local_tag,
    }  # fmt: skip


@pytest.fixture(scope="module")
def rules():
    return structured_rules()


@pytest.fixture(scope="module")
def saved(rules, tmp_path_factory):
    """A saved image of the structured rules: (its path, its bytes)."""
    path = tmp_path_factory.mktemp("image") / "rules.img"
    reloaded(rules).save(path)
    data = path.read_bytes()
    image = Image(data)
    assert image.header("flags") & HAS_INDEX
    for name in SECTION_NAMES:  # every structure present, so that every crafted file below means something
        assert image.section(name)[1] > 0, name
    return path, data


@pytest.fixture()
def crafted(tmp_path, saved):
    """Write a crafted image; return the ImageError its open raises."""
    _, data = saved

    def refuse(change) -> str:
        image = Image(data)
        change(image)
        path = tmp_path / "crafted.img"
        path.write_bytes(image.sealed())
        with pytest.raises(ImageError) as caught:
            Matcher.open(path)
        message = str(caught.value)
        assert message.startswith(f"image {path}: "), message
        return message[len(f"image {path}: ") :]

    return refuse


def first(image: Image, name: str, where) -> int:
    """The first record of section ``name`` for which ``where(index)`` holds."""
    return next(i for i in range(image.count(name)) if where(i))


# -- round trips -------------------------------------------------------------------------


def lookups_of(rules: list[Rule], n: int, seed: int) -> list[tuple]:
    """Queries that hit the rules (an address inside each remote, its ports and local) and miss them."""
    rng = random.Random(seed)
    queries = []
    for rule in rng.sample(rules, min(n, len(rules))):
        remote = rule.remote
        if remote is None:
            remote_ip = "198.51.100.7"
        else:
            remote_ip = str(remote.network_address + rng.randrange(remote.num_addresses))
        local_ip = None if rule.local is None else str(rule.local.network_address)
        queries.append((rule.proto, remote_ip, rule.remote_port, local_ip, rule.local_port))
        queries.append(("tcp", remote_ip, rng.randrange(65536), local_ip, 0))
    queries.append((None, "203.0.113.9", 1, None, 0))
    return queries


def test_an_opened_image_answers_as_the_built_matcher(rules, saved):
    path, _ = saved
    built = reloaded(rules)
    opened = Matcher.open(path)
    assert isinstance(opened, Matcher)
    assert opened.image_path == str(path) and built.image_path is None
    assert opened.schema_version == built.schema_version == 2
    assert len(opened) == len(built) == len(rules)
    assert list(opened) == list(built)
    assert list(opened.as_given()) == list(built.as_given()) == rules
    assert opened.default == built.default
    assert opened.stride_bits == built.stride_bits
    for rule in rules:
        assert opened.get(rule.id) == rule and rule.id in opened
        assert opened.get(rule.id).profile == rule.profile
        assert opened.get(rule.id).local_tag == rule.local_tag
    assert opened.get(99999) is None and 99999 not in opened
    for query in lookups_of(rules, 200, seed=1):
        assert opened.lookup(*query) == built.lookup(*query), query
        assert opened.explain(*query) == built.explain(*query), query
    workload = WORKLOADS["carrier"](300, 2000, seed=5)  # the generated rules' own lookups (ids + 100)
    for version in (4, 6):
        arguments = batch(workload.lookups, version)
        assert opened.lookup_many(*arguments) == built.lookup_many(*arguments)


def test_every_rule_wins_from_the_image_as_in_the_reference(rules, saved):
    path, _ = saved
    opened, reference = Matcher.open(path), ReferenceMatcher(rules)
    for query in lookups_of(rules, 400, seed=2):
        assert opened.lookup(*query).id == reference.lookup(*query).id, query


def test_a_profile_comes_back_as_the_same_object(saved):
    path, _ = saved
    opened = Matcher.open(path)
    profile = opened.lookup("tls", "10.1.2.3", 5061)
    assert profile.id != 0 and profile.connect_timeout == 100
    assert opened.lookup("tls", "10.1.2.3", 5061) is profile is opened.get(profile.id).profile
    fast = opened.lookup("tls", "192.168.7.7", 1)
    assert fast.id == 9 and fast.connect_timeout == 5 and fast is opened.get(9).profile


def test_each_opening_counts_its_own_hits(rules, saved):
    path, _ = saved
    winner = ReferenceMatcher(rules).lookup("tls", "10.1.2.3", 5061).id
    assert winner != 0
    first_open, second_open = Matcher.open(path), Matcher.open(path)
    quiet = Matcher.open(path, count_hits=False)
    for _ in range(3):
        first_open.lookup("tls", "10.1.2.3", 5061)
    second_open.lookup_many("tls", array.array("I", [0x0A010203, 0xCB007109]), array.array("H", [5061, 1]))
    quiet.lookup("tls", "10.1.2.3", 5061)
    assert first_open.hits()[winner] == 3 and first_open.hits()[0] == 0
    assert second_open.hits()[winner] == 1 and second_open.hits()[0] == 1
    assert first_open.top_hits(1) == [(winner, 3)]
    assert quiet.hits() == {} and quiet.count_hits is False and quiet.lookups == 1
    assert Matcher.open(path).hits()[winner] == 0  # nothing of it is in the file


def test_saving_an_opened_image_writes_the_same_bytes(saved, tmp_path):
    path, data = saved
    again = tmp_path / "again.img"
    Matcher.open(path).save(again)
    assert again.read_bytes() == data


def test_the_same_rules_give_the_same_file(rules, saved, tmp_path):
    _, data = saved
    other = tmp_path / "other.img"
    reloaded(rules).save(other)
    assert other.read_bytes() == data


def test_empty_and_tiny_matchers_round_trip(tmp_path):
    path = tmp_path / "small.img"
    for rules in ([], [Rule(id=1)], [Rule(id=2**62, remote=net("::/0"))], [Rule(id=3, remote=net("10.0.0.0/8"))]):
        built = Matcher(rules)
        built.save(path)
        opened = Matcher.open(path)
        assert list(opened) == rules and len(opened) == len(rules)
        assert opened.lookup("tcp", "10.1.1.1") == built.lookup("tcp", "10.1.1.1")
        assert list(opened.lookup_many("tcp", array.array("I", [0x0A010101]))) == list(
            built.lookup_many("tcp", array.array("I", [0x0A010101]))
        )


def test_an_opened_matcher_serves_while_its_file_is_replaced_and_unlinked(rules, saved, tmp_path):
    _, data = saved
    path = tmp_path / "served.img"
    path.write_bytes(data)
    opened = Matcher.open(path)
    queries = lookups_of(rules, 100, seed=3)
    before = [opened.lookup(*query).id for query in queries]
    Matcher(rules[:2]).save(path)  # a new image renamed over it: the mapping keeps the old file
    assert [opened.lookup(*query).id for query in queries] == before
    assert len(Matcher.open(path)) == 2
    path.unlink()
    assert [opened.lookup(*query).id for query in queries] == before
    assert list(opened) == sorted(rules, key=lambda rule: rule.key())
    assert opened.image_path == str(path)


def test_an_image_without_the_index_is_built_from_its_records(rules, saved, tmp_path):
    """The pure twin writes no index (sections 0..7 empty): the compiled matcher builds it."""
    _, data = saved
    image = Image(data)
    for name in SECTION_NAMES[:8]:
        image.set_section(name, 0, 0)
    for rank in range(image.count("RULES")):
        image.set("RULES", rank, "node", NONE)
    image.set_header("flags", 0)
    path = tmp_path / "records.img"
    path.write_bytes(image.sealed())
    opened, built = Matcher.open(path), reloaded(rules)
    assert opened.image_path == str(path) and opened.schema_version == 2
    assert list(opened.as_given()) == rules
    for query in lookups_of(rules, 200, seed=4):
        assert opened.lookup(*query) == built.lookup(*query), query
    resaved = tmp_path / "resaved.img"
    opened.save(resaved)  # built here: with its index
    assert resaved.read_bytes() == data


# -- crafted files: a right checksum, a wrong index -----------------------------------------


def with_child(image: Image) -> tuple[int, int]:
    """A node with a child on side 0 or 1: (node, side)."""
    for i in range(image.count("NODES")):
        for side in (0, 1):
            if image.get("NODES", i, f"child{side}") != NONE:
                return i, side
    raise AssertionError("no node with a child")


def test_a_child_out_of_range(crafted):
    def change(image):
        i, side = with_child(image)
        n = image.header("n_nodes")
        image.set("NODES", i, f"child{side}", n)
        change.want = f"NODES[{i}]: child {n} is not a node (n_nodes {n})"

    assert crafted(change) == change.want


def test_a_child_not_longer_than_its_parent(crafted):
    def change(image):
        i, side = with_child(image)
        child, plen = image.get("NODES", i, f"child{side}"), image.get("NODES", i, "plen")
        image.set("NODES", child, "plen", plen)
        change.want = f"NODES[{i}]: child {child} is /{plen}, not longer than its parent's /{plen}"

    assert crafted(change) == change.want


def test_a_node_that_is_its_own_child(crafted):
    """A loop in the trie: a descent would never end."""

    def change(image):
        i, side = with_child(image)
        plen = image.get("NODES", i, "plen")
        image.set("NODES", i, f"child{side}", i)
        change.want = f"NODES[{i}]: child {i} is /{plen}, not longer than its parent's /{plen}"

    assert crafted(change) == change.want


def test_the_nodes_are_stored_parent_before_child(saved):
    """The build stores the trie in preorder, so that open's check of a child's length reads a
    nearby node: a node's first child is the next node, every child comes after its parent."""
    _, data = saved
    image = Image(data)
    for i in range(image.count("NODES")):
        children = [image.get("NODES", i, f"child{side}") for side in (0, 1)]
        present = [child for child in children if child != NONE]
        assert all(child > i for child in present), (i, children)
        if present:
            assert present[0] == i + 1, (i, children)


@pytest.fixture(scope="module")
def large_image(tmp_path_factory) -> bytes:
    """An image of many check chunks (open checks each chunk right after its checksum)."""
    path = tmp_path_factory.mktemp("large") / "large.img"
    Matcher(WORKLOADS["carrier"](20_000, 0, seed=9).rules).save(path)
    data = path.read_bytes()
    assert len(data) > 16 * (1 << 17)
    return data


@pytest.mark.parametrize(
    ("section", "field", "value", "want"),
    [
        ("NODES", "own_best", NONE - 1, "NODES[{i}]: rank 4294967294 is not a rule (n_rules 20000)"),
        ("RULES", "profile", NONE - 1, "RULES[{i}]: profile 4294967294 is not one (n_profiles {n_profiles})"),
        ("GIVEN", "rank", 20_000, "GIVEN[{i}]: rank 20000 is not a rule (n_rules 20000)"),
        ("SLOTS4", "chain", NONE - 1, "SLOTS4[{i}]: chain 4294967294 is not in POOL (n_pool {n_pool})"),
    ],
)
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_fault_anywhere_in_a_large_image(tmp_path, large_image, section, field, value, want, where):
    """Every record of a streamed section is checked, the ones at a chunk's edge and the last
    one included."""
    image = Image(large_image)
    n = image.count(section)
    i = {"first": 0, "middle": n // 2, "last": n - 1}[where]
    image.set(section, i, field, value)
    path = tmp_path / "crafted.img"
    path.write_bytes(image.sealed())
    with pytest.raises(ImageError) as caught:
        Matcher.open(path)
    reason = want.format(i=i, n_profiles=image.header("n_profiles"), n_pool=image.header("n_pool"))
    assert str(caught.value) == f"image {path}: {reason}"


@pytest.mark.parametrize(
    "change",
    [
        lambda image: image.set("NODES", 0, "child0", image.header("n_nodes")),
        lambda image: image.set_header("n_nodes", image.header("n_nodes") + 1),
        lambda image: image.set_section("RULES", 8, 64),
    ],
    ids=["record", "count", "section"],
)
def test_an_unsealed_change_is_refused_as_corrupt(tmp_path, saved, change):
    """The checks run along with the checksum, but a file whose sum is wrong is refused for that
    first: whatever else is wrong with it follows from the damage."""
    _, data = saved
    image = Image(data)
    change(image)
    path = tmp_path / "damaged.img"
    path.write_bytes(bytes(image.data))
    with pytest.raises(ImageError, match=r": corrupt: checksum "):
        Matcher.open(path)


def test_node_groups_beyond_the_groups(crafted):
    def change(image):
        i = first(image, "NODES", lambda i: image.get("NODES", i, "group_cnt") > 0)
        n = image.header("n_groups")
        image.set("NODES", i, "group_off", n - 1).set("NODES", i, "group_cnt", 2)
        change.want = f"NODES[{i}]: groups {n - 1}..{n + 1} lie beyond the {n} of GROUPS"

    assert crafted(change) == change.want


def test_a_node_bound_that_is_no_rank(crafted):
    def change(image):
        n = image.header("n_rules")
        image.set("NODES", 0, "sub_best", n + 7)
        change.want = f"NODES[0]: rank {n + 7} is not a rule (n_rules {n})"

    assert crafted(change) == change.want


def test_a_node_that_is_no_prefix(crafted):
    def change(image):
        i = first(image, "NODES", lambda i: image.get("NODES", i, "family") == 4)
        image.set("NODES", i, "plen", 33)
        change.want = f"NODES[{i}]: family 4, length 33 is not a prefix"

    assert crafted(change) == change.want


def test_a_group_rank_out_of_range(crafted):
    def change(image):
        n = image.header("n_rules")
        image.set("GROUPS", 0, "best", n)
        change.want = f"GROUPS[0]: rank {n} is not a rule (n_rules {n})"

    assert crafted(change) == change.want


def test_a_group_local_slot_out_of_range(crafted):
    def change(image):
        i = first(image, "GROUPS", lambda i: image.get("GROUPS", i, "mask") & 8)
        n = image.header("n_lslots")
        image.set("GROUPS", i, "lslot", n)
        change.want = f"GROUPS[{i}]: local slot {n} is not one (n_lslots {n})"

    assert crafted(change) == change.want


def test_a_group_local_id_out_of_range(crafted):
    def change(image):
        n = image.header("n_local")
        image.set("GROUPS", 0, "local_id", n + 1)
        change.want = f"GROUPS[0]: local id {n + 1} is not one (n_local {n})"

    assert crafted(change) == change.want


def test_a_group_with_unknown_mask_bits(crafted):
    def change(image):
        image.set("GROUPS", 0, "mask", image.get("GROUPS", 0, "mask") | 0x40)
        change.want = "GROUPS[0]: unknown mask bits 0x40"

    assert crafted(change) == change.want


def test_a_hashed_group_without_a_table(crafted):
    def change(image):
        i = first(image, "GROUPS", lambda i: not image.get("GROUPS", i, "mask") & 16)
        image.set_section("TABLE", 0, 0).set_header("hmask", 0)
        change.want = f"GROUPS[{i}]: a hashed group, and TABLE is empty"

    assert crafted(change) == change.want


def test_a_table_rank_out_of_range(crafted):
    def change(image):
        i = first(image, "TABLE", lambda i: image.get("TABLE", i, "rank") != NONE)
        n = image.header("n_rules")
        image.set("TABLE", i, "rank", n + 1)
        change.want = f"TABLE[{i}]: rank {n + 1} is not a rule (n_rules {n})"

    assert crafted(change) == change.want


def test_a_table_without_an_empty_slot(crafted):
    """A probe stops at an empty slot: a full table would make a missing key loop forever."""

    def change(image):
        for i in range(image.count("TABLE")):
            image.set("TABLE", i, "rank", 0)
        change.want = f"TABLE: no empty slot among its {image.count('TABLE')} (a probe would never end)"

    assert crafted(change) == change.want


def test_a_table_whose_count_is_not_the_headers(crafted):
    def change(image):
        n = image.header("n_entries")
        image.set_header("n_entries", n + 1)
        change.want = f"TABLE: {n} entries in use, the header says {n + 1}"

    assert crafted(change) == change.want


@pytest.mark.parametrize("name", ["SLOTS4", "SLOTS6"])
def test_a_slot_chain_out_of_the_pool(crafted, name):
    def change(image):
        i = first(image, name, lambda i: image.get(name, i, "chain") != NONE)
        n = image.header("n_pool")
        image.set(name, i, "chain", n)
        change.want = f"{name}[{i}]: chain {n} is not in POOL (n_pool {n})"

    assert crafted(change) == change.want


@pytest.mark.parametrize("name", ["SLOTS4", "SLOTS6"])
def test_a_slot_start_out_of_the_nodes(crafted, name):
    def change(image):
        i = first(image, name, lambda i: image.get(name, i, "start") != NONE)
        n = image.header("n_nodes")
        image.set(name, i, "start", n + 3)
        change.want = f"{name}[{i}]: start {n + 3} is not a node (n_nodes {n})"

    assert crafted(change) == change.want


def test_a_pool_record_with_groups_beyond_the_groups(crafted):
    def change(image):
        n = image.header("n_groups")
        flag = image.get("POOL", 0, "group_cnt") & LAST_SHORT
        image.set("POOL", 0, "group_off", n).set("POOL", 0, "group_cnt", flag | 1)
        change.want = f"POOL[0]: groups {n}..{n + 1} lie beyond the {n} of GROUPS"

    assert crafted(change) == change.want


def test_a_pool_rank_out_of_range(crafted):
    def change(image):
        n = image.header("n_rules")
        image.set("POOL", 0, "own_best", n)
        change.want = f"POOL[0]: rank {n} is not a rule (n_rules {n})"

    assert crafted(change) == change.want


def test_a_pool_whose_last_record_ends_no_chain(crafted):
    """A chain is read until LAST_SHORT: without it on the last record, past the pool's end."""

    def change(image):
        last = image.count("POOL") - 1
        image.set("POOL", last, "group_cnt", image.get("POOL", last, "group_cnt") & ~LAST_SHORT)
        change.want = "POOL: its last record lacks LAST_SHORT (a chain would run past its end)"

    assert crafted(change) == change.want


def test_a_local_hash_without_an_empty_slot(crafted):
    def change(image):
        for i in range(image.count("LTABLE")):
            image.set("LTABLE", i, "fp", 4 << 8 | 32).set("LTABLE", i, "id", 1)
        change.want = f"LTABLE: no empty slot among its {image.count('LTABLE')} (a probe would never end)"

    assert crafted(change) == change.want


def test_a_local_hash_id_out_of_range(crafted):
    def change(image):
        i = first(image, "LTABLE", lambda i: image.get("LTABLE", i, "fp") != 0)
        n = image.header("n_local")
        image.set("LTABLE", i, "id", n + 1)
        change.want = f"LTABLE[{i}]: local id {n + 1} is not one (n_local {n})"

    assert crafted(change) == change.want


def test_a_local_slot_that_is_no_prefix(crafted):
    def change(image):
        image.set("LSLOTS", 0, "plen", 200)
        change.want = f"LSLOTS[0]: family {image.get('LSLOTS', 0, 'family')}, length 200 is not a prefix"

    assert crafted(change) == change.want


def test_a_rules_local_id_out_of_range(crafted):
    def change(image):
        n = image.header("n_local")
        image.set("RULES", 4, "local_id", n + 1)
        change.want = f"RULES[4]: local id {n + 1} is not one (n_local {n})"

    assert crafted(change) == change.want


def test_a_rules_node_out_of_range(crafted):
    def change(image):
        n = image.header("n_nodes")
        image.set("RULES", 2, "node", n)
        change.want = f"RULES[2]: node {n} is not a node (n_nodes {n})"

    assert crafted(change) == change.want


def test_a_rules_profile_out_of_range(crafted):
    def change(image):
        n = image.header("n_profiles")
        image.set("RULES", 0, "profile", n)
        change.want = f"RULES[0]: profile {n} is not one (n_profiles {n})"

    assert crafted(change) == change.want


def test_a_rules_tag_out_of_range(crafted):
    def change(image):
        n = image.header("n_strings")
        image.set("RULES", 1, "tag", n + 2)
        change.want = f"RULES[1]: string {n + 2} is not one (n_strings {n})"

    assert crafted(change) == change.want


def test_a_rules_protocol_beyond_the_protocols(crafted):
    def change(image):
        n = image.header("n_protocols")
        image.set("RULES", 3, "proto", n + 1)
        change.want = f"RULES[3]: protocol code {n + 1} is not in PROTOCOLS (n_protocols {n})"

    assert crafted(change) == change.want


def test_a_rules_remote_that_is_no_prefix(crafted):
    def change(image):
        image.set("RULES", 0, "rfam", 5)
        change.want = f"RULES[0]: family 5, length {image.get('RULES', 0, 'rplen')} is not a prefix"

    assert crafted(change) == change.want


@pytest.mark.parametrize("name", ["RULES", "LPREFIXES"])
def test_a_prefix_with_host_bits(crafted, name):
    """A rule made from the image must be one a row can give: ipaddress refuses host bits."""

    def change(image):
        low, length, family = ("rlo", "rplen", "rfam") if name == "RULES" else ("lo", "plen", "family")
        i = first(image, name, lambda i: image.get(name, i, family) == 6)
        image.set(name, i, low, image.get(name, i, low) | 1).set(name, i, length, 64)
        change.want = f"{name}[{i}]: its prefix has bits set past its length 64"

    assert crafted(change) == change.want


def test_an_ipv4_mapped_remote(crafted):
    def change(image):
        i = first(image, "RULES", lambda i: image.get("RULES", i, "rfam") == 6)
        image.set("RULES", i, "rhi", 0).set("RULES", i, "rlo", 0xFFFF_0A00_0000).set("RULES", i, "rplen", 104)
        change.want = f"RULES[{i}]: an IPv4-mapped IPv6 prefix (a rule holds those as IPv4)"

    assert crafted(change) == change.want


def test_a_profiles_attrs_string_out_of_range(crafted):
    def change(image):
        n = image.header("n_strings")
        image.set("PROFILES", 0, "attrs", n)
        change.want = f"PROFILES[0]: string {n} is not one (n_strings {n})"

    assert crafted(change) == change.want


@pytest.mark.parametrize(
    ("k", "value", "want"),
    [
        (0, -1, "connect_timeout is -1, outside 0..2147483647"),
        (5, 3, "alias_mode is 3, outside 0..2"),
        (7, 2, "keepalive is 2, outside 0..1"),
    ],
)
def test_a_profile_value_outside_its_columns_range(crafted, k, value, want):
    """The ranges Rule.from_row gives the columns: a profile made from the image is one a row can give."""
    assert crafted(lambda image: image.set("PROFILES", 0, f"value{k}", value)) == f"PROFILES[0]: {want}"


def test_a_profiles_attrs_text_that_names_no_attribute(crafted):
    def change(image):
        tag = image.get("RULES", first(image, "RULES", lambda i: image.get("RULES", i, "tag") != NONE), "tag")
        image.set("PROFILES", 0, "attrs", tag)

    assert crafted(change).startswith("PROFILES[0]: attrs ")
    assert "unknown attribute" in crafted(change)


def test_a_protocol_name_string_out_of_range(crafted):
    def change(image):
        n = image.header("n_strings")
        image.set("PROTOCOLS", 2, "string", n)
        change.want = f"PROTOCOLS[2]: string {n} is not one (n_strings {n})"

    assert crafted(change) == change.want


def test_a_protocol_code_that_is_another_here(crafted):
    def change(image):
        image.set("PROTOCOLS", 0, "string", image.get("PROTOCOLS", 1, "string"))  # code 1 named as code 2

    assert crafted(change) == "protocol 'tls' has code 1 in the image, 2 here"


def test_a_local_prefix_that_is_no_prefix(crafted):
    def change(image):
        image.set("LPREFIXES", 1, "family", 5)
        change.want = f"LPREFIXES[1]: family 5, length {image.get('LPREFIXES', 1, 'plen')} is not a prefix"

    assert crafted(change) == change.want


def test_local_prefix_zero_is_no_prefix(crafted):
    want = "LPREFIXES[0] (no local prefix) is not all zero"
    assert crafted(lambda image: image.set("LPREFIXES", 0, "plen", 8)) == want


def test_unsorted_ids(crafted):
    """get() and ``in`` search the ids by halves: out of order, they would miss rules."""

    def change(image):
        a, b = image.get("IDS_SORTED", 0, "id"), image.get("IDS_SORTED", 1, "id")
        image.set("IDS_SORTED", 0, "id", b).set("IDS_SORTED", 1, "id", a)
        change.want = f"IDS_SORTED[1]: id {a} does not follow {b} (the ids must be sorted and distinct)"

    assert crafted(change) == change.want


def test_a_repeated_id(crafted):
    def change(image):
        a = image.get("IDS_SORTED", 0, "id")
        image.set("IDS_SORTED", 1, "id", a)
        change.want = f"IDS_SORTED[1]: id {a} does not follow {a} (the ids must be sorted and distinct)"

    assert crafted(change) == change.want


def test_the_largest_id_is_not_max_id(crafted):
    def change(image):
        top = image.header("max_id")
        image.set_header("max_id", top + 1)
        change.want = f"IDS_SORTED: the largest id is {top}, max_id {top + 1}"

    assert crafted(change) == change.want


def test_an_id_by_rank_that_the_index_does_not_hold(crafted):
    def change(image):
        top = image.header("max_id")
        image.set("ID_OF_RANK", 5, "id", top + 1)
        i = first(image, "RANK_OF_SORTED", lambda i: image.get("RANK_OF_SORTED", i, "rank") == 5)
        held = image.get("IDS_SORTED", i, "id")
        change.want = f"RANK_OF_SORTED[{i}]: rank 5 holds id {top + 1}, IDS_SORTED[{i}] is {held}"

    assert crafted(change) == change.want


def test_an_id_below_one(crafted):
    def change(image):
        image.set("IDS_SORTED", 0, "id", 0)
        image.set("ID_OF_RANK", image.get("RANK_OF_SORTED", 0, "rank"), "id", 0)
        change.want = f"IDS_SORTED[0]: id 0 is outside 1..max_id {image.header('max_id')}"

    assert crafted(change) == change.want


@pytest.mark.parametrize("name", ["RANK_OF_SORTED", "GIVEN"])
def test_a_rank_list_out_of_range(crafted, name):
    def change(image):
        n = image.header("n_rules")
        image.set(name, 7, "rank", n)
        change.want = f"{name}[7]: rank {n} is not a rule (n_rules {n})"

    assert crafted(change) == change.want


def test_string_offsets_that_fall(crafted):
    def change(image):
        below = image.get("STRING_OFFSETS", 1, "offset")
        image.set("STRING_OFFSETS", 2, "offset", below - 1)
        change.want = f"STRING_OFFSETS[2]: {below - 1} is below the offset before it, {below}"

    assert crafted(change) == change.want


def test_a_string_that_starts_inside_a_character(crafted):
    def change(image):
        offset, size = image.section("STRING_BYTES")
        text = bytes(image.data[offset : offset + size])
        starts = [image.get("STRING_OFFSETS", k, "offset") for k in range(image.count("STRING_OFFSETS"))]
        k = next(k for k, start in enumerate(starts) if text[start:].startswith(b"caf"))
        inside = image.get("STRING_OFFSETS", k, "offset") + 4  # the second byte of the é
        image.set("STRING_OFFSETS", k + 1, "offset", inside)
        change.want = f"STRING_OFFSETS[{k + 1}]: offset {inside} is inside a UTF-8 character"

    assert crafted(change) == change.want


def test_string_bytes_that_are_not_utf8(crafted):
    def change(image):
        offset, _ = image.section("STRING_BYTES")
        image.data[offset] = 0xFF

    assert crafted(change).startswith("section STRING_BYTES: not UTF-8 (invalid start byte at byte 0)")


@pytest.mark.parametrize(
    ("field", "value", "want"),
    [
        ("slot_bits0", 30, "slot_bits[0] is 30, not 0 or 16..22"),
        ("root1", 0xFFFFFFF0, "root[1] is 4294967280, not a node"),
        ("hmask", 62, "hmask 0x3e is not a power of two less one that fits the file"),
        ("lmask", 2**40 - 1, "lmask 0xffffffffff is not a power of two less one that fits the file"),
        ("any_off", 0xFFFFFFF0, "the remote-any groups 4294967280.."),
        ("any_best", 0xFFFFFFF0, "any_best 4294967280 is not a rule"),
        ("default_profile", 0xFFFFFFF0, "default_profile 4294967280 is not a profile"),
        ("n_rules", NONE, "n_rules 4294967295 is out of range"),
        ("n_protocols", 0xFFFF, "n_protocols 65535 is out of range"),
        ("flags", 3, "unknown flags 0x2"),
    ],
)
def test_header_scalars_out_of_range(crafted, field, value, want):
    assert crafted(lambda image: image.set_header(field, value)).startswith(want)


@pytest.mark.parametrize("name", SECTION_NAMES[:8])
def test_an_index_section_out_of_place(crafted, name):
    """tests/test_image.py moves the records sections; these are the compiled index's."""

    def change(image):
        offset, size = image.section(name)
        image.set_section(name, offset + 8, size)
        change.want = f"section {name}: {size} bytes at offset {offset + 8}, not a 64-aligned part of the body"

    assert crafted(change) == change.want


@pytest.mark.parametrize("name", ["NODES", "GROUPS", "POOL", "LSLOTS", "SLOTS4", "TABLE"])
def test_an_index_section_of_another_size(crafted, name):
    def change(image):
        offset, size = image.section(name)
        image.set_section(name, offset, size - 8)
        change.want = f"section {name}: {size - 8} bytes, its count makes it {size}"

    assert crafted(change) == change.want


def test_mutated_images_are_refused_or_serve(saved, tmp_path):
    """Random fields of random records changed, the file sealed again: every open either
    refuses with an ImageError or gives a matcher whose every entry point works."""
    _, data = saved
    rng = random.Random(12)
    path = tmp_path / "mutated.img"
    queries = lookups_of(structured_rules()[:40], 40, seed=5)
    refused = served = 0
    for _ in range(int(os.environ.get("TCPMGM_IMAGE_MUTATIONS", "60"))):
        image = Image(data)
        name = rng.choice(SECTION_NAMES)
        index = rng.randrange(image.count(name))
        field, code = rng.choice([f for f in RECORDS[name] if not f[0].startswith("pad")])
        bits = 8 * struct.calcsize(code)
        value = rng.choice([0, 1, NONE, rng.getrandbits(bits), image.get(name, index, field) + rng.choice((-1, 1))])
        signed = code in "iq"
        low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        image.set(name, index, field, min(max(value, low), high))
        path.write_bytes(image.sealed())
        try:
            opened = Matcher.open(path)
        except ImageError:
            refused += 1
            continue
        served += 1
        for query in queries:
            opened.lookup(*query)
            opened.explain(*query)
        opened.lookup_many("tcp", array.array("I", [0x0A010203, 0xC0A80101] * 50))
        for rule in opened:
            opened.get(rule.id)
    assert refused and served, (refused, served)


def test_a_path_that_is_no_image(tmp_path):
    for path, want in [
        (tmp_path, "cannot read: not a regular file"),
        (tmp_path / "missing.img", "cannot read: No such file or directory"),
    ]:
        with pytest.raises(ImageError, match=f"^image {path}: {want}$"):
            Matcher.open(path)
    fifo = tmp_path / "fifo.img"
    os.mkfifo(fifo)  # opened without blocking, then refused
    with pytest.raises(ImageError, match="not a regular file"):
        Matcher.open(fifo)


@pytest.mark.skipif(sys.byteorder != "little", reason="the crafted mark is little-endian's")
def test_an_unknown_byte_order_mark(crafted):
    assert crafted(lambda image: image.set_header("byte_order", 0x01020305)) == "unknown byte order mark 0x01020305"
