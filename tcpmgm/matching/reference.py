"""The reference matcher: docs/behaviour.md#which-rule-wins written as directly as Python allows.

Rules are sorted once by :meth:`Rule.key`; a lookup returns the first rule in
that order whose every filter matches (:func:`.filters.matches`).  It is slow (linear in the number of
rules) and meant to be obviously right: it is the oracle the compiled
classifier is tested against, and what ``TCPMGM_NO_EXTENSIONS=1`` selects.
"""

from __future__ import annotations

import array
import heapq
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from ..model.profile import Profile, default_profile
from ..model.rule import Rule
from . import _addr_py, _batch_py, _image_py
from .arguments import check_schema_version, check_top_hits_n, check_unique_ids, lookup_port, lookup_proto
from .explanation import Explanation, explanation
from .filters import Filters, host_prefix, matches

__all__ = ["Explanation", "ReferenceMatcher"]


@runtime_checkable
class _Records(Protocol):
    """A RuleRecords of either twin, as a matcher reads it: its rules as given (told from
    an iterable of rules by that method)."""

    def rules(self) -> Iterator[Rule]: ...


class ReferenceMatcher:
    """Pure-Python matcher: same API as the compiled :class:`tcpmgm.Matcher`.

    Except ``stride_bits``: the widths of the compiled trie's first stride,
    which a linear scan does not have (any number would be invented, and
    ``(0, 0)`` means "no prefix of either family" there).  ``nbytes`` is 0:
    like the compiled one's, it counts C memory, and the reference owns none.
    """

    def __init__(
        self, rules: Iterable[Rule] | _Records = (), *, default: Profile | None = None, count_hits: bool = True
    ) -> None:
        given = check_unique_ids(rules.rules() if isinstance(rules, _Records) else rules)
        ordered = sorted(given, key=Rule.key)
        self._given: tuple[Rule, ...] = tuple(given)
        self._rules: tuple[Rule, ...] = tuple(ordered)
        self._schema_version: int | None = None
        self._image_path: str | None = None
        self._by_id = {rule.id: rule for rule in ordered}
        self._default = (default if default is not None else default_profile()).replace(id=0)
        self._filters = [Filters.of(rule) for rule in ordered]
        # Lookups won by rule id (0: the default), or None when not counting.  ``+= 1`` on a
        # dict item is a read and a write, and Python does not promise that no other thread
        # runs between them (a free-threaded build has no GIL at all): the lock makes each
        # count exact (the compiled twin relies on the GIL it holds, _hits.pxi).
        self._hits: dict[int, int] | None = dict.fromkeys([0, *self._by_id], 0) if count_hits else None
        self._lookups = 0  # lookups answered, counted whether or not per rule
        self._hits_lock = threading.Lock()

    @classmethod
    def from_records(
        cls,
        records: Iterable[Rule] | _Records,
        *,
        default: Profile | None = None,
        count_hits: bool = True,
        schema_version: int | None = None,
    ) -> ReferenceMatcher:
        """A matcher of ``records`` (a RuleRecords, or rules) that knows the schema version
        of the table they were read from (``None``: unknown)."""
        check_schema_version(schema_version)
        matcher = cls(records, default=default, count_hits=count_hits)
        matcher._schema_version = schema_version
        return matcher

    # -- the image (docs/architecture.md#the-image) ------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write this matcher's image to ``path``, atomically (the old file, if any, stays
        whole until the new one replaces it).  The reference writes no lookup index: the
        compiled matcher opening it builds one from the records."""
        _image_py.write_image(path, self._rules, self._given, self._default, self._schema_version)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, count_hits: bool = True) -> ReferenceMatcher:
        """The matcher of the image at ``path`` (written by either twin); :class:`ImageError`
        for a file that is not a whole, intact image this tcpmgm reads.  The file is read
        whole: replacing or removing it afterwards changes nothing here."""
        image = _image_py.read_image(path)
        matcher = cls.from_records(
            image.rules, default=image.default, count_hits=count_hits, schema_version=image.schema_version
        )
        matcher._image_path = os.fspath(path)
        return matcher

    @property
    def schema_version(self) -> int | None:
        """The schema version of the table the rules came from (``from_records``, or the image); ``None``: unknown."""
        return self._schema_version

    @property
    def image_path(self) -> str | None:
        """The image file this matcher was opened from; ``None`` when it was built."""
        return self._image_path

    def as_given(self) -> Iterator[Rule]:
        """The rules in the order they were given to the build (an image keeps that order)."""
        return iter(self._given)

    # -- container protocol --------------------------------------------------
    def __len__(self) -> int:
        return len(self._rules)

    def __iter__(self) -> Iterator[Rule]:
        """The rules in key order (the order in which they are tried)."""
        return iter(self._rules)

    def __contains__(self, rule_id: object) -> bool:
        return rule_id in self._by_id

    def get(self, rule_id: int, default: Rule | None = None) -> Rule | None:
        return self._by_id.get(rule_id, default)

    @property
    def default(self) -> Profile:
        return self._default

    @property
    def nbytes(self) -> int:
        """Bytes of C memory this matcher owns: none, it is Python objects only."""
        return 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {len(self)} rules>"

    # -- hit counts ----------------------------------------------------------
    @property
    def count_hits(self) -> bool:
        """Whether lookups count in ``hits()`` (the constructor's ``count_hits``)."""
        return self._hits is not None

    @property
    def lookups(self) -> int:
        """Lookups answered since this matcher was built (``lookup``, and each row of an accepted
        ``lookup_many``), counted also with ``count_hits=False``; ``explain`` does not count."""
        return self._lookups

    def hits(self, start: int | None = 0, stop: int | None = None) -> dict[int, int]:
        """Lookups each rule won since this matcher was built: rule id -> count, key 0 (first)
        for the default profile, then the rules ``list(self)[start:stop]`` in that order (every
        rule without arguments, zeros included); ``{}`` when not counting.

        ``lookup`` and ``lookup_many`` count (a refused batch counts nothing); ``explain`` does not."""
        first, last, _ = slice(start, stop).indices(len(self._rules))
        if self._hits is None:
            return {}
        with self._hits_lock:
            counts = {0: self._hits[0]}
            counts.update((rule.id, self._hits[rule.id]) for rule in self._rules[first:last])
            return counts

    def top_hits(self, n: int) -> list[tuple[int, int]]:
        """The at most ``n`` rules with the most hits, as ``[(rule id, count), ...]``, most first and
        ties by the lower id; rules that won nothing and the default profile are left out, and
        so is everything when not counting (``[]``)."""
        check_top_hits_n(n)
        if self._hits is None:
            return []
        with self._hits_lock:
            won = [(rule_id, count) for rule_id, count in self._hits.items() if rule_id != 0 and count]
        return heapq.nsmallest(n, won, key=lambda entry: (-entry[1], entry[0]))

    def _count(self, winners: Sequence[int]) -> None:
        with self._hits_lock:
            self._lookups += len(winners)
            if self._hits is not None:
                for rule_id in winners:
                    self._hits[rule_id] += 1

    # -- lookups -------------------------------------------------------------
    def _matching(
        self,
        proto: str | None,
        remote_ip: Any,
        remote_port: int,
        local_ip: Any,
        local_port: int,
    ) -> Iterator[Rule]:
        want_proto = lookup_proto(proto)
        remote = host_prefix(_addr_py.normalize(remote_ip, "remote_ip"))
        rport = lookup_port(remote_port, "remote_port")
        local = host_prefix(_addr_py.normalize(local_ip, "local_ip"))
        lport = lookup_port(local_port, "local_port")
        for rule, filters in zip(self._rules, self._filters):
            if matches(filters, want_proto, remote, rport, local, lport):
                yield rule

    def lookup(
        self,
        proto: str | None,
        remote_ip: Any,
        remote_port: int = 0,
        local_ip: Any = None,
        local_port: int = 0,
    ) -> Profile:
        """The profile of the winning rule, or the default profile (id 0)."""
        profile = self._winner(proto, remote_ip, remote_port, local_ip, local_port)
        self._count((profile.id,))
        return profile

    def _winner(self, proto: str | None, remote_ip: Any, remote_port: int, local_ip: Any, local_port: int) -> Profile:
        """:meth:`lookup`'s answer, not counted."""
        for rule in self._matching(proto, remote_ip, remote_port, local_ip, local_port):
            return rule.profile
        return self._default

    def explain(
        self,
        proto: str | None,
        remote_ip: Any,
        remote_port: int = 0,
        local_ip: Any = None,
        local_port: int = 0,
    ) -> Explanation:
        """The winner and every matching rule in key order, with why each lost."""
        return explanation(list(self._matching(proto, remote_ip, remote_port, local_ip, local_port)), self._default)

    def lookup_many(
        self,
        protos: str | Any | None,
        remote_ips: Any,
        remote_ports: Any = None,
        local_ips: Any = None,
        local_ports: Any = None,
    ) -> array.array[int]:
        """:meth:`lookup`'s rule id (0: default) for each row of a batch given as buffers.

        The buffers, the result type and the refusals are the compiled
        ``Matcher.lookup_many``'s; :mod:`tcpmgm.matching._batch_py` reads them.
        The rows count in ``hits()`` once the whole batch is answered, as the compiled one's do.
        """
        winners = _batch_py.lookup_many(
            self._winner, self._rules, protos, remote_ips, remote_ports, local_ips, local_ports
        )
        self._count(winners)
        return winners
