"""Where OpenSIPS picks another rule than the documented order: docs/opensips.md#how-the-comparison-works.

:func:`compare` asks both orders, :class:`~tcpmgm.opensips.order.OpenSIPSOrder`
and :class:`~tcpmgm.Matcher` (docs/behaviour.md#which-rule-wins), for every
connection of a candidate set built from the rules' own boundaries
(:func:`candidates`), and reports each pair of winners that differ once, with
the first candidate asked where they do as its witness.

Why candidates suffice, and what they can miss: the two orders both sort by
priority first, and the comparator agrees with the documented key everywhere
but three places (paths of different named protocols compare equal, ties keep
the database order, masks of different families compare by the first one's
length).  So the two winners on a connection, of rules OpenSIPS loads, have the same priority, the
connection is in both rules' filters, and the two orders rank the two rules
differently.  The candidates of a rule are its own boundaries, then those
combined with what each partner asks for in the fields the rule leaves open (a
partner: a rule of its priority on the same or an enclosing remote network,
or on any remote network, that can meet it on a connection and that the two
orders rank differently), up to a budget that the result reports.
"""

from __future__ import annotations

import array
import dataclasses
import ipaddress
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple, Optional, TypeVar, overload

from ..matching.matcher import Matcher
from ..model.errors import RuleError
from ..model.key import key_difference
from ..model.prefix import MAPPED, Prefix, bits, inside, last
from ..model.profile import Profile
from ..model.protocols import protocol_code, protocols
from ..model.rule import Rule
from .order import OpenSIPSOrder, PathKey, compare_paths, path_key

__all__ = ["BUDGET", "Comparison", "Connection", "Difference", "candidates", "compare"]

Connection = tuple[Optional[str], str, int, Optional[str], int]  # lookup()'s five arguments

# The candidate connections that pairs of rules may add (past each rule's own):
# a bound for tables where the pairs grow with the square of the table, which
# compare() reports as not exhaustive when it cuts there.
BUDGET = 1_000_000
_CHUNK = 4096  # candidates asked of both orders at once (and between two progress calls)


@dataclasses.dataclass(frozen=True)
class Difference:
    """One pair of winners that differ, with a connection where they do."""

    connection: Connection  # a witness: the five lookup arguments
    opensips_id: int  # the rule OpenSIPS picks, 0 for none
    documented_id: int  # the rule the documented order picks, 0 for none
    reason: str  # the comparator step where the two orders part


@dataclasses.dataclass(frozen=True)
class Comparison(Sequence[Difference]):
    """What :func:`compare` found: the differences, in order, and whether it
    asked every candidate connection (``exhaustive``) or cut some."""

    differences: list[Difference]
    exhaustive: bool  # False: some candidates were left out, a pair of winners may be missing
    candidates: int  # the candidate connections asked of both orders

    @overload
    def __getitem__(self, index: int) -> Difference: ...
    @overload
    def __getitem__(self, index: slice) -> list[Difference]: ...
    def __getitem__(self, index: int | slice) -> Difference | list[Difference]:
        return self.differences[index]

    def __len__(self) -> int:
        return len(self.differences)


class _Fields(NamedTuple):
    """A rule's filters other than the remote network, as a candidate combines them (None/0: open)."""

    proto: str | None
    remote_port: int
    local: Prefix | None
    local_port: int


class _Candidate(NamedTuple):
    proto: str  # OpenSIPS looks up with the listener's protocol, never for any
    remote: tuple[int, int]  # (version, address)
    remote_port: int
    local: tuple[int, int] | None
    local_port: int


def _mapped(version: int, address: int) -> bool:
    return inside((version, address, bits(version)), MAPPED)


class _Networks:
    """The remote networks of a table as a forest: each one's enclosing network
    and one address of it that no narrower network of the table covers (its gap)."""

    def __init__(self, prefixes: Iterable[Prefix]) -> None:
        self.parent: dict[Prefix, Prefix | None] = {}
        self.gap: dict[Prefix, int | None] = {}
        children: dict[Prefix | None, list[Prefix]] = {}
        distinct = set(prefixes)
        for version in (4, 6):
            stack: list[Prefix] = []
            for prefix in sorted(p for p in distinct if p[0] == version):  # enclosing ones first
                while stack and not inside(prefix, stack[-1]):
                    stack.pop()
                parent = stack[-1] if stack else None
                self.parent[prefix] = parent
                children.setdefault(parent if parent is not None else (version, 0, -1), []).append(prefix)
                stack.append(prefix)
        for prefix in [*self.parent, (4, 0, -1), (6, 0, -1)]:
            whole = prefix if prefix[2] >= 0 else (prefix[0], 0, 0)
            cursor, end = whole[1], last(whole)
            for child in children.get(prefix, ()):
                if child[1] > cursor:
                    break
                cursor = last(child) + 1
            self.gap[prefix] = cursor if cursor <= end else None

    def outside(self, version: int) -> list[int]:
        """An address of ``version`` in no network of the table (the first one, when they cover it all)."""
        gap = self.gap[(version, 0, -1)]
        return [gap if gap is not None else 0]

    def enclosing(self, prefix: Prefix) -> Iterator[Prefix]:
        """``prefix`` and the table's networks around it, nearest first."""
        current: Prefix | None = prefix
        while current is not None:
            yield current
            current = self.parent[current]


def _fields(rule: Rule) -> _Fields:
    return _Fields(rule.proto, rule.remote_port, rule.local_prefix, rule.local_port)


def _combined(mine: _Fields, theirs: _Fields) -> _Fields | None:
    """The filters a connection must pass for both, ``None`` if no connection can
    (two different named protocols: OpenSIPS always looks up with the
    listener's protocol, never for any)."""
    if mine.proto is not None and theirs.proto is not None and mine.proto != theirs.proto:
        return None
    if mine.remote_port and theirs.remote_port and mine.remote_port != theirs.remote_port:
        return None
    if mine.local_port and theirs.local_port and mine.local_port != theirs.local_port:
        return None
    local = mine.local
    if theirs.local is not None:
        if local is None or inside(theirs.local, local):
            local = theirs.local
        elif not inside(local, theirs.local):
            return None
    return _Fields(
        mine.proto or theirs.proto,
        mine.remote_port or theirs.remote_port,
        local,
        mine.local_port or theirs.local_port,
    )


class _Bucket:
    """The rules of one priority on one remote network (or remote any), indexed
    by the fields that decide whether two rules can match one connection."""

    def __init__(self) -> None:
        self.rules: list[Rule] = []
        # protocol (None: any) -> remote port (0: any) -> local port (0: any) -> rules
        self.index: dict[str | None, dict[int, dict[int, list[Rule]]]] = {}

    def add(self, rule: Rule) -> None:
        self.rules.append(rule)
        by_port = self.index.setdefault(rule.proto, {}).setdefault(rule.remote_port, {})
        by_port.setdefault(rule.local_port, []).append(rule)

    def combining(self, rule: Rule) -> Iterator[Rule]:
        """The rules whose protocol and ports a connection can meet together with ``rule``'s."""
        for by_remote in _meeting(self.index, rule.proto, None):
            for by_local in _meeting(by_remote, rule.remote_port, 0):
                for found in _meeting(by_local, rule.local_port, 0):
                    yield from found


_K = TypeVar("_K")
_V = TypeVar("_V")


def _meeting(index: dict[_K, _V], value: _K, open_: _K) -> list[_V]:
    """The entries of ``index`` that a connection can meet together with ``value``:
    all of them when ``value`` is ``open_``, else its own and the open one."""
    if value == open_:
        return list(index.values())
    return [index[key] for key in (value, open_) if key in index]


class _Generator:
    """The candidate connections of a table (docs/opensips.md#how-the-comparison-works):
    each rule's own, then those of the pairs of rules the two orders rank
    differently, until ``budget`` of the latter (``cut`` says whether it was reached)."""

    def __init__(self, rules: Sequence[Rule], order: OpenSIPSOrder, budget: int) -> None:
        self.rules = rules
        self.budget = budget
        self.cut = False
        self.networks = _Networks(rule.remote_prefix for rule in rules if rule.remote_prefix is not None)
        named_ports = {rule.remote_port for rule in rules} | {rule.local_port for rule in rules}
        self.free_port = next((port for port in range(5000, 65536) if port not in named_ports), 0)
        # The protocol of a connection for a rule of protocol any: one that no rule names, if there is one.
        named_protos = {rule.proto for rule in rules}
        self.free_proto = next((name for name in protocols() if name not in named_protos), protocols()[0])
        # Each rule's place in the documented order and in OpenSIPS's (absent: OpenSIPS does not load it).
        self.documented = {rule.id: place for place, rule in enumerate(sorted(rules, key=Rule.key))}
        self.opensips = {rule.id: place for place, rule in enumerate(order.paths)}
        self.buckets: dict[tuple[int, Prefix | None], _Bucket] = {}
        for rule in rules:
            self.buckets.setdefault((rule.priority, rule.remote_prefix), _Bucket()).add(rule)
        # Buckets in which the two orders rank every two rules alike.
        self.alike = {where for where, bucket in self.buckets.items() if self._alike(bucket.rules)}
        # Each bucket's lowest and highest places in both orders (None: OpenSIPS lacks one of its rules).
        self.spans = {where: self._span(bucket.rules) for where, bucket in self.buckets.items()}

    def _span(self, rules: list[Rule]) -> tuple[int, int, int, int] | None:
        places = [self.opensips.get(rule.id) for rule in rules]
        if None in places:
            return None
        opensips = [place for place in places if place is not None]
        documented = [self.documented[rule.id] for rule in rules]
        return min(opensips), max(opensips), min(documented), max(documented)

    def _all_alike(self, rule: Rule, where: tuple[int, Prefix | None]) -> bool:
        """Whether the two orders rank ``rule`` alike against every rule of the bucket ``where``
        (all after it in both, or all before it in both)."""
        span, mine = self.spans[where], self.opensips.get(rule.id)
        if span is None or mine is None:
            return False
        low, high, documented_low, documented_high = span
        documented = self.documented[rule.id]
        return (low > mine and documented_low > documented) or (high < mine and documented_high < documented)

    def _alike(self, rules: list[Rule]) -> bool:
        places = [self.opensips.get(rule.id) for rule in rules]
        if None in places:
            return False
        ranked = sorted(rules, key=lambda rule: self.opensips[rule.id])
        return all(self.documented[a.id] < self.documented[b.id] for a, b in zip(ranked, ranked[1:]))

    def _ranked_differently(self, a: Rule, b: Rule) -> bool:
        mine, theirs = self.opensips.get(a.id), self.opensips.get(b.id)
        if mine is None or theirs is None:  # OpenSIPS lacks one: its place is the other's to take
            return True
        return (mine < theirs) != (self.documented[a.id] < self.documented[b.id])

    def _partners(self, rule: Rule) -> Iterator[Rule]:
        """The rules of ``rule``'s priority on its remote network or an enclosing one
        (or remote any) that can match a connection with it and that the two
        orders rank differently: where a pair of winners can part."""
        networks = self.networks.enclosing(rule.remote_prefix) if rule.remote_prefix is not None else iter(())
        for network in [*networks, None]:
            where = (rule.priority, network)
            bucket = self.buckets.get(where)
            if bucket is None or (
                where in self.alike if network == rule.remote_prefix else self._all_alike(rule, where)
            ):
                continue
            for partner in bucket.combining(rule):
                if partner is not rule and self._ranked_differently(rule, partner):
                    yield partner

    def _remotes(self, rule: Rule, local: Prefix | None) -> list[tuple[int, int]]:
        prefix = rule.remote_prefix
        if prefix is None:
            versions = (local[0],) if local is not None else (4, 6)
            points = [(version, address) for version in versions for address in self.networks.outside(version)]
        else:
            gap = self.networks.gap[prefix]
            addresses = (prefix[1], last(prefix)) + ((gap,) if gap is not None else ())
            points = [(prefix[0], address) for address in dict.fromkeys(addresses)]
        return [point for point in points if not _mapped(*point)]

    def _combinations(self, rule: Rule, fields: _Fields) -> Iterator[_Candidate]:
        """The connections of ``rule``'s remote boundaries with ``fields``."""
        proto = fields.proto or self.free_proto
        if fields.local is None:
            locals_: list[tuple[int, int] | None] = [None]
        else:
            ends = dict.fromkeys((fields.local[1], last(fields.local)))
            locals_ = [(fields.local[0], address) for address in ends if not _mapped(fields.local[0], address)]
        for remote in self._remotes(rule, fields.local):
            if fields.local is not None and remote[0] != fields.local[0]:
                continue
            for local in locals_:
                yield _Candidate(
                    proto, remote, fields.remote_port or self.free_port, local, fields.local_port or self.free_port
                )

    def __iter__(self) -> Iterator[_Candidate]:
        seen: set[_Candidate] = set()
        for rule in self.rules:  # each rule's own: linear in the table, never cut
            for candidate in self._combinations(rule, _fields(rule)):
                if candidate not in seen:
                    seen.add(candidate)
                    yield candidate
        added = 0
        for rule in self.rules:
            mine = _fields(rule)
            for partner in self._partners(rule):
                fields = _combined(mine, _fields(partner))
                if fields is None:
                    continue
                for candidate in self._combinations(rule, fields):
                    if candidate in seen:
                        continue
                    if added == self.budget:
                        self.cut = True
                        return
                    added += 1
                    seen.add(candidate)
                    yield candidate


def _text(address: tuple[int, int]) -> str:
    version, value = address
    return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))


def _connection(candidate: _Candidate) -> Connection:
    local = None if candidate.local is None else _text(candidate.local)
    return candidate.proto, _text(candidate.remote), candidate.remote_port, local, candidate.local_port


def candidates(rules: Iterable[Rule], *, budget: int = BUDGET) -> Iterator[Connection]:
    """The candidate connections of ``rules`` (docs/opensips.md#how-the-comparison-works), each once."""
    given = list(rules)
    for candidate in _Generator(given, OpenSIPSOrder(given), budget):
        yield _connection(candidate)


def _column(addresses: list[tuple[int, int]], version: int) -> array.array[int] | bytes:
    """A ``lookup_many`` address column: host-order ints for IPv4, 16 packed bytes each for IPv6."""
    if version == 4:
        return array.array("I", [value for _, value in addresses])
    return b"".join(value.to_bytes(16, "big") for _, value in addresses)


def _batch_ids(lookup_many: Callable[..., array.array[int]], batch: list[_Candidate]) -> list[int]:
    """The winners' ids for candidates of one remote family and one kind of local address."""
    first = batch[0]
    locals_ = None if first.local is None else _column([c.local for c in batch if c.local is not None], first.local[0])
    return list(
        lookup_many(
            array.array("I", [protocol_code(c.proto) or 0 for c in batch]),
            _column([c.remote for c in batch], first.remote[0]),
            array.array("I", [c.remote_port for c in batch]),
            locals_,
            array.array("I", [c.local_port for c in batch]),
        )
    )


def _describe(rule: Rule) -> str:
    """``tcp, /16``: a rule's protocol and remote prefix."""
    remote = f"/{rule.remote_prefix[2]}" if rule.remote_prefix is not None else "remote any"
    return f"{rule.proto or 'any'}, {remote}"


def _describe_link(third: Rule, winner: Rule) -> str:
    """What makes ``third`` compare equal where the documented key would not:
    its protocol when it names another than ``winner``, else its family and mask."""
    if third.proto is not None and winner.proto is not None and third.proto != winner.proto:
        return third.proto
    prefix = third.remote_prefix
    if prefix is None:
        return _describe(third)
    return f"{third.proto or 'any'}, IPv{prefix[0]} /{prefix[2]}"


def _equal(a: PathKey, b: PathKey) -> bool:
    """Whether OpenSIPS's comparator finds the two paths equal, whichever it reads first."""
    return compare_paths(a, b) == 0 or compare_paths(b, a) == 0


def _reason(
    opensips: Rule | None,
    documented: Rule | None,
    order: OpenSIPSOrder,
    keys: Sequence[PathKey],
    database: dict[int, int],
) -> str:
    """Why the two orders part on a connection where OpenSIPS picks ``opensips``
    and the documented order ``documented`` (``None``: no rule; ``keys``: the
    :func:`path_key` of each of ``order.paths``; ``database``: each loaded
    rule's place in the database's order)."""
    # Both orders try every rule with one predicate, and OpenSIPS loads some of
    # the documented side's rules: where one side has no rule, or OpenSIPS does
    # not have the documented winner, that is why.
    if documented is None:
        return "no rule of the documented order matches"
    if opensips is None or documented.id not in database:
        return f"OpenSIPS does not load rule {documented.id} (it rejects the row or loses it to a batch fetch)"
    o, d = opensips, documented
    if o.key()[:-1] == d.key()[:-1]:
        how = "keeps the database order" if database[o.id] < database[d.id] else "left them against the database order"
        return (
            f"the same key: OpenSIPS {how}, rule {o.id} came first "
            f"(the documented order takes the lower id, rule {d.id})"
        )
    # Two rules that match one connection have the same protocol or any and
    # addresses of one family: there the comparator ranks as the documented
    # key does, so it puts the documented winner first, and only the sort,
    # which assumes a transitive comparator, can have put it after.  What
    # breaks transitivity is a path equal to both: of another protocol, or
    # with a mask of another family (compared as long as the first path's).
    why = f"the documented order puts rule {d.id} first: rule {o.id} has {key_difference(o, d)}"
    start, stop = order.position(o.id), order.position(d.id)
    mine, theirs = keys[start], keys[stop]
    # The first path between the two that the comparator puts after (or equal
    # to) OpenSIPS's winner and before (or equal to) the documented one, one
    # equal to both first: the link the merge went by.
    link: tuple[Rule, str, str] | None = None
    for third, key in zip(order.paths[start + 1 : stop], keys[start + 1 : stop]):
        after_mine = "equal to" if _equal(mine, key) else ("after" if compare_paths(mine, key) < 0 else None)
        before_theirs = "equal to" if _equal(key, theirs) else ("before" if compare_paths(key, theirs) < 0 else None)
        if after_mine and before_theirs and (link is None or after_mine == before_theirs == "equal to"):
            link = third, after_mine, before_theirs
            if after_mine == before_theirs == "equal to":
                break
    head = f"rule {d.id} ({_describe(d)}) sorted after rule {o.id} ({_describe(o)})"
    if link is None:
        return f"{head}, which the comparator puts after it: the merge never compared the two; {why}"
    third, after_mine, before_theirs = link
    relation = (
        "equal to both"
        if after_mine == before_theirs == "equal to"
        else f"{after_mine} rule {o.id} and {before_theirs} rule {d.id}"
    )
    return f"{head} because rule {third.id} ({_describe_link(third, o)}) compared {relation}; {why}"


def compare(
    rules: Sequence[Rule],
    *,
    opensips_rules: Sequence[Rule] | None = None,
    default: Profile | None = None,
    progress: Callable[[int], None] | None = None,
    budget: int = BUDGET,
) -> Comparison:
    """Every pair (OpenSIPS's winner, the documented winner) that differs on a
    candidate connection, once, with a witness; sorted by the two ids.

    ``rules`` in the order the database returned them: the documented order
    reads them all.  ``opensips_rules``, in that order too, are the ones
    OpenSIPS really loads (without the rows it rejects or loses to batch
    fetches), each one of ``rules`` (:class:`~tcpmgm.RuleError` if not);
    ``None``: the same as ``rules``.  The candidates come from ``rules``;
    past ``budget`` of them from pairs of rules the result is not exhaustive.
    ``progress`` is called with the number of candidates of each batch asked."""
    loaded = _loaded(rules, opensips_rules)
    order = OpenSIPSOrder(loaded, default=default)
    documented = Matcher(rules, default=default)
    witnesses: dict[tuple[int, int], _Candidate] = {}
    pending: dict[tuple[int, int | None], list[_Candidate]] = {}
    asked = 0

    def run(batch: list[_Candidate]) -> None:
        for candidate, theirs, ours in zip(
            batch, _batch_ids(order.lookup_many, batch), _batch_ids(documented.lookup_many, batch)
        ):
            if theirs != ours:
                witnesses.setdefault((theirs, ours), candidate)
        if progress is not None:
            progress(len(batch))

    generator = _Generator(list(rules), order, budget)
    for candidate in generator:
        asked += 1
        kind = (candidate.remote[0], None if candidate.local is None else candidate.local[0])
        batch = pending.setdefault(kind, [])
        batch.append(candidate)
        if len(batch) >= _CHUNK:
            run(batch)
            pending[kind] = []
    for batch in pending.values():
        if batch:
            run(batch)

    database = {rule.id: place for place, rule in enumerate(loaded)}
    keys = [path_key(rule) for rule in order.paths]
    differences = []
    for candidate in witnesses.values():
        connection = _connection(candidate)
        # Asked again as the caller will read the witness.
        theirs, ours = order.winner(*connection), documented.get(documented.lookup(*connection).id)
        theirs_id, ours_id = (theirs.id if theirs else 0), (ours.id if ours else 0)
        if theirs_id != ours_id:
            differences.append(Difference(connection, theirs_id, ours_id, _reason(theirs, ours, order, keys, database)))
    differences.sort(key=lambda difference: (difference.opensips_id, difference.documented_id))
    return Comparison(differences, exhaustive=not generator.cut, candidates=asked)


def _loaded(rules: Sequence[Rule], opensips_rules: Sequence[Rule] | None) -> list[Rule]:
    """The rules OpenSIPS loads, in database order: ``opensips_rules``, each one of ``rules``."""
    if opensips_rules is None:
        return list(rules)
    ids = {rule.id for rule in rules}
    for rule in opensips_rules:
        if rule.id not in ids:
            raise RuleError(rule.id, "id", rule.id, "OpenSIPS's rules must be among the documented side's")
    return list(opensips_rules)
