"""The lint of ``tcpmgm check``: hand cases for each finding, and a brute-force oracle."""

import ipaddress
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tcpmgm
from tcpmgm.model.errors import RuleError, RuleWarning
from tcpmgm.service import sockets
from tcpmgm.sql.nulls import null_warnings
from tcpmgm.tools.lint import Finding, lint, rejected_findings


def rule(id, **row):
    return tcpmgm.Rule.from_row({"id": id, "proto": row.pop("proto", "tcp"), **row})


def by_rule(findings, kind):
    return {f.rule_id: f for f in findings if f.kind == kind}


def test_single_cover_names_the_shadowing_rule_and_why():
    rules = [
        rule(1, remote_addr="10.0.0.0/16", priority=-1),
        rule(2, remote_addr="10.0.1.0/24"),
    ]
    shadowed = by_rule(lint(rules), "shadowed")
    assert set(shadowed) == {2}
    assert shadowed[2].by == (1,)
    assert shadowed[2].severity == "error"
    assert "higher priority" in shadowed[2].message


def test_longer_prefix_is_not_shadowed_at_equal_priority():
    rules = [rule(1, remote_addr="10.0.0.0/16"), rule(2, remote_addr="10.0.1.0/24")]
    assert lint(rules) == []


def test_wildcards_cover_specific_values_but_not_the_reverse():
    rules = [
        rule(1, proto="any", priority=-1, remote_port=0),
        rule(2, proto="tls", remote_addr="192.0.2.0/24", remote_port=5061, local_addr="10.0.0.1", local_port=5061),
        # any remote (which also matches an unknown remote address) is only covered by any
        rule(3, proto="tcp", priority=-2, remote_addr="0.0.0.0/0"),
        rule(4, proto="tcp", priority=-2, remote_addr="::/0"),
        rule(5, proto="tcp"),
        rule(6, proto="tls", priority=-3, remote_port=5060),
        rule(7, proto="tls", remote_port=5061),
    ]
    shadowed = by_rule(lint(rules), "shadowed")
    assert shadowed[2].by == (1,)
    assert shadowed[7].by == (1,)  # rule 6's port 5060 does not cover 5061
    assert 5 in shadowed and shadowed[5].by == (1,)  # covered by proto any, not by 3+4
    assert set(shadowed) == {2, 5, 7}


def test_two_halves_cover_a_prefix_together():
    rules = [
        rule(1, remote_addr="10.0.0.0/25", remote_port=0),
        rule(2, remote_addr="10.0.0.128/25"),
        rule(3, remote_addr="10.0.0.0/24", remote_port=5060),
        rule(4, remote_addr="10.0.1.0/25"),
        rule(5, remote_addr="10.0.1.0/24"),  # upper half uncovered
    ]
    shadowed = by_rule(lint(rules), "shadowed")
    assert set(shadowed) == {3}
    assert shadowed[3].by == (1, 2)


def test_union_pieces_must_cover_the_other_fields():
    rules = [
        rule(1, remote_addr="10.0.0.0/25"),
        rule(2, remote_addr="10.0.0.128/25", local_port=5060),  # narrower than rule 3
        rule(3, remote_addr="10.0.0.0/24"),
    ]
    assert by_rule(lint(rules), "shadowed") == {}


def test_duplicates_and_host_bits():
    rules = [
        rule(1, remote_addr="10.0.0.0/24", connect_timeout=5),
        rule(2, remote_addr="10.0.0.0/24", connect_timeout=9),
        rule(3, remote_addr="10.1.2.3/16", priority=4),
    ]
    findings = lint(rules)
    dup = by_rule(findings, "duplicate")
    assert set(dup) == {2} and dup[2].by == (1,)
    warn = by_rule(findings, "host-bits")
    assert set(warn) == {3} and warn[3].severity == "warning"
    assert by_rule(findings, "shadowed") == {}


def test_rejected_rows_become_errors():
    err = RuleError(7, "proto", "udp", "'udp' is not a TCP-based protocol")
    (finding,) = rejected_findings([err])
    assert finding == Finding("error", "rejected", 7, str(err), column="proto")
    assert finding.to_dict()["column"] == "proto"
    assert finding.to_dict()["by"] == []


def test_every_loader_warning_is_a_finding_with_its_column():
    """Issue 10, item 13: the loader's NULL-read-as-default warnings were counted, never shown."""
    rules = [rule(1, remote_addr="10.1.2.3/8", priority=-1), rule(2, remote_addr="192.0.2.0/24")]
    nulls = null_warnings(rules[1], ["keepidle", "con_lifetime"])
    loaded = list(rules[0].warnings) + nulls
    findings = lint(rules, warnings=loaded)
    assert [(f.severity, f.kind, f.rule_id, f.column) for f in findings] == [
        ("warning", "host-bits", 1, "remote_addr"),
        ("warning", "null", 2, "keepidle"),
        ("warning", "null", 2, "con_lifetime"),
    ]
    assert [f.message for f in findings] == [str(w) for w in loaded]
    assert "read as the default 7200" in findings[1].message
    assert findings[1].to_dict()["column"] == "keepidle"
    # A warning about a rule not in the list is still shown, not dropped.
    stray = RuleWarning(99, "keepcount", None, "NULL in a NOT NULL column, read as the default 9")
    assert [f.rule_id for f in lint(rules, warnings=[*loaded, stray])] == [1, 2, 2, 99]


def test_keepalive_timers_the_kernel_clamps_are_warnings():
    """Issue 10, item 17: values tcpmgm.apply will clamp, from the limits apply uses."""
    limits = {attr: (low, high) for attr, _, low, high in sockets.KEEPALIVE_LIMITS}
    rules = [
        rule(1, keepcount=100000, keepidle=limits["keepidle"][1] + 1),
        rule(
            2, keepcount=limits["keepcount"][1], keepidle=limits["keepidle"][1], keepinterval=limits["keepinterval"][1]
        ),  # at the limit: set as it is
        rule(3, keepidle=0, keepinterval=0, keepcount=0),  # 0: the OS value, nothing clamped
        rule(4, keepalive=0, keepcount=100000),  # keepalive off: no timer is set
        rule(5, remote_addr="10.0.0.0/8", keepinterval=10**9),
    ]
    clamps = [f for f in lint(rules) if f.kind == "kernel-clamp"]
    assert {f.severity for f in clamps} == {"warning"}
    assert sorted((f.rule_id, f.column) for f in clamps) == [(1, "keepcount"), (1, "keepidle"), (5, "keepinterval")]
    by_column = {(f.rule_id, f.column): f.message for f in clamps}
    assert by_column[(1, "keepcount")] == (
        f"rule 1: column 'keepcount', value 100000: outside the kernel's 1..{limits['keepcount'][1]}; "
        f"tcpmgm.apply sets {limits['keepcount'][1]}"
    )
    assert str(limits["keepinterval"][1]) in by_column[(5, "keepinterval")]


def test_progress_reports_every_rule_once():
    rules = [rule(i, remote_addr=f"10.{i // 256}.{i % 256}.0/24") for i in range(1, 9000)]
    seen = []
    lint(rules, progress=seen.append)
    assert sum(seen) == len(rules)


# -- brute force on a tiny address space ------------------------------------

PROTOS = [None, "tcp", "tls"]
REMOTES = [
    None,
    "10.0.0.0/29",
    "10.0.0.0/30",
    "10.0.0.4/30",
    "10.0.0.0/31",
    "10.0.0.2/31",
    "10.0.0.4/31",
    "10.0.0.6/31",
    "10.0.0.1",
    "10.0.0.6",
    "2001:db8::/127",
    "2001:db8::1",
]
LOCALS = [None, "127.0.0.0/31", "127.0.0.1"]

# Every value a rule mentions, plus one that none does, for each field
# (addresses as ipaddress objects: the oracle runs thousands of lookups per example).
UNIVERSE = list(
    itertools.product(
        [None, "tcp", "tls", "ws"],
        [None]
        + [
            ipaddress.ip_address(a)
            for a in [f"10.0.0.{i}" for i in range(9)] + ["2001:db8::", "2001:db8::1", "2001:db8::2"]
        ],
        [0, 1, 2, 3],
        [None] + [ipaddress.ip_address(a) for a in ("127.0.0.0", "127.0.0.1", "127.0.0.2")],
        [0, 1, 2],
    )
)


@st.composite
def rule_sets(draw, same_local=False):
    n = draw(st.integers(1, 8))
    ids = draw(st.lists(st.integers(1, 50), min_size=n, max_size=n, unique=True))
    shared_local = draw(st.sampled_from(LOCALS))
    rules = []
    for rid in ids:
        remote = draw(st.sampled_from(REMOTES))
        local = shared_local if same_local else draw(st.sampled_from(LOCALS))
        if remote is not None and ":" in remote:
            local = None
        rules.append(
            tcpmgm.Rule.from_row(
                {
                    "id": rid,
                    "proto": draw(st.sampled_from(PROTOS)) or "any",
                    "remote_addr": remote,
                    "remote_port": draw(st.sampled_from([0, 1, 2])),
                    "local_addr": local,
                    "local_port": draw(st.sampled_from([0, 1])),
                    "priority": draw(st.integers(0, 2)),
                }
            )
        )
    return rules


def never_winning(rules):
    matcher = tcpmgm.ReferenceMatcher(rules)
    winners = {matcher.lookup(*conn).id for conn in UNIVERSE}
    return {r.id for r in rules} - winners


def flagged(rules):
    return {f.rule_id for f in lint(rules) if f.kind in ("shadowed", "duplicate")}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_sets())
def test_every_flagged_rule_really_never_wins(rules):
    assert flagged(rules) <= never_winning(rules)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_sets(same_local=True))
def test_complete_when_covers_need_no_union_along_the_local_address(rules):
    # With one local filter for all rules, every cover is a single rule or a
    # union along the remote address: the two cases the lint finds.
    assert flagged(rules) == never_winning(rules)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(REMOTES[1:10]), st.integers(0, 1)), min_size=2, max_size=12))
def test_complete_for_rules_that_differ_only_in_remote_and_priority(rows):
    # Dense in one dimension, so that covers by a union of prefixes are common.
    rules = [rule(i, remote_addr=remote, priority=prio) for i, (remote, prio) in enumerate(rows, 1)]
    assert flagged(rules) == never_winning(rules)
