"""The Prometheus metrics at /metrics of the admin endpoint, scraped over both transports on 127.0.0.1.

Every test reads the text as Prometheus would, with prometheus_client's own
parser, so a sample that is malformed, misnamed or mistyped fails here.
"""

import array
import asyncio
import http.client
import json
import logging
import socket
import sqlite3
import sys
import types
import urllib.parse

import pytest
from mi_endpoints import KINDS, start
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tables import insert

import tcpmgm
from tcpmgm.service import aio, events, metrics, mi
from tcpmgm.service.events import Event

TOKEN = "s3cret"


@pytest.fixture
def mgr(tmp_path):
    manager = tcpmgm.TcpMgm(f"sqlite:///{tmp_path / 'rules.db'}")
    manager.create_schema()
    manager.add_rule({"id": 1, "proto": "tcp", "remote_addr": "10.0.0.0/8"})
    manager.add_rule({"id": 2, "proto": "any", "remote_addr": "10.1.0.0/16", "remote_port": 5060})
    manager.add_rule({"id": 3, "proto": "tls", "remote_addr": "2001:db8::/32"})
    manager.reload()
    return manager


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def endpoint(kind, mgr):
    """A function starting the endpoint of the transport under test; the URL of its /mi; stopped afterwards."""
    started = []

    def start_with(limits=None, token=None, manager=None):
        server, where = start(kind, manager or mgr, token, limits)
        started.append(server)
        return where

    yield start_with
    for server in started:
        server.stop()


def request(url, *, method="GET", path=mi.METRICS_PATH, headers=None, body=None):
    """(status, headers with lower-case names, body text) of one request to ``path`` at ``url``'s host."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read().decode()
    finally:
        conn.close()


def scrape(url, token=None):
    """Every sample of a scrape, as {(sample name, ((label, value), ...)): value}, and the families' types."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, head, text = request(url, headers=headers)
    assert status == 200, text
    assert head["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples, types = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, f"{key} twice"
            samples[key] = sample.value
    return samples, types


def value(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


def rule_hits(samples):
    """The samples of tcpmgm_rule_hits_total, by their rule label."""
    return {dict(labels)["rule"]: n for (name, labels), n in samples.items() if name == "tcpmgm_rule_hits_total"}


def test_a_reload_and_a_failed_reload_are_counted_with_the_last_reports_rows(endpoint, mgr):
    url = endpoint()
    samples, types = scrape(url)
    assert value(samples, "tcpmgm_reloads_total") == 1 and value(samples, "tcpmgm_reload_failures_total") == 0
    assert types["tcpmgm_reloads"] == types["tcpmgm_reload_failures"] == "counter"
    assert value(samples, "tcpmgm_rules_in_service") == 3
    assert value(samples, "tcpmgm_last_reload_rows_loaded") == 3
    assert value(samples, "tcpmgm_last_reload_rows_rejected") == 0
    assert value(samples, "tcpmgm_last_reload_duration_seconds") == mgr.last_report.seconds
    assert value(samples, "tcpmgm_last_reload_timestamp_seconds") == mgr.service.since

    mgr.add_rule({"id": 4, "proto": "tcp", "remote_addr": "192.0.2.0/24"})
    with sqlite3.connect(mgr.source.path) as conn:
        insert(conn, {"id": 5, "proto": "bogus", "remote_addr": "198.51.100.0/24"})
    mi.call(url, "tcp_reload")  # loads 4, rejects the bogus row
    samples, _ = scrape(url)
    assert value(samples, "tcpmgm_reloads_total") == 2 and value(samples, "tcpmgm_reload_failures_total") == 0
    assert value(samples, "tcpmgm_rules_in_service") == 4
    assert value(samples, "tcpmgm_last_reload_rows_loaded") == 4
    assert value(samples, "tcpmgm_last_reload_rows_rejected") == 1
    assert value(samples, "tcpmgm_last_reload_duration_seconds") == mgr.last_report.seconds

    mgr.strict = True  # the bogus row now fails the reload, and the 4 rules stay in service
    with pytest.raises(mi.MIError):
        mi.call(url, "tcp_reload")
    samples, _ = scrape(url)
    assert value(samples, "tcpmgm_reloads_total") == 2 and value(samples, "tcpmgm_reload_failures_total") == 1
    assert value(samples, "tcpmgm_rules_in_service") == 4
    assert value(samples, "tcpmgm_last_reload_rows_rejected") == 1  # still the last successful reload's
    assert value(samples, "tcpmgm_last_reload_timestamp_seconds") == mgr.service.since


def test_a_failing_database_counts_as_a_failed_reload(mgr):
    with sqlite3.connect(mgr.source.path) as conn:
        conn.execute('DROP TABLE "tcp_mgm"')
    with pytest.raises(tcpmgm.ReloadError):
        mgr.reload()
    assert (mgr.reloads, mgr.failed_reloads) == (1, 1)


def test_before_the_first_reload_the_report_families_have_no_sample(endpoint, tmp_path):
    fresh = tcpmgm.TcpMgm(f"sqlite:///{tmp_path / 'fresh.db'}")
    samples, types = scrape(endpoint(manager=fresh))
    assert value(samples, "tcpmgm_reloads_total") == 0 and value(samples, "tcpmgm_rules_in_service") == 0
    assert "tcpmgm_last_reload_duration_seconds" in types
    assert not [key for key in samples if key[0].startswith("tcpmgm_last_reload_")]


def test_lookups_are_the_hits_of_the_rules_that_won_them(endpoint, mgr):
    url = endpoint()
    for _ in range(3):
        mgr.lookup("tcp", "10.2.3.4", 5060)  # rule 1
    mgr.matcher.lookup_many("tcp", array.array("I", [0x0A020304, 0x0A020305]))  # rule 1, twice
    mgr.lookup("ws", "10.1.2.3", 5060)  # rule 2
    mgr.lookup("tls", "2001:db8::1", 5061)  # rule 3
    mgr.lookup("ws", "192.0.2.1", 5060)  # no rule: the default profile
    mgr.lookup("ws", "192.0.2.2", 5060)
    samples, types = scrape(url)
    assert rule_hits(samples) == {"1": 5, "2": 1, "3": 1, "default": 2}
    assert value(samples, "tcpmgm_rule_hits_other") == 0
    assert value(samples, "tcpmgm_lookups_total") == 9
    assert types["tcpmgm_rule_hits"] == types["tcpmgm_lookups"] == "counter"
    assert types["tcpmgm_rule_hits_other"] == "gauge"

    mi.call(url, "tcp_reload")  # hits count from the last reload
    samples, _ = scrape(url)
    assert rule_hits(samples) == {"default": 0}  # no rule won anything yet: no rule has a series
    assert value(samples, "tcpmgm_rule_hits_other") == 0
    assert value(samples, "tcpmgm_lookups_total") == 0


def test_a_manager_that_does_not_count_hits_still_counts_lookups_but_shows_no_hit_samples(endpoint, tmp_path):
    uncounted = tcpmgm.TcpMgm(f"sqlite:///{tmp_path / 'uncounted.db'}", count_hits=False)
    uncounted.create_schema()
    uncounted.add_rule({"id": 1, "proto": "tcp", "remote_addr": "10.0.0.0/8"})
    uncounted.reload()
    uncounted.lookup("tcp", "10.2.3.4")
    uncounted.matcher.lookup_many("tcp", array.array("I", [0x0A020304, 0xC0000201]))
    samples, types = scrape(endpoint(manager=uncounted))
    assert types["tcpmgm_lookups"] == types["tcpmgm_rule_hits"] == "counter"
    assert value(samples, "tcpmgm_lookups_total") == 3
    assert not [key for key in samples if key[0] in ("tcpmgm_rule_hits_total", "tcpmgm_rule_hits_other")]
    assert value(samples, "tcpmgm_rules_in_service") == 1


def test_only_the_top_rules_by_hits_have_a_sample_and_the_rest_are_summed(endpoint, tmp_path):
    many = tcpmgm.TcpMgm(f"sqlite:///{tmp_path / 'many.db'}")
    many.create_schema()
    for rule in range(1, 6):
        many.add_rule({"id": rule, "proto": "any", "remote_addr": f"192.0.2.{rule}/32"})
    many.reload()
    for rule, times in ((1, 1), (2, 5), (3, 3), (4, 3), (5, 0)):
        for _ in range(times):
            many.lookup("tcp", f"192.0.2.{rule}")
    many.lookup("tcp", "198.51.100.1")
    url = endpoint(limits=mi.Limits(metrics_rules=2), manager=many)
    samples, _ = scrape(url)
    # rule 2 (5 hits), then rules 3 and 4 tie at 3 and the lower id wins; 4, 1 and 5 are summed
    assert rule_hits(samples) == {"2": 5, "3": 3, "default": 1}
    assert value(samples, "tcpmgm_rule_hits_other") == 3 + 1 + 0
    total = sum(rule_hits(samples).values()) + value(samples, "tcpmgm_rule_hits_other")
    assert total == value(samples, "tcpmgm_lookups_total") == 13

    samples, _ = scrape(endpoint(manager=many))  # the default cap, 50, leaves no rule that won out
    assert rule_hits(samples) == {"1": 1, "2": 5, "3": 3, "4": 3, "default": 1}  # rule 5 won nothing
    assert value(samples, "tcpmgm_rule_hits_other") == 0


def test_a_rule_entering_the_top_rules_moves_no_counter_but_by_the_lookups_made(endpoint, tmp_path):
    """Between two scrapes every counter sample of both grows by exactly the lookups it counts."""
    swapped = tcpmgm.TcpMgm(f"sqlite:///{tmp_path / 'swapped.db'}")
    swapped.create_schema()
    for rule in range(1, 4):
        swapped.add_rule({"id": rule, "proto": "any", "remote_addr": f"192.0.2.{rule}/32"})
    swapped.reload()
    for rule, times in ((1, 5), (2, 4)):
        for _ in range(times):
            swapped.lookup("tcp", f"192.0.2.{rule}")
    url = endpoint(limits=mi.Limits(metrics_rules=1), manager=swapped)
    before, types = scrape(url)
    assert rule_hits(before) == {"1": 5, "default": 0} and value(before, "tcpmgm_rule_hits_other") == 4
    for _ in range(2):
        swapped.lookup("tcp", "192.0.2.2")  # rule 2 climbs to 6 and takes rule 1's place
    after, _ = scrape(url)
    assert rule_hits(after) == {"2": 6, "default": 0}
    assert value(after, "tcpmgm_rule_hits_other") == 5  # rule 1's count, outside the top rule now

    counters = {f"{name}_total" for name, kind in types.items() if kind == "counter"}
    grown = {key: after[key] - before[key] for key in before.keys() & after.keys() if key[0] in counters}
    assert grown.pop(("tcpmgm_lookups_total", ())) == 2
    assert set(grown.values()) == {0}  # rule hits of the default, reloads, events: none of them moved
    assert ("tcpmgm_rule_hits_total", (("rule", "default"),)) in grown


@pytest.mark.parametrize("top_rules", [-1, 1.5, True, "50"])
def test_a_bad_cap_is_refused(mgr, top_rules):
    with pytest.raises(metrics.MetricsConfigError, match="top_rules"):
        metrics.Collector(mgr, top_rules=top_rules)


def test_a_cap_of_zero_sums_every_rule(mgr):
    mgr.lookup("tcp", "10.2.3.4")
    text = metrics.scraper(mgr, top_rules=0)().decode()
    samples = {
        sample.labels["rule"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "tcpmgm_rule_hits"
        for sample in family.samples
    }
    assert samples == {"default": 0}
    assert "tcpmgm_rule_hits_other 1.0" in text.splitlines()


def test_every_event_is_a_counter_of_its_own(endpoint):
    url = endpoint()
    before, types = scrape(url)
    counted = {event: index + 1 for index, event in enumerate(Event)}  # a different number of each
    for event, times in counted.items():
        for _ in range(times):
            events.count(event)
    after, _ = scrape(url)
    for event, times in counted.items():
        name = f"tcpmgm_{event.value}"
        assert types[name] == "counter"
        assert value(after, f"{name}_total") - value(before, f"{name}_total") == times, event


def test_a_real_refused_connect_and_a_real_idle_close_are_what_the_scrape_counts(tmp_path):
    """A blocking connect refused by no_new_conn and an asyncio connection closed after con_lifetime,
    on loopback: between two scrapes each event counter moves by exactly what they did."""
    served = tcpmgm.TcpMgm(f"sqlite:///{tmp_path / 'served.db'}")
    served.create_schema()
    served.add_rule({"id": 1, "proto": "tcp", "local_addr": "127.0.0.2", "no_new_conn": 1})
    served.add_rule({"id": 2, "proto": "tcp", "remote_addr": "127.0.0.3", "con_lifetime": 1})
    served.reload()

    async def idle_client():
        closed = asyncio.Event()

        async def handle(conn):
            try:
                assert await conn.read(100) == b""  # nothing comes: the idle close ends it
            finally:
                closed.set()

        server = await aio.start_server(served, handle, "127.0.0.1", 0, proto="tcp")
        async with server:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.sockets[0].getsockname()[1], local_addr=("127.0.0.3", 0)
            )
            hung_up = await asyncio.wait_for(reader.read(), 15) == b""
            await asyncio.wait_for(closed.wait(), 15)
            writer.close()
        return hung_up

    with mi.MIServer(served, "127.0.0.1", 0) as endpoint, socket.create_server(("127.0.0.1", 0)) as listener:
        before, _ = scrape(endpoint.url)
        with pytest.raises(tcpmgm.NoNewConnection):
            tcpmgm.connect(served, "tcp", listener.getsockname(), source=("127.0.0.2", 0))
        assert asyncio.run(idle_client()) is True
        after, _ = scrape(endpoint.url)
    moved = {
        event: value(after, f"tcpmgm_{event.value}_total") - value(before, f"tcpmgm_{event.value}_total")
        for event in Event
    }
    assert moved == {event: 0 for event in Event} | {Event.NO_NEW_CONN_REFUSED: 1, Event.IDLE_CLOSE: 1}
    assert rule_hits(after) == {"1": 1, "2": 1, "default": 0}  # one lookup for each connection
    assert value(after, "tcpmgm_lookups_total") - value(before, "tcpmgm_lookups_total") == 2


def test_every_metric_is_named_for_tcpmgm_and_has_help(endpoint):
    text = request(endpoint())[2]
    families = list(text_string_to_metric_families(text))
    assert len(families) == 10 + len(Event)
    for family in families:
        assert family.name.startswith("tcpmgm_") and family.documentation, family.name
        if family.type == "counter":
            assert all(sample.name == f"{family.name}_total" for sample in family.samples)
    assert "# TYPE tcpmgm_reloads_total counter" in text.splitlines()


def test_a_token_guards_the_scrape_as_it_guards_the_methods(endpoint):
    url = endpoint(token=TOKEN)
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        status, head, body = request(url, headers=headers)
        assert status == 401 and head["www-authenticate"].startswith("Bearer")
        assert json.loads(body)["error"]["code"] == mi.UNAUTHORIZED
    samples, _ = scrape(url, token=TOKEN)
    assert value(samples, "tcpmgm_reloads_total") == 1


def test_the_scrape_answers_get_and_head_only(endpoint):
    url = endpoint()
    status, head, body = request(url, method="HEAD")
    assert status == 200 and body == "" and int(head["content-length"]) > 0
    status, _, body = request(url, method="POST", body=b"{}", headers={"Content-Length": "2"})
    assert status == 405 and "GET" in json.loads(body)["error"]["message"]
    status, _, _ = request(url, path=f"{mi.METRICS_PATH}?name[]=tcpmgm_reloads_total")
    assert status == 200
    status, _, _ = request(url, path=f"{mi.METRICS_PATH}/more")
    assert status == 404


@pytest.mark.parametrize("installed", ["none", "too old"])
def test_without_the_extra_the_scrape_says_what_to_install(endpoint, monkeypatch, installed):
    monkeypatch.delitem(sys.modules, "tcpmgm.service.metrics")
    if installed == "none":
        for name in [n for n in sys.modules if n.startswith("prometheus_client.")]:
            monkeypatch.delitem(sys.modules, name)
        monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import prometheus_client fails
    else:  # a registry module without the Collector base class, as before 0.14
        monkeypatch.setitem(sys.modules, "prometheus_client.registry", types.ModuleType("prometheus_client.registry"))
    url = endpoint()
    status, head, body = request(url)
    assert status == 501 and head["content-type"] == "application/json"
    message = json.loads(body)["error"]["message"]
    assert "pip install 'prometheus-client>=" in message and "pip install '.[metrics]'" in message
    assert mi.call(url, "tcp_list")["total"] == 3  # the methods are served as ever


def test_a_manager_that_fails_the_scrape_is_a_500_and_logged(endpoint, mgr, monkeypatch, caplog):
    monkeypatch.setattr(mgr, "last_report", object())  # a report without its fields
    url = endpoint()
    with caplog.at_level(logging.ERROR, logger="tcpmgm.mi"):
        status, _, body = request(url)
    assert status == 500 and "AttributeError" in json.loads(body)["error"]["message"]
    assert any("scrape" in record.getMessage() for record in caplog.records)
    assert mi.call(url, "tcp_list")["total"] == 3


def test_an_mi_path_of_metrics_keeps_it_for_json_rpc(mgr):
    with mi.MIServer(mgr, "127.0.0.1", 0, path=mi.METRICS_PATH) as server:
        assert mi.call(server.url, "tcp_list")["total"] == 3
        assert request(server.url)[0] == 405  # GET on the JSON-RPC path


def test_the_collector_serves_beside_an_applications_own_metrics(mgr):
    own = CollectorRegistry(auto_describe=True)  # as prometheus_client.REGISTRY: collects once on register
    Counter("app_requests", "The application's own", registry=own).inc(2)
    own.register(metrics.Collector(mgr, top_rules=5))
    mgr.lookup("tcp", "10.2.3.4")
    families = {family.name: family for family in text_string_to_metric_families(generate_latest(own).decode())}
    assert families["app_requests"].samples[0].value == 2
    assert {s.labels["rule"]: s.value for s in families["tcpmgm_rule_hits"].samples}["1"] == 1
