"""The rule-table lint behind ``tcpmgm check``: dead rules, duplicates, sloppy prefixes.

Definitions (docs/behaviour.md#which-rule-wins decides which rule wins):

* A rule's *match set* is the set of connections (proto, remote ip, remote
  port, local ip, local port) it matches.  Each filter constrains one field
  independently, so the match set is a product of one set per field and is
  never empty.  Lookups may leave a field unknown (address ``None``, port 0,
  protocol any); a wildcard filter matches those, a specific one does not, so
  only a wildcard covers a wildcard.
* A rule R is **shadowed** (it can never win) when every connection in its
  match set is also matched by some rule with a smaller key.  This module
  finds two sound cases:

  - *single cover*: one better-keyed rule S whose match set contains R's.
    For product sets that is containment field by field: S.proto is any or
    equals R.proto; S.remote is any, or R.remote is a network of the same
    family inside S.remote; S.remote_port is 0 or equals R's (non-zero) port;
    likewise for the local side.
  - *remote union*: several better-keyed rules that each cover R on every
    field but the remote address, and whose remote networks together cover
    R.remote (two /25s covering a /24).

  It does not look for covers that need a union along any other field, or
  along two fields at once; such rules are not reported (never a false
  report, possibly a missed one).
* An **exact duplicate** has the same filters and priority as a rule with a
  lower id; it ties on the whole key and always loses.
* The loader's warnings are repeated here, one finding each: **host-bits**
  (``10.1.2.3/8`` is stored as ``10.0.0.0/8``) and **null** (a NULL in a
  column OpenSIPS declares NOT NULL, read as the column's default).
* **kernel-clamp** (a warning): a keepalive timer outside what the kernel
  accepts, which :func:`tcpmgm.apply` clamps (:data:`tcpmgm.sockets.KEEPALIVE_LIMITS`).

Cost: rules are visited once in key order.  Single covers are found with a
hash index over the rules already visited, probing only the ancestors of the
rule's prefixes at the prefix lengths that occur in the table (so a lookup is
a few dozen dict probes, not a scan).  Union covers walk the networks inside
R.remote in address order and stop at the first gap.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Optional

from ..matching.filters import Filters, matches
from ..model.errors import RuleError, RuleWarning
from ..model.key import key_difference
from ..model.prefix import Prefix
from ..model.rule import Rule
from ..service.sockets import keepalive_timers

__all__ = ["PROGRESS_STEP", "Finding", "lint", "rejected_findings"]

PROGRESS_STEP = 4096  # rules between two progress callbacks

_NetKey = Optional[Prefix]  # a rule's remote_prefix or local_prefix; None = any


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem in the table.  ``by`` lists the rules that cause it (shadowers, the original)."""

    severity: str  # "error" or "warning"
    kind: str  # "rejected", "duplicate", "shadowed", "host-bits", "null", "kernel-clamp"
    rule_id: int | None
    message: str
    by: tuple[int, ...] = ()
    column: str | None = None  # the column the finding is about, when it is about one

    def __str__(self) -> str:
        return f"{self.severity}: {self.kind}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"by": list(self.by)}


def rejected_findings(rejected: Iterable[RuleError]) -> list[Finding]:
    """Findings for rows the loader refused."""
    return [Finding("error", "rejected", err.rule_id, str(err), column=err.column) for err in rejected]


def _warning_finding(warning: RuleWarning) -> Finding:
    # The loader warns about two things: a NULL read as a default (the value
    # it saw is None) and host bits under a prefix (the value is the address).
    kind = "null" if warning.value is None else "host-bits"
    return Finding("warning", kind, warning.rule_id, str(warning), column=warning.column)


def _clamp_findings(rule: Rule) -> list[Finding]:
    """A warning for each keepalive timer of the rule that the kernel's range will clamp."""
    return [
        Finding(
            "warning",
            "kernel-clamp",
            rule.id,
            str(
                RuleWarning(
                    rule.id,
                    timer.attribute,
                    timer.wanted,
                    f"outside the kernel's {timer.low}..{timer.high}; tcpmgm.apply sets {timer.value}",
                )
            ),
            column=timer.attribute,
        )
        for timer in keepalive_timers(rule.profile)
        if timer.clamped
    ]


def _ancestors(key: _NetKey, lengths: dict[int, set[int]]) -> list[_NetKey]:
    """``key`` itself, every enclosing network at a length in ``lengths``, and any (None)."""
    if key is None:
        return [None]
    version, value, length = key
    bits = 32 if version == 4 else 128
    out: list[_NetKey] = [None]
    for parent in lengths[version]:
        if parent <= length:
            mask = ((1 << parent) - 1) << (bits - parent)
            out.append((version, value & mask, parent))
    return out


def _options(value: Any, wildcard: Any) -> tuple[Any, ...]:
    return (wildcard,) if value == wildcard else (value, wildcard)


def _filters(rule: Rule) -> tuple[Any, ...]:
    return (rule.proto, rule.remote_prefix, rule.remote_port, rule.local_prefix, rule.local_port)


def _covers_except_remote(s: Rule, r: Rule) -> bool:
    """Whether S's filters other than the remote address contain R's: S matches
    R's filters taken as a connection (a network: every address in it; "any":
    unknown, which only "any" matches), with S's own remote network.  R's
    protocol "any" is every protocol, which only "any" covers, where a lookup for
    any protocol would match every rule."""
    r_filters = Filters.of(r)
    return (r.proto is not None or s.proto is None) and matches(
        Filters.of(s),
        r_filters.proto,
        s.remote_prefix,
        r_filters.remote_port,
        r_filters.local,
        r_filters.local_port,
    )


class _RemoteSpans:
    """The rules with a remote network of one family, ordered by first address."""

    def __init__(self, rules: Sequence[tuple[int, Rule]], version: int) -> None:
        bits = 32 if version == 4 else 128
        spans = []
        for rank, r in rules:
            if r.remote is not None and r.remote.version == version:
                start = int(r.remote.network_address)
                spans.append((start, start | ((1 << (bits - r.remote.prefixlen)) - 1), rank, r))
        spans.sort(key=lambda span: span[0])
        self.starts = [s[0] for s in spans]
        self.ends = [s[1] for s in spans]
        self.ranks = [s[2] for s in spans]
        self.rules = [s[3] for s in spans]

    def union_cover(self, rule: Rule, rank: int, low: int, high: int) -> list[Rule] | None:
        """Better-ranked rules whose remote networks cover ``low..high`` (``rule.remote``), or ``None``."""
        i = bisect.bisect_left(self.starts, low)
        stop = bisect.bisect_right(self.starts, high)
        covered = low - 1
        used: list[Rule] = []
        while covered < high:
            # Among the networks that start at or before the first uncovered
            # address, the usable one reaching furthest extends the cover.
            j = bisect.bisect_right(self.starts, covered + 1, i, stop)
            best: int | None = None
            for k in range(i, j):
                if (
                    self.ranks[k] < rank
                    and self.ends[k] > covered
                    and (best is None or self.ends[k] > self.ends[best])
                    and _covers_except_remote(self.rules[k], rule)
                ):
                    best = k
            if best is None:
                return None
            used.append(self.rules[best])
            covered = self.ends[best]
            i = j
        return used


def lint(
    rules: Iterable[Rule],
    *,
    progress: Callable[[int], None] | None = None,
    warnings: Iterable[RuleWarning] | None = None,
) -> list[Finding]:
    """Findings for valid rules (shadowed, duplicates, warnings), in key order of the rule.

    ``warnings`` are the loader's warnings about these rules (a load's
    :attr:`~tcpmgm.sql.loader.LoadResult.warnings`, which include the NULLs it
    read as defaults); without it, the rules' own warnings (host bits).
    ``progress(n)`` is called with the number of rules done since the last call.
    """
    ordered = sorted(rules, key=Rule.key)
    warned: dict[int, list[RuleWarning]] = {}
    for warning in warnings if warnings is not None else (w for r in ordered for w in r.warnings):
        warned.setdefault(warning.rule_id, []).append(warning)
    ranked = list(enumerate(ordered))
    spans = {4: _RemoteSpans(ranked, 4), 6: _RemoteSpans(ranked, 6)}
    best: dict[tuple[Any, ...], tuple[int, Rule]] = {}  # filters -> (rank, rule) of the first with them
    remote_lengths: dict[int, set[int]] = {4: set(), 6: set()}
    local_lengths: dict[int, set[int]] = {4: set(), 6: set()}
    findings: list[Finding] = []

    for rank, rule in ranked:
        if progress is not None and rank % PROGRESS_STEP == PROGRESS_STEP - 1:
            progress(PROGRESS_STEP)
        findings.extend(_warning_finding(w) for w in warned.pop(rule.id, ()))
        findings.extend(_clamp_findings(rule))
        filters = _filters(rule)
        _proto, remote, _rport, local, _lport = filters
        same = best.get(filters, (None, None))[1]
        if same is not None and same.priority == rule.priority:
            findings.append(
                Finding(
                    "error",
                    "duplicate",
                    rule.id,
                    f"rule {rule.id} has the same filters and priority as rule {same.id} and never wins",
                    (same.id,),
                )
            )
            continue
        shadowed = _shadowed(rule, rank, filters, best, remote_lengths, local_lengths, spans)
        if shadowed is not None:
            findings.append(shadowed)
        if same is None:
            best[filters] = (rank, rule)
            if remote is not None:
                remote_lengths[remote[0]].add(remote[2])
            if local is not None:
                local_lengths[local[0]].add(local[2])
    # Warnings about no rule given (a caller's list) are still shown, never dropped.
    findings.extend(_warning_finding(w) for ws in warned.values() for w in ws)
    if progress is not None and len(ordered) % PROGRESS_STEP:
        progress(len(ordered) % PROGRESS_STEP)
    return findings


def _shadowed(
    rule: Rule,
    rank: int,
    filters: tuple[Any, ...],
    best: dict[tuple[Any, ...], tuple[int, Rule]],
    remote_lengths: dict[int, set[int]],
    local_lengths: dict[int, set[int]],
    spans: dict[int, _RemoteSpans],
) -> Finding | None:
    """The "shadowed" finding for ``rule``: one earlier rule covers it, or several remotes together do."""
    cover = _single_cover(filters, best, remote_lengths, local_lengths)
    if cover is not None:
        return Finding(
            "error",
            "shadowed",
            rule.id,
            f"rule {rule.id} never wins: rule {cover.id} matches every connection it matches "
            f"and ranks first (rule {rule.id} has {key_difference(rule, cover)})",
            (cover.id,),
        )
    remote = filters[1]
    if remote is None:
        return None
    version, low, length = remote
    high = low | ((1 << ((32 if version == 4 else 128) - length)) - 1)
    union = spans[version].union_cover(rule, rank, low, high)
    if union is None:
        return None
    ids = ", ".join(str(s.id) for s in union)
    return Finding(
        "error",
        "shadowed",
        rule.id,
        f"rule {rule.id} never wins: rules {ids} together match every connection it matches and each ranks first",
        tuple(s.id for s in union),
    )


def _single_cover(
    filters: tuple[Any, ...],
    best: dict[tuple[Any, ...], tuple[int, Rule]],
    remote_lengths: dict[int, set[int]],
    local_lengths: dict[int, set[int]],
) -> Rule | None:
    """The best-keyed rule already indexed whose match set contains the one of ``filters``."""
    proto, remote, rport, local, lport = filters
    found: tuple[int, Rule] | None = None
    rest = list(
        itertools.product(
            _options(proto, None),
            _options(rport, 0),
            _ancestors(local, local_lengths),
            _options(lport, 0),
        )
    )
    for r in _ancestors(remote, remote_lengths):
        for p, rp, lo, lp in rest:
            candidate = best.get((p, r, rp, lo, lp))
            if candidate is not None and (found is None or candidate[0] < found[0]):
                found = candidate
    return found[1] if found is not None else None
