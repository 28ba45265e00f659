"""Per-rule hit counts: on both matchers, across reloads, under threads, through tcp_stats and `tcpmgm list --hits`."""

import array
import collections
import ipaddress
import json
import os
import subprocess
import sys
import threading

import pytest
from mi_endpoints import KINDS, start

import tcpmgm
from tcpmgm.model.protocols import protocol_code
from tcpmgm.service import mi
from tcpmgm_bench.workloads import WORKLOADS, batch


def expected_hits(rules, winners):
    """What hits() must say after lookups won by ``winners``: every rule, zeros included, 0 for the default."""
    counted = collections.Counter(winners)
    return {rule_id: counted[rule_id] for rule_id in [0, *(rule.id for rule in rules)]}


@pytest.fixture(scope="module")
def workload():
    # Small enough for the reference's linear scan; both families, ports, locals and the default.
    return WORKLOADS["carrier"](120, 600, seed=14)


def test_a_new_matcher_counts_nothing_yet(matcher_cls, workload):
    matcher = matcher_cls(workload.rules)
    assert matcher.count_hits is True
    assert matcher.hits() == expected_hits(workload.rules, [])


def test_single_lookups_count_their_winners(matcher_cls, workload):
    matcher = matcher_cls(workload.rules)
    winners = [matcher.lookup(*query).id for query in workload.lookups]
    assert 0 in winners and len(set(winners)) > 10  # the default and many rules won some
    assert matcher.hits() == expected_hits(workload.rules, winners)


def test_batches_count_their_winners_and_add_to_single_lookups(matcher_cls, workload):
    matcher = matcher_cls(workload.rules)
    winners = []
    for version in (4, 6):
        winners += matcher.lookup_many(*batch(workload.lookups, version))
    assert len(winners) == len(workload.lookups)
    assert matcher.hits() == expected_hits(workload.rules, winners)
    winners += [matcher.lookup(*query).id for query in workload.lookups[:100]]
    winners += matcher.lookup_many("tcp", array.array("I", [0x0A000001, 0xC0000201]))
    assert matcher.hits() == expected_hits(workload.rules, winners)


def test_batches_with_ids_beyond_32_bits_count_too(matcher_cls):
    rules = [tcpmgm.Rule(id=2**40, remote=ipaddress.ip_network("10.0.0.0/8")), tcpmgm.Rule(id=3, proto="tls")]
    matcher = matcher_cls(rules)
    winners = matcher.lookup_many(
        array.array("B", [protocol_code("tcp"), protocol_code("tls"), protocol_code("tcp")]),
        array.array("I", [0x0A000001, 0xC0000201, 0xC0000201]),
    )
    assert winners.typecode == "Q" and list(winners) == [2**40, 3, 0]
    assert matcher.hits() == {0: 1, 3: 1, 2**40: 1}


def test_a_refused_batch_and_explain_count_nothing(matcher_cls, workload):
    matcher = matcher_cls(workload.rules)
    four = batch(workload.lookups, 4)
    ports = array.array("i", four.remote_ports)
    ports[len(ports) // 2] = -1  # rows before it are classified, and still the call answers nothing
    with pytest.raises(ValueError, match="remote_ports"):
        matcher.lookup_many(four.protos, four.remote_ips, ports, four.local_ips, four.local_ports)
    for query in workload.lookups[:50]:
        matcher.explain(*query)
    assert matcher.hits() == expected_hits(workload.rules, [])


def test_switched_off_nothing_is_counted_and_hits_is_empty(matcher_cls, workload):
    matcher = matcher_cls(workload.rules, count_hits=False)
    counting = matcher_cls(workload.rules)
    singles = [matcher.lookup(*query).id for query in workload.lookups]
    many = list(matcher.lookup_many(*batch(workload.lookups, 4)))
    # The answers are the counting matcher's; only the counts are missing.
    assert singles == [counting.lookup(*query).id for query in workload.lookups]
    assert many == list(counting.lookup_many(*batch(workload.lookups, 4)))
    assert matcher.count_hits is False
    assert matcher.hits() == {}


def test_a_slice_of_hits_is_those_rules_in_iteration_order_after_the_default(matcher_cls, workload):
    matcher = matcher_cls(workload.rules)
    for query in workload.lookups:
        matcher.lookup(*query)
    every = matcher.hits()
    ids = [rule.id for rule in matcher]
    assert list(every) == [0, *ids]  # the default first, then the rules in the order they are tried
    for first, last in ((0, 10), (37, 41), (115, None), (200, 300), (5, 2), (-3, None), (0, 0)):
        assert list(matcher.hits(first, last).items()) == [(0, every[0])] + [(i, every[i]) for i in ids[first:last]]
    with pytest.raises(TypeError):
        matcher.hits("1")
    assert matcher_cls(workload.rules, count_hits=False).hits(0, 5) == {}


def test_top_hits_are_the_rules_that_won_most_ties_to_the_lower_id(matcher_cls, workload):
    matcher = matcher_cls(workload.rules)
    assert matcher.top_hits(5) == []  # nothing won yet
    for query in workload.lookups:
        matcher.lookup(*query)
    won = [(rule_id, n) for rule_id, n in matcher.hits().items() if rule_id and n]
    ranked = sorted(won, key=lambda entry: (-entry[1], entry[0]))
    assert len(ranked) > 10 and len({n for _, n in ranked}) < len(ranked)  # ties to break
    for n in (0, 1, 3, 10, len(ranked), len(ranked) + 5, 10**9):
        assert matcher.top_hits(n) == ranked[:n], n
    for bad, error in ((-1, ValueError), (True, TypeError), (2.0, TypeError)):
        with pytest.raises(error, match="n"):
            matcher.top_hits(bad)
    assert matcher_cls(workload.rules, count_hits=False).top_hits(5) == []


def test_top_hits_agree_between_the_twins_on_many_rules():
    compiled = pytest.importorskip("tcpmgm.matching._matcher", reason="compiled classifier not built").Matcher
    work = WORKLOADS["carrier"](3000, 20000, seed=5)
    fast, reference = compiled(work.rules), tcpmgm.ReferenceMatcher(work.rules)
    for columns in (batch(work.lookups, 4), batch(work.lookups, 6)):
        fast.lookup_many(*columns)
        reference.lookup_many(*columns)
    for n in (1, 7, 50, 3000):
        assert fast.top_hits(n) == reference.top_hits(n)


def test_lookups_count_with_or_without_hit_counts(matcher_cls, workload):
    for count_hits in (True, False):
        matcher = matcher_cls(workload.rules, count_hits=count_hits)
        for query in workload.lookups[:30]:
            matcher.lookup(*query)
        matcher.lookup_many(*batch(workload.lookups, 4))
        with pytest.raises(ValueError):
            matcher.lookup_many("tcp", array.array("I", [1]), array.array("i", [-1]))  # refused: not counted
        matcher.explain(*workload.lookups[0])  # explain does not count
        expected = 30 + len(batch(workload.lookups, 4).remote_ips)
        assert matcher.lookups == expected, count_hits
        if count_hits:
            assert sum(matcher.hits().values()) == expected


def test_the_counts_take_c_memory_only_when_counting(workload):
    compiled = pytest.importorskip("tcpmgm.matching._matcher", reason="compiled classifier not built").Matcher
    counting, silent = compiled(workload.rules), compiled(workload.rules, count_hits=False)
    assert counting.nbytes - silent.nbytes == 8 * (len(workload.rules) + 1)


def test_threads_lose_no_count(matcher_cls):
    """Singles and batches from several threads at once: every lookup counted once, per rule exactly."""
    work = WORKLOADS["carrier"](60, 300, seed=3)
    matcher = matcher_cls(work.rules)
    batches = [batch(work.lookups, version) for version in (4, 6)]
    rounds = 40 if matcher_cls is not tcpmgm.ReferenceMatcher else 3
    alone = matcher_cls(work.rules)
    one_round = [alone.lookup(*query).id for query in work.lookups]
    for columns in batches:
        one_round += alone.lookup_many(*columns)
    failures = []

    def worker(index):
        try:
            for _ in range(rounds):
                if index % 2:  # half the threads start with singles, half with batches
                    for query in work.lookups:
                        matcher.lookup(*query)
                for columns in batches:
                    matcher.lookup_many(*columns)
                if not index % 2:
                    for query in work.lookups:
                        matcher.lookup(*query)
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == []
    hits = matcher.hits()
    assert sum(hits.values()) == matcher.lookups == len(threads) * rounds * len(one_round)
    assert hits == {rule_id: len(threads) * rounds * count for rule_id, count in alone.hits().items()}


# -- the manager: counts of the matcher in service -------------------------------


@pytest.fixture
def mgr(tmp_path):
    manager = tcpmgm.TcpMgm(f"sqlite:///{tmp_path / 'rules.db'}")
    manager.create_schema()
    manager.add_rule({"id": 1, "proto": "tcp", "remote_addr": "10.0.0.0/8"})
    manager.add_rule({"id": 2, "proto": "any", "remote_addr": "10.1.0.0/16", "remote_port": 5060})
    manager.add_rule({"id": 3, "proto": "tls", "remote_addr": "2001:db8::/32"})
    manager.reload()
    return manager


def look_up(manager):
    """Lookups won by rule 1 three times, rule 2 twice, the default once, rule 3 never."""
    for remote, port in (("10.9.9.9", 1), ("10.1.0.1", 5060), ("10.0.0.7", 5061)):
        manager.lookup("tcp", remote, port)  # rule 1: tcp outranks rule 2's longer prefix
    for remote in ("10.1.0.1", "10.1.2.3"):
        manager.lookup("ws", remote, 5060)
    manager.lookup("tcp", "192.0.2.1")


def test_the_manager_answers_the_counts_of_the_rules_in_service_and_reload_restarts_them(mgr):
    before = mgr.service
    assert mgr.service.matcher is mgr.matcher
    look_up(mgr)
    assert mgr.hits() == {0: 1, 1: 3, 2: 2, 3: 0}
    mgr.add_rule({"id": 4, "proto": "ws"})
    mgr.reload()
    assert mgr.service.matcher is mgr.matcher is not before.matcher
    assert mgr.service.since >= before.since
    assert mgr.hits() == {0: 0, 1: 0, 2: 0, 3: 0, 4: 0}
    mgr.lookup("ws", "192.0.2.1")
    assert mgr.hits() == {0: 0, 1: 0, 2: 0, 3: 0, 4: 1}


def test_the_manager_answers_a_slice_and_the_top_rules_of_the_rules_in_service(mgr):
    look_up(mgr)
    order = [rule.id for rule in mgr.matcher]
    assert mgr.hits(1, 2) == {0: 1, order[1]: {1: 3, 2: 2, 3: 0}[order[1]]}
    assert mgr.top_hits(5) == [(1, 3), (2, 2)]  # rule 3 won nothing
    assert mgr.top_hits(1) == [(1, 3)]
    mgr.reload()
    assert mgr.top_hits(5) == [] and mgr.hits(0, 0) == {0: 0}


def test_a_failed_reload_keeps_the_counts(mgr, tmp_path):
    look_up(mgr)
    broken = tcpmgm.TcpMgm(f"sqlite:///{tmp_path / 'missing.db'}")
    broken.lookup("tcp", "10.0.0.1")
    with pytest.raises(tcpmgm.ReloadError):
        broken.reload()
    assert broken.hits() == {0: 1}  # the empty matcher it started with, still counting
    mgr.source.close()
    (tmp_path / "rules.db").unlink()
    with pytest.raises(tcpmgm.ReloadError):
        mgr.reload()
    assert mgr.hits() == {0: 1, 1: 3, 2: 2, 3: 0}


def test_a_manager_told_not_to_count_builds_matchers_that_do_not(tmp_path):
    manager = tcpmgm.TcpMgm(f"sqlite:///{tmp_path / 'rules.db'}", count_hits=False)
    manager.create_schema()
    manager.add_rule({"id": 1, "proto": "tcp"})
    manager.reload()
    assert manager.lookup("tcp", "10.0.0.1").id == 1
    assert manager.matcher.count_hits is False and manager.hits() == {}


# -- tcp_stats on a real admin endpoint ------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_tcp_stats_answers_the_counts_in_the_order_of_tcp_list(kind, mgr):
    look_up(mgr)
    server, url = start(kind, mgr)
    try:
        stats = mi.call(url, "tcp_stats")
        listed = mi.call(url, "tcp_list")
    finally:
        server.stop()
    assert stats == {
        "counting": True,
        "since": mgr.service.since,
        "default": 1,
        "hits": [{"id": row["id"], "hits": {1: 3, 2: 2, 3: 0}[row["id"]]} for row in listed["rules"]],
        "total": 3,
        "offset": 0,
        "next_offset": None,
    }


def test_tcp_stats_pages_and_stats_all_joins_them(mgr):
    look_up(mgr)
    with mi.MIServer(mgr, "127.0.0.1", 0, limits=mi.Limits(stats_limit=2)) as server:
        first = mi.call(server.url, "tcp_stats")
        second = mi.call(server.url, "tcp_stats", {"offset": first["next_offset"], "limit": "1"})  # digits: OpenSIPS's
        described = mi.call(server.url, "help", {"mi_cmd": "tcp_stats"})["Help"]
        whole = mi.stats_all(server.url)
        with pytest.raises(mi.MIError, match="limit must be an integer from 1 to 2"):
            mi.call(server.url, "tcp_stats", {"limit": 3})
    assert (len(first["hits"]), first["next_offset"], len(second["hits"]), second["next_offset"]) == (2, 2, 1, None)
    assert described.startswith("answers how many lookups each rule in service won")
    assert whole["hits"] == first["hits"] + second["hits"]
    assert {e["id"]: e["hits"] for e in whole["hits"]} == {1: 3, 2: 2, 3: 0}
    assert (whole["default"], whole["total"], whole["next_offset"]) == (1, 3, None)


class ReloadingWhilePaging:
    """The manager for the endpoint, reloading just before the pages named in ``reload_at`` are read."""

    def __init__(self, manager, reload_at):
        self.manager = manager
        self.reload_at = reload_at
        self.pages = 0

    @property
    def service(self):
        self.pages += 1
        if self.pages in self.reload_at:
            self.manager.reload()
            self.manager.lookup("tcp", "10.9.9.9")
        return self.manager.service


def test_stats_all_starts_over_when_a_reload_comes_between_pages(mgr):
    look_up(mgr)
    paged = mi.Limits(stats_limit=1)
    with mi.MIServer(ReloadingWhilePaging(mgr, {2}), "127.0.0.1", 0, limits=paged) as server:
        whole = mi.stats_all(server.url)
    # Every entry from the matcher reloaded at page 2, none from the one before.
    assert whole["since"] == mgr.service.since
    assert {e["id"]: e["hits"] for e in whole["hits"]} == {1: 1, 2: 0, 3: 0}
    always = ReloadingWhilePaging(mgr, set(range(2, 100, 2)))
    with mi.MIServer(always, "127.0.0.1", 0, limits=paged) as server, pytest.raises(mi.MIError, match="each of 3"):
        mi.stats_all(server.url)


def test_tcp_stats_of_a_service_that_does_not_count(tmp_path):
    manager = tcpmgm.TcpMgm(f"sqlite:///{tmp_path / 'rules.db'}", count_hits=False)
    manager.create_schema()
    manager.add_rule({"id": 1, "proto": "tcp"})
    manager.reload()
    manager.lookup("tcp", "10.0.0.1")
    with mi.MIServer(manager, "127.0.0.1", 0) as server:
        stats = mi.call(server.url, "tcp_stats")
    assert (stats["counting"], stats["default"], stats["hits"]) == (False, None, [{"id": 1, "hits": None}])


# -- `tcpmgm list --hits` against a real endpoint ------------------------------------------


def cli(*args, cwd):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TCPMGM_")}
    return subprocess.run(
        [sys.executable, "-m", "tcpmgm", *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=120
    )


def test_list_hits_shows_each_rows_count_from_the_endpoint(mgr, tmp_path):
    look_up(mgr)
    mgr.add_rule({"id": 5, "proto": "ws"})  # in the table, not in service: no count
    options = ["--db", f"sqlite:///{tmp_path / 'rules.db'}", "--hits"]
    with mi.MIServer(mgr, "127.0.0.1", 0, token="t0k") as server:
        endpoint = ["--url", server.url, "--token", "t0k"]
        text = cli("list", *options, *endpoint, cwd=tmp_path)
        as_json = cli("list", *options, "--json", *endpoint, cwd=tmp_path)
        refused = cli("list", *options, "--url", server.url, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split()[0] == "id" and lines[0].split()[-1] == "hits"
    assert {line.split()[0]: line.split()[-1] for line in lines[2:6]} == {"1": "3", "2": "2", "3": "0", "5": "-"}
    assert set(lines[1]) <= {"-", " "}  # the rule under the header
    assert lines[6] == "default profile: 1 lookup(s)"
    assert lines[7].startswith("counted since ") and lines[7].endswith(" UTC, the service's last reload")
    assert as_json.returncode == 0, as_json.stderr
    answer = json.loads(as_json.stdout)
    assert {row["id"]: row["hits"] for row in answer["rows"]} == {1: 3, 2: 2, 3: 0, 5: None}
    assert (answer["default"], answer["not_in_table"]) == (1, [])
    assert refused.returncode == 1 and "unauthorized" in refused.stderr


def test_list_hits_names_rules_in_service_no_longer_in_the_table(mgr, tmp_path):
    look_up(mgr)
    with mgr.source.connection() as conn:
        conn.execute("DELETE FROM tcp_mgm WHERE id = 1")
        conn.commit()
    with mi.MIServer(mgr, "127.0.0.1", 0) as server:
        text = cli("list", "--db", f"sqlite:///{tmp_path / 'rules.db'}", "--hits", "--url", server.url, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[-1] == "in service but no longer in the table: 1 (3)"


def test_list_hits_from_a_service_that_does_not_count_is_an_error(tmp_path):
    manager = tcpmgm.TcpMgm(f"sqlite:///{tmp_path / 'rules.db'}", count_hits=False)
    manager.create_schema()
    manager.reload()
    with mi.MIServer(manager, "127.0.0.1", 0) as server:
        url = server.url
        result = cli("list", "--db", f"sqlite:///{tmp_path / 'rules.db'}", "--hits", "--url", url, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"tcpmgm: error: the service at {url} does not count hits (its matchers are built with count_hits=False)"
    )
