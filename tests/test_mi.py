"""The JSON-RPC admin endpoint, over both transports (thread and asyncio), on 127.0.0.1."""

import asyncio
import http.client
import json
import logging
import re
import select
import socket
import sqlite3
import threading
import time
import urllib.parse

import pytest
from mi_endpoints import KINDS, address, exchange, start, status_of

import tcpmgm
from tcpmgm.service import mi

TOKEN = "s3cret"


@pytest.fixture
def mgr(tmp_path):
    manager = tcpmgm.TcpMgm(f"sqlite:///{tmp_path / 'rules.db'}")
    manager.create_schema()
    manager.add_rule({"id": 1, "proto": "tcp", "remote_addr": "10.0.0.0/8", "connect_timeout": 900})
    manager.add_rule({"id": 2, "proto": "any", "remote_addr": "10.1.0.0/16", "remote_port": 5060, "no_new_conn": 1})
    manager.add_rule({"id": 3, "proto": "tls", "remote_addr": "2001:db8::/32", "keepidle": 60})
    manager.reload()
    return manager


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def endpoint(kind, mgr):
    """A function starting the endpoint of the transport under test with given limits; stopped afterwards."""
    started = []

    def start_with(limits=None, token=None, manager=None):
        server, where = start(kind, manager or mgr, token, limits)
        started.append(server)
        return where

    yield start_with
    for server in started:
        server.stop()


@pytest.fixture
def url(endpoint):
    return endpoint()


@pytest.fixture
def token_url(endpoint):
    return endpoint(token=TOKEN)


def raw(url, body, *, method="POST", headers=None, path=None):
    """Send ``body`` as is; return (HTTP status, decoded JSON or None)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, path or parts.path, body=body, headers=headers or {})
        reply = conn.getresponse()
        data = reply.read()
        return reply.status, (json.loads(data) if data else None)
    finally:
        conn.close()


def rpc(method, params=None, id=1):
    request = {"jsonrpc": "2.0", "method": method, "id": id}
    if params is not None:
        request["params"] = params
    return request


def test_reload_under_both_names_reports_what_it_loaded(url, mgr):
    mgr.add_rule({"id": 4, "proto": "tcp", "remote_addr": "192.0.2.0/24"})
    result = mi.call(url, "tcp_reload")
    assert result["loaded"] == 4 and result["rejected"] == [] and result["schema_version"] == 2
    assert 4 in mgr.matcher
    with sqlite3.connect(mgr.source.path) as conn:
        conn.execute("INSERT INTO tcp_mgm (id, proto) VALUES (5, 'udp')")
    result = mi.call(url, "tcp_mgm:reload")
    assert result["loaded"] == 4
    assert len(result["rejected"]) == 1 and "rule 5" in result["rejected"][0]


def test_list_gives_the_rules_in_the_order_they_are_tried(url):
    rules = mi.call(url, "tcp_list")["rules"]
    assert [r["id"] for r in rules] == [3, 1, 2]  # named proto first, then longer prefix first
    assert rules[1]["remote_addr"] == "10.0.0.0/8" and rules[1]["connect_timeout"] == 900


def test_match_by_name_and_by_position(url):
    result = mi.call(url, "tcp_match", {"proto": "tcp", "remote": "10.1.2.3:5060", "local": "10.0.0.1:5060"})
    assert result["rule"] == 1 and result["profile"]["connect_timeout"] == 900
    result = mi.call(url, "tcp_match", ["tls", "[2001:db8::7]:5061"])
    assert result["rule"] == 3 and result["profile"]["keepidle"] == 60
    assert "matches" not in result
    result = mi.call(url, "tcp_match", {"proto": "any", "remote": "10.1.2.3:5060", "explain": True})
    assert [(m["rule"], m["reason"]) for m in result["matches"]] == [
        (1, "winner"),
        (2, "protocol 'any' where the winner names a protocol"),
    ]
    assert mi.call(url, "tcp_match", ["tcp", "192.0.2.1"])["rule"] == 0


def test_match_local_side_may_be_a_socket_tag(endpoint, tmp_path):
    manager = tcpmgm.TcpMgm(f"sqlite:///{tmp_path / 'tags.db'}", listeners={"internal": "10.0.0.1"})
    manager.create_schema()
    manager.add_rule({"id": 7, "proto": "tcp", "local_addr": "internal", "connect_timeout": 700})
    manager.reload()
    url = endpoint(manager=manager)
    assert mi.call(url, "tcp_match", ["tcp", "192.0.2.1:5060", "internal:5060"])["rule"] == 7
    with pytest.raises(mi.MIError) as refused:
        mi.call(url, "tcp_match", ["tcp", "192.0.2.1:5060", "external:5060"])
    assert refused.value.code == mi.INVALID_PARAMS and "external" in str(refused.value)


@pytest.mark.parametrize(
    "body, code",
    [
        (b"{not json", mi.PARSE_ERROR),
        (b"[" * 100_000, mi.PARSE_ERROR),  # nested too deep to parse
        (b"42", mi.INVALID_REQUEST),
        (b"[]", mi.INVALID_REQUEST),
        (json.dumps({"method": "tcp_list", "id": 1}).encode(), mi.INVALID_REQUEST),  # no jsonrpc
        (json.dumps({"jsonrpc": "2.0", "method": "tcp_list", "params": 3, "id": 1}).encode(), mi.INVALID_REQUEST),
        (json.dumps(rpc("tcp_nope")).encode(), mi.METHOD_NOT_FOUND),
        (json.dumps(rpc("tcp_match", {})).encode(), mi.INVALID_PARAMS),  # proto missing
        (json.dumps(rpc("tcp_match", {"proto": "tcp", "bogus": 1})).encode(), mi.INVALID_PARAMS),
        (json.dumps(rpc("tcp_match", ["tcp", "10.0.0.999"])).encode(), mi.INVALID_PARAMS),
        (json.dumps(rpc("tcp_match", ["sctp", "10.0.0.1"])).encode(), mi.INVALID_PARAMS),
        (json.dumps(rpc("tcp_match", ["tcp", 17])).encode(), mi.INVALID_PARAMS),
        (json.dumps(rpc("tcp_list", [0, 10, 1])).encode(), mi.INVALID_PARAMS),  # offset, limit: no third
        (json.dumps(rpc("tcp_list", {"offset": -1})).encode(), mi.INVALID_PARAMS),
        (json.dumps(rpc("tcp_list", {"offset": "0"})).encode(), mi.INVALID_PARAMS),
        (json.dumps(rpc("tcp_list", {"limit": 0})).encode(), mi.INVALID_PARAMS),
        (json.dumps(rpc("tcp_list", {"limit": mi.Limits().list_limit + 1})).encode(), mi.INVALID_PARAMS),
        (json.dumps(rpc("tcp_list", {"limit": True})).encode(), mi.INVALID_PARAMS),
        (json.dumps(rpc("tcp_match", {"proto": "tcp", "explain": "no"})).encode(), mi.INVALID_PARAMS),  # "no" is truthy
    ],
)
def test_malformed_requests_get_json_rpc_errors(url, body, code):
    status, answer = raw(url, body, headers={"Content-Type": "application/json"})
    assert status == 200
    assert answer["jsonrpc"] == "2.0" and answer["error"]["code"] == code
    # and the service is still there
    assert mi.call(url, "tcp_match", ["tcp", "10.9.9.9"])["rule"] == 1


def test_batches_and_notifications(url):
    batch = [
        rpc("tcp_match", ["tcp", "10.0.0.1"], id="a"),
        {"jsonrpc": "2.0", "method": "tcp_reload"},
        rpc("tcp_nope", id=7),
        5,
    ]
    status, answer = raw(url, json.dumps(batch).encode())
    assert status == 200
    assert [(a["id"], a.get("result", {}).get("rule"), a.get("error", {}).get("code")) for a in answer] == [
        ("a", 1, None),
        (7, None, mi.METHOD_NOT_FOUND),
        (None, None, mi.INVALID_REQUEST),
    ]
    status, answer = raw(url, json.dumps({"jsonrpc": "2.0", "method": "tcp_reload"}).encode())
    assert (status, answer) == (204, None)


def test_http_level_mistakes(url):
    assert raw(url, None, method="GET")[0] == 405
    status, answer = raw(url, json.dumps(rpc("tcp_list")).encode(), path="/elsewhere")
    assert status == 404 and answer["error"]["code"] == mi.INVALID_REQUEST


def test_failed_reload_is_an_error_and_old_rules_stay(url, mgr):
    with sqlite3.connect(mgr.source.path) as conn:
        conn.execute("DROP TABLE tcp_mgm")
    with pytest.raises(mi.MIError) as info:
        mi.call(url, "tcp_reload")
    assert info.value.code == mi.SERVER_ERROR and "old rules stay in service" in str(info.value)
    assert mi.call(url, "tcp_match", ["tcp", "10.0.0.1"])["rule"] == 1


def test_bearer_token(token_url):
    status, answer = raw(token_url, json.dumps(rpc("tcp_list")).encode())
    assert status == 401 and answer["error"]["code"] == mi.UNAUTHORIZED
    status, _ = raw(token_url, json.dumps(rpc("tcp_list")).encode(), headers={"Authorization": "Bearer wrong"})
    assert status == 401
    with pytest.raises(mi.MIError, match="unauthorized"):
        mi.call(token_url, "tcp_list", token="wrong")
    assert len(mi.call(token_url, "tcp_list", token=TOKEN)["rules"]) == 3


def test_client_errors_are_one_mi_error(mgr):
    server = mi.MIServer(mgr, "127.0.0.1", 0).start()
    address = server.url
    server.stop()
    with pytest.raises(mi.MIError, match="cannot reach"):
        mi.call(address, "tcp_list")
    with pytest.raises(mi.MIError, match="bad MI URL"):
        mi.call("not a url", "tcp_list")


def test_a_client_that_stops_sending_is_let_go(endpoint):
    # Content-Length promises more than arrives: after the request deadline the
    # endpoint must end the connection instead of holding a worker forever.
    url = endpoint(mi.Limits(request_timeout=0.5))
    with socket.create_connection(address(url), timeout=10) as client:
        client.sendall(b"POST /mi HTTP/1.1\r\nContent-Length: 100\r\n\r\n{}")
        received = b""
        while chunk := client.recv(4096):  # socket.timeout here: the endpoint never let go
            received += chunk
    assert received == b"" or received.startswith(b"HTTP/1.1 4")
    assert mi.call(url, "tcp_match", ["tcp", "10.9.9.9"])["rule"] == 1


# -- issue 10, item 7: the request parser is strict, and never leaves a traceback -----


def _no_traceback(capfd, caplog):
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


LIST = json.dumps(rpc("tcp_list")).encode()


@pytest.mark.parametrize(
    "length",
    [
        b"Content-Length: \xb2",  # latin-1 '\xb2' is '²', which str.isdigit() takes
        "Content-Length: ٢".encode(),  # an Arabic-Indic two, in UTF-8
        b"Content-Length: %d\r\nContent-Length: %d" % (len(LIST), len(LIST)),
        b"Content-Length: %d\r\nContent-Length: 2" % len(LIST),
        b"Content-Length: %d, %d" % (len(LIST), len(LIST)),
        b"Content-Length: +%d" % len(LIST),
        b"Content-Length: -1",
        b"Content-Length: 0x10",
        b"Content-Length: ",
        b"Content-Length: " + b"0" * 30 + b"%d" % len(LIST),  # a number, but past any sane length of one
    ],
)
def test_content_length_is_one_header_of_ascii_digits(url, length, capfd, caplog):
    reply = exchange(url, b"POST /mi HTTP/1.1\r\nHost: x\r\n" + length + b"\r\n\r\n" + LIST)
    assert status_of(reply) == 400
    answer = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert answer["error"]["code"] == mi.INVALID_REQUEST and "Content-Length" in answer["error"]["message"]
    assert exchange(url, b"POST /mi HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(LIST) + LIST).startswith(
        b"HTTP/1.1 200 "
    )
    _no_traceback(capfd, caplog)


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"POST /mi\r\n\r\n", 400),  # no version
        (b"POST /mi HTTP/2.0\r\nContent-Length: 2\r\n\r\n{}", 400),
        (b"POST  /mi HTTP/1.1\r\n\r\n", 400),
        (b"POST /mi HTTP/1.1\r\nContent-Length : 2\r\n\r\n{}", 400),  # space before the colon
        (b"POST /mi HTTP/1.1\r\nX: a\r\n folded\r\nContent-Length: 2\r\n\r\n{}", 400),
        (b"POST /mi HTTP/1.1\r\nX: a\x00b\r\nContent-Length: 2\r\n\r\n{}", 400),
        (
            b"POST /mi HTTP/1.1\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\nContent-Length: 2\r\n\r\n{}",
            400,
        ),
        (b"POST /mi HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 411),
        (b"POST /mi HTTP/1.1\r\n\r\n", 411),
        (b"POST /mi HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % ((1 << 20) + 1), 413),
        (b"POST /mi HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
        (b"POST /mi HTTP/1.1\r\nX: " + b"y" * (16 * 1024) + b"\r\n\r\n", 431),
        (b"POST /mi HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}", 400),  # ends before its body
        (b"\xff\xfe\x00garbage", 400),
    ],
)
def test_malformed_http_gets_an_http_error(url, request_bytes, status, capfd, caplog):
    reply = exchange(url, request_bytes)
    assert status_of(reply) == status
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["code"] == mi.INVALID_REQUEST
    assert mi.call(url, "tcp_match", ["tcp", "10.9.9.9"])["rule"] == 1
    _no_traceback(capfd, caplog)


def test_a_client_that_says_nothing_is_closed_without_an_answer(url):
    assert exchange(url, b"") == b""


def test_expect_100_continue(url):
    with socket.create_connection(address(url), timeout=10) as client:
        client.sendall(b"POST /mi HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(LIST))
        assert client.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.sendall(LIST)
        client.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := client.recv(65536):
            reply += chunk
    assert status_of(reply) == 200 and len(json.loads(reply.split(b"\r\n\r\n", 1)[1])["result"]["rules"]) == 3


# -- item 8: batches, pages and the size of an answer are bounded --------------------


def _add_rules(mgr, count):
    with sqlite3.connect(mgr.source.path) as conn:
        conn.executemany(
            "INSERT INTO tcp_mgm (id, proto, remote_addr) VALUES (?, 'tcp', ?)",
            [(100 + i, f"172.{16 + i // 65536 % 16}.{i // 256 % 256}.{i % 256}/32") for i in range(count)],
        )
    mgr.reload()


def test_a_batch_over_the_cap_is_one_error_and_runs_nothing(endpoint, mgr, monkeypatch):
    reloads = []
    monkeypatch.setattr(mgr, "reload", lambda real=mgr.reload: reloads.append(1) or real())
    for url, cap in ((endpoint(), mi.Limits().max_batch), (endpoint(mi.Limits(max_batch=5)), 5)):
        status, answer = raw(url, json.dumps([rpc("tcp_reload", id=i) for i in range(cap + 1)]).encode())
        assert status == 200 and isinstance(answer, dict)
        assert answer["error"]["code"] == mi.INVALID_REQUEST and f"at most {cap}" in answer["error"]["message"]
        status, answer = raw(
            url, json.dumps([rpc("tcp_match", ["tcp", "10.0.0.1"], id=i) for i in range(cap)]).encode()
        )
        assert status == 200 and [a["result"]["rule"] for a in answer] == [1] * cap
    assert reloads == []


def test_the_reloads_of_a_batch_are_one_reload(url, mgr, monkeypatch):
    reloads = []
    monkeypatch.setattr(mgr, "reload", lambda real=mgr.reload: reloads.append(1) or real())
    batch = [rpc("tcp_reload", id=i) for i in range(40)] + [rpc("tcp_mgm:reload", id="alias")]
    batch += [{"jsonrpc": "2.0", "method": "tcp_reload"}] * 20 + [rpc("tcp_list", id="list")]
    status, answer = raw(url, json.dumps(batch).encode())
    assert status == 200 and reloads == [1]
    assert [a["id"] for a in answer] == [*list(range(40)), "alias", "list"]
    assert all(a["result"] == answer[0]["result"] for a in answer[:41]) and answer[0]["result"]["loaded"] == 3
    # a failed reload is one failure, which every entry reports
    with sqlite3.connect(mgr.source.path) as conn:
        conn.execute("DROP TABLE tcp_mgm")
    status, answer = raw(url, json.dumps([rpc("tcp_reload", id=i) for i in range(3)]).encode())
    assert reloads == [1, 1] and [a["error"]["code"] for a in answer] == [mi.SERVER_ERROR] * 3


def test_list_pages(endpoint, mgr):
    url = endpoint()
    page = mi.call(url, "tcp_list", {"limit": 2})
    assert [r["id"] for r in page["rules"]] == [3, 1] and (page["total"], page["offset"], page["next_offset"]) == (
        3,
        0,
        2,
    )
    page = mi.call(url, "tcp_list", [2, 2])
    assert [r["id"] for r in page["rules"]] == [2] and page["next_offset"] is None
    page = mi.call(url, "tcp_list", {"offset": 10**30})
    assert page["rules"] == [] and page["total"] == 3 and page["next_offset"] is None
    small = endpoint(mi.Limits(list_limit=2))
    page = mi.call(small, "tcp_list")  # the default page is the largest
    assert len(page["rules"]) == 2 and page["next_offset"] == 2
    with pytest.raises(mi.MIError) as info:
        mi.call(small, "tcp_list", {"limit": 3})
    assert info.value.code == mi.INVALID_PARAMS
    assert [r["id"] for r in mi.list_all(small)] == [3, 1, 2]
    _add_rules(mgr, 250)
    every = mi.list_all(url)
    assert len(every) == 253 and len({r["id"] for r in every}) == 253


def test_no_answer_is_larger_than_max_response(endpoint, mgr):
    _add_rules(mgr, 300)
    # the defaults: a full batch of full pages still fits
    url = endpoint()
    batch = json.dumps([rpc("tcp_list", {"offset": 100 * (i % 3)}, id=i) for i in range(mi.Limits().max_batch)])
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("POST", parts.path, body=batch.encode())
    body = conn.getresponse().read()
    conn.close()
    assert len(body) <= mi.Limits().max_response
    assert all(len(a["result"]["rules"]) == 100 for a in json.loads(body))
    # a small bound: what does not fit becomes an error, the rest still gets through
    limits = mi.Limits(max_batch=10, max_response=20_000)  # a page of 100 rows takes about 30 kB
    url = endpoint(limits)
    batch = [rpc("tcp_list", {"limit": 100 if i % 2 == 0 else 5}, id=i) for i in range(10)]
    status, answer = raw(url, json.dumps(batch).encode())
    assert status == 200 and [a["id"] for a in answer] == list(range(10))
    assert all(a["error"]["code"] == mi.TOO_LARGE for a in answer[0::2])
    assert all(len(a["result"]["rules"]) == 5 for a in answer[1::2])
    assert len(json.dumps(answer, separators=(",", ":"))) <= limits.max_response
    with pytest.raises(mi.MIError) as info:
        mi.call(url, "tcp_list", {"limit": 100, "offset": 0})
    assert info.value.code == mi.TOO_LARGE
    assert len(mi.call(url, "tcp_list", {"limit": 10})["rules"]) == 10


def test_the_tightest_max_response_still_answers_every_entry(mgr):
    # the longest ids a request may carry, at the smallest bound Limits allows for a batch of 10
    with pytest.raises(mi.MIConfigError) as info:
        mi.Limits(max_batch=10, max_response=10_000)  # as many digits as the least: the same message
    least = int(re.search(r"at least (\d+) bytes", str(info.value)).group(1))
    limits = mi.Limits(max_batch=10, max_response=least)
    _add_rules(mgr, 200)
    ids = ["\U0001f600" * (mi.MAX_ID_CHARS - 1) + str(i) for i in range(10)]
    batch = [
        rpc("tcp_list", {"limit": 100}, id=ids[i]) if i % 3 else rpc("tcp_match", ["tcp", "10.0.0.1"], id=ids[i])
        for i in range(10)
    ]
    status, body = mi.Dispatcher(mgr, limits=limits).handle(json.dumps(batch).encode())
    assert status == 200 and len(body) <= least
    answer = json.loads(body)
    assert [a["id"] for a in answer] == ids
    assert all(a["error"]["code"] == mi.TOO_LARGE for i, a in enumerate(answer) if i % 3)


def test_limits_that_cannot_hold_their_errors_are_refused():
    with pytest.raises(mi.MIConfigError, match="max_response"):
        mi.Limits(max_batch=1000, max_response=10_000)
    for bad in (0, -1, True, "5"):
        with pytest.raises(mi.MIConfigError, match="max_connections"):
            mi.Limits(max_connections=bad)


def test_long_ids_are_invalid_requests(url):
    _status, answer = raw(url, json.dumps(rpc("tcp_list", id="x" * (mi.MAX_ID_CHARS + 1))).encode())
    assert answer["id"] is None and answer["error"]["code"] == mi.INVALID_REQUEST
    _status, answer = raw(url, json.dumps(rpc("tcp_list", id=1 << 63)).encode())
    assert answer["id"] is None and answer["error"]["code"] == mi.INVALID_REQUEST
    _status, answer = raw(url, json.dumps(rpc("tcp_list", id="x" * mi.MAX_ID_CHARS)).encode())
    assert answer["id"] == "x" * mi.MAX_ID_CHARS and "result" in answer


# -- item 9: a whole-request deadline and a cap on connections -----------------------


def test_a_trickling_client_is_cut_off_by_the_whole_request_deadline(endpoint):
    timeout = 0.5
    url = endpoint(mi.Limits(request_timeout=timeout))
    started = time.monotonic()
    received = b""
    with socket.create_connection(address(url), timeout=10) as client:
        client.sendall(b"POST /mi HTTP/1.1\r\nContent-Length: 1000\r\n\r\n")
        # One byte every 0.1 s: each read gets data well within the timeout.
        while time.monotonic() - started < 20 * timeout:
            try:
                client.sendall(b" ")
            except OSError:
                break  # the endpoint closed, and said so with a reset
            readable, _, _ = select.select([client], [], [], 0.1)
            if readable:
                try:
                    chunk = client.recv(4096)
                except OSError:
                    break
                if not chunk:
                    break
                received += chunk
        else:
            pytest.fail("the endpoint kept a trickling client for 20 times its request timeout")
    assert received == b"" or status_of(received) == 408
    assert mi.call(url, "tcp_match", ["tcp", "10.9.9.9"])["rule"] == 1


def _busy(url):
    with socket.create_connection(address(url), timeout=10) as client:
        reply = b""
        while chunk := client.recv(4096):
            reply += chunk
    return reply


def test_connections_over_the_cap_get_503_and_threads_stay_bounded(endpoint, kind):
    cap = 3
    url = endpoint(mi.Limits(max_connections=cap, request_timeout=30))
    threads_before = threading.active_count()
    stalled = []
    try:
        for _ in range(cap):
            client = socket.create_connection(address(url), timeout=10)
            client.sendall(b"POST /mi HTTP/1.1\r\n")
            stalled.append(client)
        for _ in range(20):  # clients beyond the cap get their answer at once
            reply = _busy(url)
            assert status_of(reply) == 503 and b"Retry-After" in reply
            assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["code"] == mi.SERVER_ERROR
        assert threading.active_count() <= threads_before + cap
    finally:
        for client in stalled:
            client.close()
    deadline = time.monotonic() + 10
    while True:  # the stalled ones gone, the endpoint serves again
        try:
            assert mi.call(url, "tcp_match", ["tcp", "10.9.9.9"])["rule"] == 1
            break
        except mi.MIError as exc:
            assert "busy" in str(exc) and time.monotonic() < deadline
            time.sleep(0.05)
    assert threading.active_count() <= threads_before + cap


def test_a_refused_client_that_sends_its_request_after_the_503_is_not_reset(endpoint, kind):
    # urllib writes its whole request before it reads: a refusal that closes at once
    # resets a client still writing, which then sees a broken pipe instead of "busy".
    url = endpoint(mi.Limits(max_connections=1, request_timeout=30))
    stalled = socket.create_connection(address(url), timeout=10)
    stalled.sendall(b"POST /mi HTTP/1.1\r\n")
    try:
        with socket.create_connection(address(url), timeout=10) as client:
            reply = b""
            while chunk := client.recv(4096):
                reply += chunk
            assert status_of(reply) == 503
            body = json.dumps({"jsonrpc": "2.0", "method": "tcp_list", "id": 1}).encode()
            head = f"POST /mi HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            for part in (head, body[:5], body[5:]):
                client.sendall(part)  # a reset from a closed socket would surface here as EPIPE
                time.sleep(0.1)  # time for a reset to come back, were there one
    finally:
        stalled.close()


# -- item 10: no token, no reaching beyond this machine -------------------------------


@pytest.fixture
def no_bind(monkeypatch):
    """Any bind from here on fails the test: the refusal must come before a socket is bound."""

    def refuse(self, address):
        raise AssertionError(f"bound {address!r}")

    monkeypatch.setattr(socket.socket, "bind", refuse)


def _fake_resolver(monkeypatch, answers):
    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        if host in answers:
            if answers[host] is None:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return [
                (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0))
                for a in answers[host]
            ]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


WIDE = [
    "0.0.0.0",
    "::",
    "",
    None,
    "192.0.2.1",
    "2001:db8::1",
    "::ffff:192.0.2.1",
    "fe80::1%lo",
    "mixed.invalid",
    "public.invalid",
    "unresolvable.invalid",
]


@pytest.mark.parametrize("host", WIDE)
def test_a_non_loopback_address_without_a_token_is_refused_before_binding(host, mgr, monkeypatch, no_bind):
    _fake_resolver(
        monkeypatch,
        {"mixed.invalid": ["127.0.0.1", "192.0.2.7"], "public.invalid": ["192.0.2.7"], "unresolvable.invalid": None},
    )
    with pytest.raises(mi.InsecureBindError, match="without a token"):
        mi.MIServer(mgr, host, 0)
    with pytest.raises(mi.InsecureBindError, match="insecure=True"):
        asyncio.run(mi.serve(mgr, host, 0))
    mi.check_bind(host, token="s3cret", insecure=False)  # a token guards it


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.4.5.6", "::1", "::ffff:127.0.0.1", "localhost", "loopbacks.invalid"]
)
def test_loopback_addresses_need_no_token(host, monkeypatch, caplog):
    _fake_resolver(monkeypatch, {"loopbacks.invalid": ["127.0.0.1", "::1"]})
    with caplog.at_level(logging.WARNING, logger="tcpmgm.mi"):
        mi.check_bind(host, token=None, insecure=False)
        mi.check_bind(host, token=None, insecure=True)
    assert caplog.records == []


def test_insecure_binds_wide_with_a_warning(mgr, monkeypatch, caplog, no_bind):
    with caplog.at_level(logging.WARNING, logger="tcpmgm.mi"):
        mi.MIServer(mgr, "0.0.0.0", 0, insecure=True)  # binds on start(), which this test does not
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "insecure=True" in caplog.records[0].getMessage() and "'0.0.0.0'" in caplog.records[0].getMessage()
    caplog.clear()
    bound = []

    async def fake_start_server(callback, host, port, **kwargs):
        bound.append(host)

    monkeypatch.setattr(asyncio, "start_server", fake_start_server)
    with caplog.at_level(logging.WARNING, logger="tcpmgm.mi"):
        asyncio.run(mi.serve(mgr, "::", 0, insecure=True))
    assert bound == ["::"] and [r.levelno for r in caplog.records] == [logging.WARNING]


def test_localhost_binds_and_serves(mgr):
    with mi.MIServer(mgr, "localhost", 0) as server:
        assert mi.call(server.url, "tcp_match", ["tcp", "10.9.9.9"])["rule"] == 1


def test_the_endpoint_logs_to_the_logger_the_readme_names(mgr, caplog, no_bind):
    """Operators configure ``tcpmgm.mi`` (README): the records must carry that name, whatever file
    the code lives in."""
    with caplog.at_level(logging.WARNING, logger="tcpmgm.mi"):
        mi.MIServer(mgr, "0.0.0.0", 0, insecure=True)
    assert [record.name for record in caplog.records] == ["tcpmgm.mi"]
