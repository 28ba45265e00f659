"""The image file (docs/architecture.md#the-image) in pure Python: the reference matcher's ``save`` and ``open``.

The twin of ``_image.pxi``: the same format byte for byte, the same checksum
(:func:`sum64`), the same refusals as :class:`~tcpmgm.model.errors.ImageError`.
It writes images without the lookup index (no ``HAS_INDEX``: sections 0..7
empty, every ``RuleRec.node`` ``NONE``), which the compiled matcher opens by
building the index from the records, and it reads any image, ignoring sections
0..7: what it needs are the records, from which the reference matcher sorts
its rules again.

Every rule read back is made by :meth:`Rule.from_row <tcpmgm.model.rule.Rule.from_row>`,
the one validator, from the row its records describe; a record that
``from_row`` refuses, or would change (a prefix with host bits set, a
mapped IPv6 prefix), makes the image corrupt, not a different rule.
"""

from __future__ import annotations

import ipaddress
import os
import struct
import sys
from array import array
from collections.abc import Sequence
from typing import Any, NamedTuple

from ..model.errors import ImageError, RuleError
from ..model.profile import PROFILE_FIELDS, Profile, format_attrs, parse_attrs
from ..model.protocols import ANY, protocol_code, protocols, register_protocol
from ..model.rule import Rule
from .publish import publish

__all__ = ["Image", "read_image", "sum64", "write_image"]

MAGIC = b"TCPMGMIM"
IMAGE_VERSION = 1
BYTE_ORDER_MARK = 0x01020304  # as the writer stored it: reads as 0x04030201 on the other byte order
HAS_INDEX = 1  # header flag: sections 0..7 hold the lookup index
KNOWN_FLAGS = HAS_INDEX
NONE = 0xFFFFFFFF  # "no node", "no string" as an index
ALIGN = 64  # every section starts at a multiple of it; the file size is one too
HEADER_SIZE = 512
N_SECTIONS = 18
N_INDEX_SECTIONS = 8  # sections 0..7: the lookup index, which this twin neither writes nor reads

# The sections of the records, by their index in the header's table (the contract's order).
ID_OF_RANK, RULES, LPREFIXES, IDS_SORTED, RANK_OF_SORTED, PROFILES = 8, 9, 10, 11, 12, 13
STRING_OFFSETS, STRING_BYTES, PROTOCOLS, GIVEN = 14, 15, 16, 17
SECTION_NAMES = (
    "NODES",
    "GROUPS",
    "TABLE",
    "SLOTS4",
    "SLOTS6",
    "POOL",
    "LTABLE",
    "LSLOTS",
    "ID_OF_RANK",
    "RULES",
    "LPREFIXES",
    "IDS_SORTED",
    "RANK_OF_SORTED",
    "PROFILES",
    "STRING_OFFSETS",
    "STRING_BYTES",
    "PROTOCOLS",
    "GIVEN",
)

# The structs of _layout.pxd in native byte order without implicit padding ("="): each lays
# its fields out as C does, because every field already sits at a multiple of its size.
HEADER_FIELDS = (
    # name, struct code
    ("magic", "8s"),
    ("version", "I"),
    ("byte_order", "I"),
    ("file_size", "Q"),
    ("checksum", "Q"),  # offset 24: word 3 of the file, read as 0 by sum64
    ("flags", "I"),
    ("schema_version", "I"),
    ("n_rules", "I"),
    ("n_nodes", "I"),
    ("n_pool", "I"),
    ("n_groups", "I"),
    ("root0", "I"),
    ("root1", "I"),
    ("slot_bits0", "i"),
    ("slot_bits1", "i"),
    ("hmask", "Q"),
    ("n_entries", "Q"),
    ("lmask", "Q"),
    ("n_local", "I"),
    ("n_lslots", "I"),
    ("any_off", "I"),
    ("any_cnt", "I"),
    ("any_best", "I"),
    ("n_profiles", "I"),
    ("n_strings", "I"),
    ("n_protocols", "I"),
    ("default_profile", "I"),
    ("reserved0", "I"),
    ("max_id", "q"),
)
HEADER = struct.Struct("=" + "".join(code for _, code in HEADER_FIELDS))
SECTIONS = struct.Struct(f"={2 * N_SECTIONS}Q")  # ImageSection sections[18]: offset, size
CHECKSUM_OFFSET = 24
RULE_REC = struct.Struct(
    "=QQIIiIIHHHBBI"
)  # rhi, rlo, node, local_id, priority, profile, tag, proto, rport, lport, rfam, rplen, pad
PREFIX = struct.Struct("=QQBB6x")  # hi, lo, family, plen
N_PROFILE_INTS = len(PROFILE_FIELDS) - 1  # every profile field but attrs, the last
PROFILE_REC = struct.Struct(f"={N_PROFILE_INTS}iI")  # value[11], attrs
assert PROFILE_FIELDS[-1] == "attrs"
assert HEADER.size + SECTIONS.size <= HEADER_SIZE
assert (RULE_REC.size, PREFIX.size, PROFILE_REC.size) == (48, 24, 48)
_FLAG_FIELDS = frozenset(
    i for i, name in enumerate(PROFILE_FIELDS[:N_PROFILE_INTS]) if name in ("no_new_conn", "keepalive")
)

# sum64: FNV-1a's prime and offset basis, in four lanes.
_P = 0x100000001B3
_BASIS = 0xCBF29CE484222325
_M64 = 0xFFFFFFFFFFFFFFFF
_LANES = 4

_FOREIGN_ORDER = "big-endian" if sys.byteorder == "little" else "little-endian"


class Image(NamedTuple):
    """What an image holds for a matcher: its rules as given, its default profile, its schema version."""

    rules: tuple[Rule, ...]
    default: Profile
    schema_version: int | None


def sum64(data: bytes | bytearray | memoryview) -> int:
    """The image checksum of ``data`` (a whole file, a multiple of 8 bytes), word 3 read as 0."""
    words = memoryview(data).cast("B").cast("Q").tolist()
    if len(words) > CHECKSUM_OFFSET // 8:
        words[CHECKSUM_OFFSET // 8] = 0
    h = []
    for lane in range(_LANES):
        acc = _BASIS ^ lane
        for word in words[lane::_LANES]:
            acc = ((acc ^ word) * _P) & _M64
        h.append(acc)
    r = len(words) * 8
    for lane in range(_LANES):
        r = ((r ^ h[lane]) * _P) & _M64
    return r


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


# -- writing ------------------------------------------------------------------------------


class _Interned:
    """Values numbered by first appearance: equal values, one index."""

    def __init__(self) -> None:
        self.index: dict[Any, int] = {}

    def __call__(self, value: Any) -> int:
        return self.index.setdefault(value, len(self.index))


def _key_form(prefix: tuple[int, int, int] | None) -> tuple[int, int, int, int]:
    """A prefix as the lookup's 128-bit key: (hi, lo, family, plen), IPv4 in the top 32 bits; zeros for any."""
    if prefix is None:
        return 0, 0, 0, 0
    family, value, plen = prefix
    if family == 4:
        value <<= 96
    return value >> 64, value & _M64, family, plen


def _sections(
    rules_by_rank: Sequence[Rule], given: Sequence[Rule], default: Profile
) -> tuple[dict[str, int], list[bytes]]:
    """The header's counts and the records sections (8..17) of these rules, numbered as the
    compiled build numbers them (_records.pxi, _build.pxi): strings, profiles and local
    prefixes by first appearance in the order given (a rule's tag, then its profile's attrs),
    then the protocol names in code order, then the default profile and its attrs."""
    strings, profiles, local_ids = _Interned(), _Interned(), _Interned()
    local_ids(None)  # local id 0: any

    def profile_rec(profile: Profile) -> int:
        text = format_attrs(profile.attrs)
        attrs = strings(text) if text else NONE
        values = tuple(int(getattr(profile, name)) for name in PROFILE_FIELDS[:N_PROFILE_INTS])
        return profiles((*values, attrs))

    rec_of: dict[int, bytes] = {}
    for rule in given:
        tag = NONE if rule.local_tag is None else strings(rule.local_tag)
        profile = profile_rec(rule.profile)
        local_id = local_ids(rule.local_prefix)
        rhi, rlo, rfam, rplen = _key_form(rule.remote_prefix)
        proto = protocol_code(rule.proto)
        if proto is None:
            raise ValueError(f"rule {rule.id}: protocol {rule.proto!r} is not registered")
        rec_of[rule.id] = RULE_REC.pack(
            rhi, rlo, NONE, local_id, rule.priority, profile, tag, proto,
            rule.remote_port, rule.local_port, rfam, rplen, 0,
        )  # fmt: skip
    names = protocols()
    protocol_strings = [strings(name) for name in names]
    default_index = profile_rec(default)

    rank_of = {rule.id: rank for rank, rule in enumerate(rules_by_rank)}
    ids_sorted = sorted(rank_of)
    text = [value.encode() for value in strings.index]
    offsets = array("I", [0])
    for encoded in text:
        offsets.append(offsets[-1] + len(encoded))
    sections = [
        array("q", [rule.id for rule in rules_by_rank]).tobytes(),
        b"".join(rec_of[rule.id] for rule in rules_by_rank),
        b"".join(PREFIX.pack(*_key_form(prefix)) for prefix in local_ids.index),
        array("q", ids_sorted).tobytes(),
        array("I", [rank_of[rule_id] for rule_id in ids_sorted]).tobytes(),
        b"".join(PROFILE_REC.pack(*rec) for rec in profiles.index),
        offsets.tobytes(),
        b"".join(text),
        array("I", protocol_strings).tobytes(),
        array("I", [rank_of[rule.id] for rule in given]).tobytes(),
    ]
    counts = {
        "n_rules": len(given),
        "n_local": len(local_ids.index) - 1,
        "n_profiles": len(profiles.index),
        "n_strings": len(strings.index),
        "n_protocols": len(names),
        "default_profile": default_index,
        "max_id": max(rank_of, default=0),
    }
    return counts, sections


def image_bytes(
    rules_by_rank: Sequence[Rule], given: Sequence[Rule], default: Profile, schema_version: int | None
) -> bytes:
    """The image of these rules (in rank order and as given): header, then the records sections."""
    counts, records = _sections(rules_by_rank, given, default)
    table = [(0, 0)] * N_SECTIONS
    body = bytearray(HEADER_SIZE)
    for k, content in enumerate(records, N_INDEX_SECTIONS):
        if content:
            table[k] = (len(body), len(content))
            body += content
            body += bytes(_aligned(len(body)) - len(body))
    header: dict[str, Any] = dict.fromkeys((name for name, _ in HEADER_FIELDS), 0)
    header.update(counts)
    header.update(
        magic=MAGIC,
        version=IMAGE_VERSION,
        byte_order=BYTE_ORDER_MARK,
        file_size=len(body),
        schema_version=schema_version or 0,
        root0=NONE,  # no trie: the index fields say "empty" where 0 would name a node or a rank
        root1=NONE,
        any_best=NONE,
    )
    HEADER.pack_into(body, 0, *(header[name] for name, _ in HEADER_FIELDS))
    SECTIONS.pack_into(body, HEADER.size, *(n for entry in table for n in entry))
    struct.pack_into("=Q", body, CHECKSUM_OFFSET, sum64(body))
    return bytes(body)


def write_image(
    path: str | os.PathLike[str],
    rules_by_rank: Sequence[Rule],
    given: Sequence[Rule],
    default: Profile,
    schema_version: int | None,
) -> None:
    """Write the image of these rules to ``path`` atomically (:func:`.publish.publish`)."""
    data = image_bytes(rules_by_rank, given, default, schema_version)

    def write(fd: int) -> None:
        with memoryview(data) as rest:
            while rest:
                rest = rest[os.write(fd, rest) :]

    publish(path, write)


# -- reading ------------------------------------------------------------------------------


class _Refused(Exception):
    """Why an image is refused, before the path is put in front (ImageError's message)."""


def read_image(path: str | os.PathLike[str]) -> Image:
    """The rules, default profile and schema version of the image at ``path``;
    :class:`ImageError` naming the file and the reason for any file that is not a whole,
    intact image of format version 1 written on a machine of this byte order, or whose
    records are not rules."""
    target = os.fspath(path)
    try:
        with open(target, "rb") as source:
            data = source.read()
    except OSError as exc:
        raise ImageError(f"image {target}: cannot read: {exc.strerror or exc}") from None
    try:
        return _image(memoryview(data))
    except _Refused as reason:
        raise ImageError(f"image {target}: {reason}") from None


def _image(data: memoryview) -> Image:
    header = _header(data)
    table = _section_table(data, header)
    return _records(header, {k: data[offset : offset + size] for k, (offset, size) in table.items()})


def _header(data: memoryview) -> dict[str, Any]:
    if len(data) < HEADER_SIZE:
        raise _Refused(f"truncated: {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header")
    header = dict(zip((name for name, _ in HEADER_FIELDS), HEADER.unpack_from(data)))
    if header["magic"] != MAGIC:
        raise _Refused("not a tcpmgm image")
    if header["byte_order"] != BYTE_ORDER_MARK:
        if header["byte_order"] == int.from_bytes(BYTE_ORDER_MARK.to_bytes(4, "little"), "big"):
            raise _Refused(f"written on a {_FOREIGN_ORDER} machine")
        raise _Refused(f"unknown byte order mark {header['byte_order']:#010x}")
    if header["version"] != IMAGE_VERSION:
        raise _Refused(f"format version {header['version']}, this tcpmgm reads {IMAGE_VERSION}")
    if header["file_size"] != len(data):
        if header["file_size"] > len(data):
            raise _Refused(f"truncated: {len(data)} of {header['file_size']} bytes")
        raise _Refused(f"{len(data)} bytes, but the header says {header['file_size']}")
    if len(data) % ALIGN:
        raise _Refused(f"file size {len(data)} is not a multiple of {ALIGN}")
    computed = sum64(data)
    if computed != header["checksum"]:
        raise _Refused(f"corrupt: checksum {header['checksum']:#018x}, the content sums to {computed:#018x}")
    if header["flags"] & ~KNOWN_FLAGS:
        raise _Refused(f"unknown flags {header['flags']:#x}")
    return header


def _section_table(data: memoryview, header: dict[str, Any]) -> dict[int, tuple[int, int]]:
    """Every section's (offset, size), each checked to lie in the file after the header,
    aligned, and (8..17, the records) of the size its count gives."""
    raw = SECTIONS.unpack_from(data, HEADER.size)
    n_rules = header["n_rules"]
    expected = {
        ID_OF_RANK: 8 * n_rules,
        RULES: RULE_REC.size * n_rules,
        LPREFIXES: PREFIX.size * (header["n_local"] + 1),
        IDS_SORTED: 8 * n_rules,
        RANK_OF_SORTED: 4 * n_rules,
        PROFILES: PROFILE_REC.size * header["n_profiles"],
        STRING_OFFSETS: 4 * (header["n_strings"] + 1),
        PROTOCOLS: 4 * header["n_protocols"],
        GIVEN: 4 * n_rules,
    }
    table = {}
    for k in range(N_SECTIONS):
        offset, size = raw[2 * k], raw[2 * k + 1]
        name = SECTION_NAMES[k]
        if size == 0:
            if offset != 0:
                raise _Refused(f"section {name}: empty, at offset {offset} (empty sections are at 0)")
        elif offset % ALIGN or offset < HEADER_SIZE or offset + size > len(data):
            raise _Refused(f"section {name}: {size} bytes at offset {offset}, not a 64-aligned part of the body")
        want = expected.get(k)
        if want is not None and size != want:
            raise _Refused(f"section {name}: {size} bytes, its count makes it {want}")
        table[k] = (offset, size)
    return table


def _records(header: dict[str, Any], section: dict[int, memoryview]) -> Image:
    """The rules of the records sections: every index checked first, then the protocols the
    image names registered (nothing is registered for an image refused by then), then each
    rule made by Rule.from_row and checked to rank after the one before."""
    strings = _strings(header, section[STRING_OFFSETS], section[STRING_BYTES])
    proto_names, unknown = _protocols(section[PROTOCOLS], strings)
    profiles = [_profile_rec(k, rec, strings) for k, rec in enumerate(PROFILE_REC.iter_unpack(section[PROFILES]))]
    if header["default_profile"] >= len(profiles):
        raise _Refused(f"default_profile {header['default_profile']} is not a profile (n_profiles {len(profiles)})")
    default_rec = profiles[header["default_profile"]]
    default = Profile(0, **default_rec.values, attrs=default_rec.attrs)
    local_prefixes = [
        _prefix(hi, lo, family, plen, f"LPREFIXES[{k}]")
        for k, (hi, lo, family, plen) in enumerate(PREFIX.iter_unpack(section[LPREFIXES]))
    ]
    if local_prefixes[0] is not None or None in local_prefixes[1:]:
        raise _Refused("LPREFIXES: local id 0, and only it, is 'any'")
    n = header["n_rules"]
    ids = section[ID_OF_RANK].cast("q")
    if header["max_id"] != max(ids, default=0):
        raise _Refused(f"max_id {header['max_id']}, the rules' largest id is {max(ids, default=0)}")
    _check_id_index(ids, section[IDS_SORTED].cast("q"), section[RANK_OF_SORTED].cast("I"))
    given = section[GIVEN].cast("I")
    if sorted(given) != list(range(n)):
        raise _Refused("GIVEN is not an order of the ranks")
    rows = [
        _row(ids[rank], rec, strings, len(proto_names), len(profiles), local_prefixes)
        for rank, rec in enumerate(RULE_REC.iter_unpack(section[RULES]))
    ]

    _register(unknown)
    by_rank = [row.rule(proto_names, profiles, default) for row in rows]
    for rank in range(1, n):
        if by_rank[rank - 1].order >= by_rank[rank].order:
            raise _Refused(
                f"rules by rank: rule {by_rank[rank].id} at rank {rank} does not rank after rule {by_rank[rank - 1].id}"
            )
    schema_version = header["schema_version"] or None
    return Image(tuple(by_rank[rank] for rank in given), default, schema_version)


def _strings(header: dict[str, Any], offsets_section: memoryview, text: memoryview) -> list[str]:
    offsets = offsets_section.cast("I")
    if offsets[0] != 0 or offsets[-1] != len(text):
        raise _Refused(f"string offsets run from {offsets[0]} to {offsets[-1]}, the string bytes are 0 to {len(text)}")
    strings = []
    for k in range(header["n_strings"]):
        start, stop = offsets[k], offsets[k + 1]
        if stop < start:
            raise _Refused(f"string {k}: ends at {stop}, before its start {start}")
        try:
            strings.append(bytes(text[start:stop]).decode())
        except UnicodeDecodeError:
            raise _Refused(f"string {k}: not UTF-8") from None
    return strings


def _string(strings: list[str], index: int, what: str) -> str:
    if index >= len(strings):
        raise _Refused(f"{what}: string {index} of {len(strings)}")
    return strings[index]


def _protocols(section: memoryview, strings: list[str]) -> tuple[list[str], dict[str, int]]:
    """The protocol names by the image's codes (index 0: any), and those unknown here with the
    code registering them in code order will give: every code must be this process's."""
    names, unknown = [ANY], dict[str, int]()
    following = len(protocols()) + 1
    for k, index in enumerate(section.cast("I")):
        name, code = _string(strings, index, f"PROTOCOLS[{k}]"), k + 1
        here = protocol_code(name)
        if here is None:
            here = unknown.get(name)
            if here is None:
                here = unknown[name] = following
                following += 1
        if here != code:
            raise _Refused(f"protocol {name!r} has code {code} in the image, {here} here")
        names.append(name)
    return names, unknown


def _register(unknown: dict[str, int]) -> None:
    """Register the image's protocols unknown here, each under the code the image gives it."""
    for name, code in unknown.items():
        try:
            registered = register_protocol(name)
        except ValueError as exc:
            raise _Refused(f"protocol {name!r} cannot be registered here: {exc}") from None
        if registered != code:  # another thread registered one in between
            raise _Refused(f"protocol {name!r} has code {code} in the image, {registered} here")


class _ProfileRec(NamedTuple):
    """A ProfileRec read: its integers by name (as a row holds them) and its attrs."""

    values: dict[str, int]
    attrs: dict[str, int]


def _profile_rec(k: int, rec: tuple[int, ...], strings: list[str]) -> _ProfileRec:
    values = dict(zip(PROFILE_FIELDS, rec[:N_PROFILE_INTS]))
    for i in _FLAG_FIELDS:
        if rec[i] not in (0, 1):
            raise _Refused(f"PROFILES[{k}]: {PROFILE_FIELDS[i]} is {rec[i]}, a flag is 0 or 1")
    index = rec[N_PROFILE_INTS]
    attrs = {} if index == NONE else _attrs_of(_string(strings, index, f"PROFILES[{k}] attrs"), f"PROFILES[{k}]")
    return _ProfileRec(values, attrs)


def _attrs_of(text: str, what: str) -> dict[str, int]:
    """The attrs of a profile's text, read by parse_attrs (the model's one reading: registered
    names in their ranges, as the compiled twin checks them), and as format_attrs writes them."""
    try:
        attrs = parse_attrs(text)
    except ValueError as exc:
        raise _Refused(f"{what}: attrs {text!r}: {exc}") from None
    if format_attrs(attrs) != text:  # "tos = 1", a repeated name: parse_attrs takes them, no writer writes them
        raise _Refused(f"{what}: attrs {text!r} are not as format_attrs writes them")
    return attrs


def _prefix(hi: int, lo: int, family: int, plen: int, what: str) -> tuple[int, int, int] | None:
    """A key-form prefix as a rule's Prefix (None: any); refused unless it is one."""
    if family == 0 and hi == lo == plen == 0:
        return None
    value = hi << 64 | lo
    if family == 4 and plen <= 32 and not value & ((1 << 96) - 1):
        return 4, value >> 96, plen
    if family == 6 and plen <= 128:
        return 6, value, plen
    raise _Refused(f"{what}: family {family}, length {plen} is not a prefix")


def _address(family: int, value: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.IPv4Address(value) if family == 4 else ipaddress.IPv6Address(value)


def _network_text(prefix: tuple[int, int, int] | None) -> str | None:
    if prefix is None:
        return None
    family, value, plen = prefix
    return f"{_address(family, value)}/{plen}"


class _Row(NamedTuple):
    """One RuleRec with every index checked: the row Rule.from_row makes its rule from."""

    rule_id: int
    proto: int
    remote: tuple[int, int, int] | None
    rport: int
    local: tuple[int, int, int] | None
    lport: int
    priority: int
    profile: int
    tag: str | None

    def rule(self, proto_names: list[str], profiles: list[_ProfileRec], default: Profile) -> Rule:
        """The rule, made by Rule.from_row (the protocols registered); refused unless from_row
        takes the row as it is."""
        local_addr, listeners = _network_text(self.local), None
        if self.tag is not None:
            # from_row takes a tag for the address of its listener: one address, the local prefix.
            local = self.local
            if local is None or local[2] != (32 if local[0] == 4 else 128):
                raise _Refused(f"rule {self.rule_id}: socket tag {self.tag!r} without a local address")
            listeners, local_addr = {self.tag: str(_address(local[0], local[1]))}, self.tag
        profile = profiles[self.profile]
        row = {
            "id": self.rule_id,
            "proto": proto_names[self.proto],
            "remote_addr": _network_text(self.remote),
            "remote_port": self.rport,
            "local_addr": local_addr,
            "local_port": self.lport,
            "priority": self.priority,
            **profile.values,
            "attrs": format_attrs(profile.attrs),
        }
        try:
            rule = Rule.from_row(row, listeners=listeners, defaults=default)
        except RuleError as exc:  # its message names the rule already
            raise _Refused(str(exc)) from None
        if rule.warnings or (rule.remote_prefix, rule.local_prefix, rule.local_tag) != (
            self.remote,
            self.local,
            self.tag,
        ):
            raise _Refused(f"rule {self.rule_id}: its records are not a rule as Rule.from_row makes it")
        return rule


def _row(
    rule_id: int,
    rec: tuple[int, ...],
    strings: list[str],
    n_protocol_codes: int,
    n_profiles: int,
    local_prefixes: list[tuple[int, int, int] | None],
) -> _Row:
    rhi, rlo, _node, local_id, priority, profile, tag, proto, rport, lport, rfam, rplen, _pad = rec
    what = f"rule {rule_id}"
    if proto >= n_protocol_codes:
        raise _Refused(f"{what}: protocol code {proto}, the image names {n_protocol_codes - 1}")
    if profile >= n_profiles:
        raise _Refused(f"{what}: profile {profile} of {n_profiles}")
    if local_id >= len(local_prefixes):
        raise _Refused(f"{what}: local prefix {local_id} of {len(local_prefixes) - 1}")
    return _Row(
        rule_id,
        proto,
        _prefix(rhi, rlo, rfam, rplen, f"{what} remote"),
        rport,
        local_prefixes[local_id],
        lport,
        priority,
        profile,
        None if tag == NONE else _string(strings, tag, f"{what} tag"),
    )


def _check_id_index(ids: Sequence[int], ids_sorted: Sequence[int], rank_of_sorted: Sequence[int]) -> None:
    """IDS_SORTED and RANK_OF_SORTED: the ids in ascending order, each with its rank."""
    previous = None
    for i, (rule_id, rank) in enumerate(zip(ids_sorted, rank_of_sorted)):
        if previous is not None and rule_id <= previous:
            raise _Refused(f"ids_sorted: {rule_id} at {i} after {previous}")
        if rank >= len(ids) or ids[rank] != rule_id:
            raise _Refused(f"ids_sorted: id {rule_id} at {i} with rank {rank}, which holds another rule")
        previous = rule_id
