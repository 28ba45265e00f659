"""The JSON-RPC admin endpoint, over both transports (thread and asyncio), on 127.0.0.1."""

import asyncio
import http.client
import json
import socket
import sqlite3
import threading
import urllib.parse

import pytest

import tcpmgm
from tcpmgm import mi

TOKEN = "s3cret"


@pytest.fixture
def mgr(tmp_path):
    manager = tcpmgm.TcpMgm(f"sqlite:///{tmp_path / 'rules.db'}")
    manager.create_schema()
    manager.add_rule({"id": 1, "proto": "tcp", "remote_addr": "10.0.0.0/8", "connect_timeout": 900})
    manager.add_rule({"id": 2, "proto": "any", "remote_addr": "10.1.0.0/16", "remote_port": 5060,
                      "no_new_conn": 1})
    manager.add_rule({"id": 3, "proto": "tls", "remote_addr": "2001:db8::/32", "keepidle": 60})
    manager.reload()
    return manager


class AsyncioEndpoint:
    """mi.serve on a loop of its own thread, so that blocking clients can call it."""

    def __init__(self, mgr, token):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            mi.serve(mgr, "127.0.0.1", 0, token=token), self.loop).result(10)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/mi"

    def stop(self):
        async def close():
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def _start(kind, mgr, token):
    if kind == "thread":
        server = mi.MIServer(mgr, "127.0.0.1", 0, token=token).start()
        return server, server.url
    endpoint = AsyncioEndpoint(mgr, token)
    return endpoint, endpoint.url


@pytest.fixture(params=["thread", "asyncio"])
def url(request, mgr):
    server, address = _start(request.param, mgr, None)
    yield address
    server.stop()


@pytest.fixture(params=["thread", "asyncio"])
def token_url(request, mgr):
    server, address = _start(request.param, mgr, TOKEN)
    yield address
    server.stop()


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
    assert [r["id"] for r in rules] == [3, 1, 2]   # named proto first, then longer prefix first
    assert rules[1]["remote_addr"] == "10.0.0.0/8" and rules[1]["connect_timeout"] == 900


def test_match_by_name_and_by_position(url):
    result = mi.call(url, "tcp_match", {"proto": "tcp", "remote": "10.1.2.3:5060", "local": "10.0.0.1:5060"})
    assert result["rule"] == 1 and result["profile"]["connect_timeout"] == 900
    result = mi.call(url, "tcp_match", ["tls", "[2001:db8::7]:5061"])
    assert result["rule"] == 3 and result["profile"]["keepidle"] == 60
    assert "matches" not in result
    result = mi.call(url, "tcp_match", {"proto": "any", "remote": "10.1.2.3:5060", "explain": True})
    assert [(m["rule"], m["reason"]) for m in result["matches"]] == [
        (1, "winner"), (2, "protocol 'any' where the winner names a protocol"),
    ]
    assert mi.call(url, "tcp_match", ["tcp", "192.0.2.1"])["rule"] == 0


@pytest.mark.parametrize("body, code", [
    (b"{not json", mi.PARSE_ERROR),
    (b"[" * 100_000, mi.PARSE_ERROR),                                                  # nested too deep to parse
    (b"42", mi.INVALID_REQUEST),
    (b"[]", mi.INVALID_REQUEST),
    (json.dumps({"method": "tcp_list", "id": 1}).encode(), mi.INVALID_REQUEST),        # no jsonrpc
    (json.dumps({"jsonrpc": "2.0", "method": "tcp_list", "params": 3, "id": 1}).encode(), mi.INVALID_REQUEST),
    (json.dumps(rpc("tcp_nope")).encode(), mi.METHOD_NOT_FOUND),
    (json.dumps(rpc("tcp_match", {})).encode(), mi.INVALID_PARAMS),                    # proto missing
    (json.dumps(rpc("tcp_match", {"proto": "tcp", "bogus": 1})).encode(), mi.INVALID_PARAMS),
    (json.dumps(rpc("tcp_match", ["tcp", "10.0.0.999"])).encode(), mi.INVALID_PARAMS),
    (json.dumps(rpc("tcp_match", ["sctp", "10.0.0.1"])).encode(), mi.INVALID_PARAMS),
    (json.dumps(rpc("tcp_match", ["tcp", 17])).encode(), mi.INVALID_PARAMS),
    (json.dumps(rpc("tcp_list", [1])).encode(), mi.INVALID_PARAMS),
    (json.dumps(rpc("tcp_match", {"proto": "tcp", "explain": "no"})).encode(), mi.INVALID_PARAMS),  # "no" is truthy
])
def test_malformed_requests_get_json_rpc_errors(url, body, code):
    status, answer = raw(url, body, headers={"Content-Type": "application/json"})
    assert status == 200
    assert answer["jsonrpc"] == "2.0" and answer["error"]["code"] == code
    # and the service is still there
    assert mi.call(url, "tcp_match", ["tcp", "10.9.9.9"])["rule"] == 1


def test_batches_and_notifications(url):
    batch = [rpc("tcp_match", ["tcp", "10.0.0.1"], id="a"), {"jsonrpc": "2.0", "method": "tcp_reload"},
             rpc("tcp_nope", id=7), 5]
    status, answer = raw(url, json.dumps(batch).encode())
    assert status == 200
    assert [(a["id"], a.get("result", {}).get("rule"), a.get("error", {}).get("code")) for a in answer] == [
        ("a", 1, None), (7, None, mi.METHOD_NOT_FOUND), (None, None, mi.INVALID_REQUEST),
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


def test_a_client_that_stops_sending_is_let_go(url, monkeypatch):
    # Content-Length promises more than arrives: after the request deadline the
    # endpoint must end the connection instead of holding a worker forever.
    monkeypatch.setattr(mi, "REQUEST_DEADLINE", 0.5)
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as client:
        client.sendall(b"POST /mi HTTP/1.1\r\nContent-Length: 100\r\n\r\n{}")
        received = b""
        while chunk := client.recv(4096):   # socket.timeout here: the endpoint never let go
            received += chunk
    assert received == b"" or received.startswith(b"HTTP/1.1 4")
    assert mi.call(url, "tcp_match", ["tcp", "10.9.9.9"])["rule"] == 1
