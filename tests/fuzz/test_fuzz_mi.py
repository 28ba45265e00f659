"""Fuzzing the admin endpoint: its request parser on arbitrary bytes, directly and over loopback
sockets to both transports, and its dispatcher on arbitrary JSON (issue 10, item 20).

Whatever arrives: an HTTP answer or a clean close, never a traceback on stderr or a logged error,
never a stuck connection thread, and the endpoint still serving afterwards; from the dispatcher,
always a valid JSON-RPC response within the response bound.
"""

import contextlib
import io
import json
import logging
import re
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mi_endpoints import KINDS, exchange, start, status_of

import tcpmgm
from tcpmgm.service import mi

# Small bounds, so that a stuck connection shows within the test and batches hit their cap.
LIMITS = mi.Limits(
    request_timeout=2.0, max_connections=8, max_batch=8, max_head=2048, max_body=8192, list_limit=5, max_response=20_000
)


@pytest.fixture(scope="module")
def mgr(tmp_path_factory):
    manager = tcpmgm.TcpMgm(f"sqlite:///{tmp_path_factory.mktemp('mi') / 'rules.db'}")
    manager.create_schema()
    for rule_id, proto, remote in ((1, "tcp", "10.0.0.0/8"), (2, "any", "10.1.0.0/16"), (3, "tls", "2001:db8::/32")):
        manager.add_rule({"id": rule_id, "proto": proto, "remote_addr": remote})
    manager.reload()
    return manager


@pytest.fixture(scope="module", params=KINDS)
def endpoint(request, mgr):
    server, url = start(request.param, mgr, None, LIMITS)
    yield url
    server.stop()


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def clean():
    """Fails unless nothing reached stderr and nothing was logged at ERROR inside (any thread)."""
    errors, stderr = _Errors(), io.StringIO()
    root = logging.getLogger()
    root.addHandler(errors)
    try:
        with contextlib.redirect_stderr(stderr):
            yield
    finally:
        root.removeHandler(errors)
    assert stderr.getvalue() == ""
    assert [r.getMessage() for r in errors.records] == []


# -- what arrives --------------------------------------------------------------------

_EOL = st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\r\n", b"", b"\n\r"])
_NAMES = st.sampled_from(
    [b"Content-Length", b"content-length", b"Authorization", b"Expect", b"Transfer-Encoding", b"Host", b"X"]
) | st.binary(max_size=12)
_LENGTHS = st.integers(-5, 10_000).map(lambda n: b"%d" % n) | st.sampled_from(
    [b"\xb2", "٥".encode(), "²".encode(), b"1e3", b"0x10", b" 12 ", b"1,1", b"+1", b"0" * 40 + b"1"]  # noqa: RUF001
)
_VALUES = _LENGTHS | st.sampled_from([b"100-continue", b"chunked", b"Bearer s3cret", b""]) | st.binary(max_size=24)

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
_PARAMS = (
    _JSON
    | st.lists(_JSON, max_size=3)
    | st.dictionaries(
        st.sampled_from(["proto", "remote", "local", "explain", "offset", "limit"]) | st.text(max_size=8),
        _JSON,
        max_size=3,
    )
)
_RPC = st.fixed_dictionaries(
    {
        "jsonrpc": st.sampled_from(["2.0", "1.0", 2, None]),
        "method": st.sampled_from(["tcp_reload", "tcp_mgm:reload", "tcp_list", "tcp_match"]) | _JSON,
    },
    optional={"params": _PARAMS, "id": st.none() | st.integers() | st.text(max_size=150) | _JSON},
)
_BODIES = st.one_of(_JSON, _RPC, st.lists(_RPC, max_size=10)).map(lambda v: json.dumps(v).encode())


@st.composite
def http_like(draw):
    """A request with some of its parts right: deeper into the parser than random bytes get."""
    verb = draw(st.sampled_from([b"POST", b"GET", b"HEAD", b"PUT", b"P\xd3ST", b""]) | st.binary(max_size=8))
    target = draw(st.sampled_from([b"/mi", b"/mi?x=1", b"/", b"*", b"/\xff"]) | st.binary(max_size=16))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"http/1.1"]) | st.binary(max_size=10))
    eol = draw(_EOL)
    headers = draw(st.lists(st.tuples(_NAMES, st.sampled_from([b":", b": ", b" : ", b""]), _VALUES), max_size=6))
    body = draw(_BODIES | st.binary(max_size=300))
    lines = [b" ".join([verb, target, version])] + [name + colon + value for name, colon, value in headers]
    if draw(st.booleans()):  # a Content-Length that tells the truth
        lines.append(b"Content-Length: %d" % len(body))
    return eol.join(lines) + eol + eol + body


ARRIVING = st.binary(max_size=1500) | http_like()


# -- the parser alone ----------------------------------------------------------------


def _parse(chunks):
    parser = mi.RequestParser(LIMITS)
    for chunk in chunks:
        outcome = parser.feed(chunk)
        if outcome is not None:
            return outcome
    return parser.eof()


@given(data=ARRIVING, cuts=st.lists(st.integers(0, 1500), max_size=6))
def test_the_parser_answers_any_bytes_however_they_are_cut(data, cuts):
    bounds = [0, *sorted(cuts), len(data)]
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
    outcome = _parse(chunks)
    assert outcome == _parse([data])  # how the bytes were cut never matters
    if outcome is None:
        assert data == b""  # only silence is closed without an answer
    elif isinstance(outcome, mi.Request):
        assert len(outcome.body) == int(outcome.header("content-length") or 0) <= LIMITS.max_body
    else:
        status, body = outcome
        assert status in (400, 411, 413, 431)
        assert json.loads(body)["error"]["code"] == mi.INVALID_REQUEST


# -- over the wire, both transports --------------------------------------------------


def _final(reply):
    """The reply without the interim ``100 Continue``."""
    while reply.startswith(b"HTTP/1.1 100 "):
        reply = reply.split(b"\r\n\r\n", 1)[1]
    return reply


@settings(deadline=None)
@given(data=ARRIVING)
def test_the_endpoint_answers_any_bytes_and_keeps_serving(endpoint, data):
    threads = threading.active_count()
    with clean():
        reply = _final(exchange(endpoint, data, timeout=10 * LIMITS.request_timeout))
        status = status_of(reply)
        if status is not None:
            head, _, body = reply.partition(b"\r\n\r\n")
            length = int(re.search(rb"\r\nContent-Length: (\d+)\r\n", head + b"\r\n").group(1))
            # the whole body, but none to a HEAD (if it parsed as one)
            assert len(body) in ((0, length) if data.startswith(b"HEAD") else (length,))
            if body:
                assert json.loads(body)["jsonrpc"] == "2.0"
        else:
            assert data == b""
        assert mi.call(endpoint, "tcp_match", ["tcp", "10.9.9.9"])["rule"] == 1
    assert threading.active_count() <= threads + LIMITS.max_connections


# -- the dispatcher on any JSON ------------------------------------------------------


def _strict(text):
    raise AssertionError(f"not JSON: {text}")


def _check_response(answer):
    assert isinstance(answer, dict) and answer["jsonrpc"] == "2.0" and "id" in answer
    assert ("result" in answer) != ("error" in answer)
    if "error" in answer:
        assert isinstance(answer["error"]["code"], int) and isinstance(answer["error"]["message"], str)


@given(body=_BODIES | st.binary(max_size=500))
def test_the_dispatcher_answers_any_body_with_json_rpc(mgr, body):
    with clean():
        status, answer = mi.Dispatcher(mgr, limits=LIMITS).handle(body)
    if status == 204:
        assert answer is None
        return
    assert status == 200 and len(answer) <= LIMITS.max_response
    decoded = json.loads(answer, parse_constant=_strict)
    for response in decoded if isinstance(decoded, list) else [decoded]:
        _check_response(response)
    if isinstance(decoded, list):
        assert 0 < len(decoded) <= LIMITS.max_batch
