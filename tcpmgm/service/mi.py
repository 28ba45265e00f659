"""The admin endpoint: JSON-RPC 2.0 over HTTP, in the style of the OpenSIPS management interface.

Methods:

* ``tcp_reload`` (alias ``tcp_mgm:reload``): reload the rules; returns the report.
  The reloads of one batch run as one reload: each of them gets its answer.
* ``tcp_list``: one page of the rules in service, in the order they are tried;
  params ``offset`` (default 0) and ``limit`` (default and at most
  :attr:`Limits.list_limit`); the answer carries ``total`` and ``next_offset``
  (``None`` on the last page).  :func:`list_all` pages through for a client.
* ``tcp_stats``: how many lookups each rule in service won since the last
  reload, one page in the order of ``tcp_list`` (params ``offset`` and
  ``limit``, at most :attr:`Limits.stats_limit`); the answer carries the
  default profile's count, ``since`` (when that reload put the rules in
  service) and the paging of ``tcp_list``.  :func:`stats_all` pages through.
* ``tcp_match``: which rule wins for a connection; params ``proto``,
  ``remote`` (``ip``, ``ip:port`` or ``[ipv6]:port``), ``local`` (same,
  optional) and ``explain`` (bool; with it, every matching rule and
  ``opensips_rule``, the one real OpenSIPS would pick), by name or by position.
* ``tcp_opensips_check``: what real OpenSIPS would do with the table
  (docs/opensips.md), as ``tcpmgm check --opensips --json`` prints it, with
  one page of its differences: params ``offset`` and ``limit`` (default and
  at most :attr:`Limits.check_limit`), ``differences_total`` and ``next_offset``.
* ``which`` and ``help``: OpenSIPS's discovery methods, with its answers:
  ``which`` lists the methods, ``which command=M`` the parameter sets ``M``
  takes, ``help mi_cmd=M`` what ``M`` does and who exports it (``core`` for
  these two, ``tcpmgm`` for the rest); so OpenSIPS's own clients
  (opensips-cli) work against this endpoint.

One request handler (:class:`Dispatcher`) serves two transports: a thread
per connection (:class:`MIServer`) and an ``asyncio`` server (:func:`serve`)
whose requests run in the loop's executor, so a reload never blocks the loop.
Both read requests with one parser (:class:`RequestParser`) under the same
:class:`Limits`: a whole-request deadline, a cap on open connections (the
next one is answered 503), bounded heads, bodies, batches and responses.
Both bind to 127.0.0.1 by default and refuse a non-loopback address without
a token unless told ``insecure=True``.  With a token, each request must carry
``Authorization: Bearer <token>`` or is answered with HTTP 401 and a JSON-RPC
error.  Whatever arrives, the answer is a JSON-RPC response (or an HTTP error
for non-JSON-RPC traffic) or a closed connection, never a crashed server.

``GET /metrics`` on the same port answers the manager's Prometheus metrics
(:mod:`tcpmgm.service.metrics`, extra ``metrics``; 501 without it), under
the same token as the methods.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hmac
import inspect
import ipaddress
import itertools
import json
import logging
import re
import selectors
import socket
import socketserver
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, Callable, Optional, Union

from ..model.errors import ReloadError, TcpMgmError
from ..model.profile import Profile
from ..opensips.report import check_table
from ..sql.db import extra_requirement, one_line
from .sockets import parse_endpoint

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_URL",
    "METRICS_PATH",
    "Dispatcher",
    "InsecureBindError",
    "Limits",
    "MIConfigError",
    "MIError",
    "MIServer",
    "Request",
    "RequestParser",
    "call",
    "check_bind",
    "list_all",
    "profile_dict",
    "serve",
    "stats_all",
]

# The public module's name (tcpmgm.mi, the facade the README documents), not this file's.
log = logging.getLogger("tcpmgm.mi")

DEFAULT_PORT = 8888  # OpenSIPS's mi_http listens there too
DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}/mi"

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = (
    -32700,
    -32600,
    -32601,
    -32602,
    -32603,
)
SERVER_ERROR = -32000  # the method ran and failed (reload failed, database down)
UNAUTHORIZED = -32001
TOO_LARGE = -32002  # the answer would exceed Limits.max_response
UNKNOWN_COMMAND = 404  # OpenSIPS's code when `which` or `help` is asked about a method it does not have

METRICS_PATH = "/metrics"  # where Prometheus scrapes by default
_JSON = "application/json"

Response = tuple[int, Optional[bytes]]  # HTTP status, body (None: no content)
Reply = tuple[int, Optional[bytes], str]  # a response and its body's content type

MAX_ID_CHARS = 128  # a string id longer than this is an invalid request, so every echoed id is small


class MIError(TcpMgmError):
    """A call to the admin endpoint failed: a JSON-RPC error (``code``) or the transport."""

    def __init__(self, message: str, code: int | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


class MIConfigError(TcpMgmError, ValueError):
    """The endpoint was configured with values it cannot serve under (bad :class:`Limits`)."""


class InsecureBindError(MIConfigError):
    """The endpoint would be reachable beyond this machine with no token guarding it."""


class _RPCError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def profile_dict(profile: Profile) -> dict[str, Any]:
    """A profile as JSON-ready values (flags as 0/1, attrs as an object)."""
    return {name: dict(value) if name == "attrs" else int(value) for name, value in profile.values().items()}


def _error(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "error": error, "id": request_id}


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # ensure_ascii: characters and bytes count the same


def _body(payload: Any) -> bytes:
    return _ENCODER.encode(payload).encode()


def _encode_within(payload: Any, room: int) -> bytes | None:
    """``payload`` as JSON if it takes at most ``room`` bytes, else ``None``, never holding more than that."""
    chunks: list[str] = []
    size = 0
    for chunk in _ENCODER.iterencode(payload):
        size += len(chunk)
        if size > room:
            return None
        chunks.append(chunk)
    return "".join(chunks).encode()


def _cut(text: str, width: int = 40) -> str:
    """``text`` for a message: a client may send a megabyte of method name."""
    return text if len(text) <= width else text[:width] + "…"


def _too_large(limit: int) -> str:
    return f"response too large: over {limit} bytes; ask tcp_list for smaller pages or send smaller batches"


def _max_error_entry(limit: int) -> int:
    """The longest "too large" error a batch entry can need: with the longest id a request may carry
    (128 astral characters, 12 bytes each once escaped).  The dispatcher reserves this much for
    every entry still to come, so that each gets at least this error within ``limit``."""
    return len(_body(_error("\U0010ffff" * MAX_ID_CHARS, TOO_LARGE, _too_large(limit))))


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one client may take of the endpoint; both transports and the dispatcher apply the same values.

    ``request_timeout`` bounds the whole request (line, headers and body),
    however slowly it trickles in, and again the sending of the answer: a
    request on loopback takes milliseconds, so 10 s is generous and still
    frees a stalled connection soon.  ``max_connections`` connections are
    served at once; the next one gets HTTP 503 and is closed.
    """

    request_timeout: float = 10.0
    max_connections: int = 16
    max_head: int = 16 * 1024  # bytes of request line and headers
    max_headers: int = 100
    max_body: int = 1 << 20
    max_batch: int = 100  # requests in one JSON-RPC batch
    list_limit: int = 100  # tcp_list's default and largest page
    # tcp_stats's default and largest page: an entry is two numbers (a page reads the counts
    # of its own rules only), so a million rules take 100 pages, not 10,000.
    stats_limit: int = 10_000
    # tcp_opensips_check's default and largest page of differences: each is under 1 KiB of
    # JSON, so a page stays well inside max_response (a 10,000-rule table can have 20,000).
    check_limit: int = 1000
    max_response: int = 4 << 20  # bytes of one response body
    metrics_rules: int = 50  # rules with a hit sample of their own in /metrics; the rest are summed

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            kinds = (int, float) if field.name == "request_timeout" else (int,)
            if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
                raise MIConfigError(f"Limits.{field.name} must be a positive number, not {value!r}")
        least = 2 + self.max_batch * (_max_error_entry(self.max_response) + 1)
        if self.max_response < least:
            raise MIConfigError(
                f"Limits.max_response must be at least {least} bytes for a batch of "
                f"{self.max_batch}: room for a 'too large' error per entry"
            )


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return len(value) <= MAX_ID_CHARS
    if isinstance(value, int):
        return -(1 << 63) <= value < (1 << 63)
    return value is None


_DECIMAL = re.compile(r"[+-]?[0-9]{1,20}")


def _int_param(name: str, value: Any, low: int, high: int | None) -> int:
    """``value`` as an integer parameter: a JSON integer or, as OpenSIPS's MI takes one (and opensips-cli
    sends every value), a string of decimal digits."""
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f"from {low}" + (f" to {high}" if high is not None else "")
        raise _RPCError(INVALID_PARAMS, f"{name} must be an integer {bounds}")
    return value


class Dispatcher:
    """Turns one HTTP request body into one HTTP response, for any transport."""

    _scraper: tuple[Callable[[], bytes], str] | None = None  # made at the first scrape (metrics are optional)

    def __init__(self, mgr: Any, *, token: str | None = None, limits: Limits | None = None) -> None:
        self.mgr = mgr
        self.limits = limits if limits is not None else Limits()
        self._token = token.encode() if token else None
        self._error_entry = _max_error_entry(self.limits.max_response)
        self.methods: dict[str, Callable[..., Any]] = {
            "tcp_reload": self.tcp_reload,
            "tcp_mgm:reload": self.tcp_reload,
            "tcp_list": self.tcp_list,
            "tcp_match": self.tcp_match,
            "tcp_stats": self.tcp_stats,
            "tcp_opensips_check": self.tcp_opensips_check,
            "which": self.which,
            "help": self.help,
        }
        # Methods a batch runs once, every entry getting that answer: a
        # reload reads the whole table, and 2,000 of them in one request
        # would all read the same table.
        self._once_per_batch = {self.tcp_reload}

    # -- the methods: each one's docstring begins with what `help` answers for it --
    def tcp_reload(self) -> dict[str, Any]:
        """reloads the rules (from the database, or the image served) and answers the report"""
        report = self.mgr.reload()
        return {
            "loaded": report.loaded,
            "rejected": [str(err) for err in report.rejected],
            "warnings": [str(w) for w in report.warnings],
            "seconds": round(report.seconds, 6),
            "schema_version": report.schema_version,
        }

    def tcp_list(self, offset: int = 0, limit: int | None = None) -> dict[str, Any]:
        """lists one page of the rules in service, in the order they are tried"""
        offset = _int_param("offset", offset, 0, None)
        page = _int_param("limit", self.limits.list_limit if limit is None else limit, 1, self.limits.list_limit)
        matcher = self.mgr.matcher  # one rule set for the whole page, whatever a reload does meanwhile
        total = len(matcher)
        start = min(offset, total)
        rules = [rule.to_row() for rule in itertools.islice(matcher, start, start + page)]
        end = start + len(rules)
        return {"rules": rules, "total": total, "offset": offset, "next_offset": end if end < total else None}

    def tcp_stats(self, offset: int = 0, limit: int | None = None) -> dict[str, Any]:
        """answers how many lookups each rule in service won since the last reload, a page in tcp_list's order"""
        offset = _int_param("offset", offset, 0, None)
        page = _int_param("limit", self.limits.stats_limit if limit is None else limit, 1, self.limits.stats_limit)
        matcher, since = self.mgr.service  # the counts and their start from one matcher, whatever a reload does
        total = len(matcher)
        start = min(offset, total)
        counts = matcher.hits(start, start + page)  # the page's counts only, not a dict of every rule
        ids = [rule.id for rule in itertools.islice(matcher, start, start + page)]
        end = start + len(ids)
        return {
            "counting": matcher.count_hits,
            "since": since,
            "default": counts.get(0),
            "hits": [{"id": rule_id, "hits": counts.get(rule_id)} for rule_id in ids],
            "total": total,
            "offset": offset,
            "next_offset": end if end < total else None,
        }

    def tcp_match(
        self, proto: str | None, remote: str | None = None, local: str | None = None, explain: bool = False
    ) -> dict[str, Any]:
        """answers which rule wins for a connection, and with explain every rule that matches"""
        for name, value in (("proto", proto), ("remote", remote), ("local", local)):
            if value is not None and not isinstance(value, str):
                raise _RPCError(INVALID_PARAMS, f"{name} must be a string")
        if not isinstance(explain, bool):  # or OpenSIPS's form of a flag: the integer 0 or 1
            try:
                explain = bool(_int_param("explain", explain, 0, 1))
            except _RPCError:
                raise _RPCError(INVALID_PARAMS, "explain must be true or false (or 1 or 0)") from None
        try:
            remote_ip, remote_port = parse_endpoint(remote) if remote else (None, 0)
            # The local side may name a socket tag, as a rule's local_addr may.
            listeners = getattr(self.mgr, "listeners", None)
            local_ip, local_port = parse_endpoint(local, listeners=listeners) if local else (None, 0)
            found = self.mgr.explain(proto, remote_ip, remote_port, local_ip, local_port)
            # and with explain the rule OpenSIPS would pick (docs/opensips.md), 0 for none
            opensips = (
                self.mgr.opensips_order.lookup(proto, remote_ip, remote_port, local_ip, local_port).id if explain else 0
            )
        except (TypeError, ValueError) as exc:
            raise _RPCError(INVALID_PARAMS, str(exc)) from None
        result: dict[str, Any] = {"rule": found.profile.id, "profile": profile_dict(found.profile)}
        if explain:
            result["matches"] = [
                {"rule": rule.id, "filters": rule.describe(), "reason": reason} for rule, reason in found.matches
            ]
            result["opensips_rule"] = opensips
        return result

    def tcp_opensips_check(self, offset: int = 0, limit: int | None = None) -> Any:
        """answers what real OpenSIPS would do with the table: where it picks another rule, its pitfalls"""
        offset = _int_param("offset", offset, 0, None)
        page = _int_param("limit", self.limits.check_limit if limit is None else limit, 1, self.limits.check_limit)
        # The table as it is now, as `tcpmgm check --opensips` reads it: the pitfalls are in the rows as
        # stored, which the rules in service no longer hold.  Each page reads it anew.
        return check_table(self.mgr).to_json(offset=offset, limit=page)

    # OpenSIPS's core answers `which` and `help` so (its mi/mi_core.c and mi/mi.c, 4.1.0-dev), and its
    # clients rely on them: opensips-cli lists the methods with `which` before it runs any.
    def which(self, command: str | None = None) -> list[Any]:
        """lists all available MI commands"""
        if command is None:
            # Every name that answers, an alias too: opensips-cli runs only the names listed here.
            return list(self.methods)
        if not isinstance(command, str):
            raise _RPCError(INVALID_PARAMS, "command must be a string")
        if command.endswith(":"):  # a module's prefix: the methods under it
            names = [name for name in self.methods if name.startswith(command)]
            if not names:
                raise _RPCError(UNKNOWN_COMMAND, "unknown MI command")
            return names
        return [list(recipe) for recipe in _recipes(self._method(command))]

    def help(self, mi_cmd: str | None = None) -> str | dict[str, str]:
        """prints information about MI commands usage"""
        if mi_cmd is None:
            return "Usage: help mi_cmd - returns information about 'mi_cmd'"
        if not isinstance(mi_cmd, str):
            raise _RPCError(INVALID_PARAMS, "mi_cmd must be a string")
        function = self._method(mi_cmd)
        doc = inspect.getdoc(function)
        # OpenSIPS names the module that registered the command: "core" for its own (mi/mi_core.c
        # registers which and help under that name, and mi/mi.c's help answers it).
        exporter = "core" if function in (self.which, self.help) else "tcpmgm"
        return {"Help": doc.split("\n", 1)[0] if doc else "not available for this command", "Exported by": exporter}

    def _method(self, name: str) -> Callable[..., Any]:
        function = self.methods.get(name)
        if function is None:
            raise _RPCError(UNKNOWN_COMMAND, "unknown MI command")
        return function

    # -- the protocol ------------------------------------------------------------
    def authorized(self, authorization: str | None) -> bool:
        if self._token is None:
            return True
        scheme, _, credential = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(credential.strip().encode(), self._token)

    def scrape(self, authorization: str | None = None) -> Reply:
        """The answer to ``GET /metrics``: the text exposition, or why there is none."""
        if not self.authorized(authorization):
            return 401, _body(_error(None, UNAUTHORIZED, "unauthorized: missing or wrong bearer token")), _JSON
        if self._scraper is None:
            try:
                from .metrics import CONTENT_TYPE, scraper
            except ImportError as exc:  # not installed, or a prometheus-client older than the extra asks for
                requirement = extra_requirement("metrics") or "prometheus-client"
                missing = (
                    f"/metrics needs the extra 'metrics' ({one_line(exc)}): pip install {requirement} "
                    "(or, from a tcpmgm checkout, pip install '.[metrics]')"
                )
                return (*_fail(501, missing), _JSON)
            self._scraper = (scraper(self.mgr, top_rules=self.limits.metrics_rules), CONTENT_TYPE)
        render, content_type = self._scraper
        try:
            return 200, render(), content_type
        except Exception as exc:  # a bug, in tcpmgm or a manager given to the endpoint: keep the traceback
            log.exception("MI scrape of %s failed", METRICS_PATH)
            return (*_fail(500, f"internal error: {type(exc).__name__}: {exc}"), _JSON)

    def handle(self, body: bytes, authorization: str | None = None) -> Response:
        """The HTTP status and body answering a POSTed ``body``; the body is never over ``max_response``."""
        if not self.authorized(authorization):
            return 401, _body(_error(None, UNAUTHORIZED, "unauthorized: missing or wrong bearer token"))
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return 200, _body(_error(None, PARSE_ERROR, f"parse error: {exc}"))
        except RecursionError:  # "[[[[..." fits in max_body and nests deeper than json can follow
            return 200, _body(_error(None, PARSE_ERROR, "parse error: nested too deeply"))
        if not isinstance(payload, list):
            return self._respond([payload], batch=False)
        if not payload:
            return 200, _body(_error(None, INVALID_REQUEST, "invalid request: empty batch"))
        if len(payload) > self.limits.max_batch:
            return 200, _body(
                _error(
                    None,
                    INVALID_REQUEST,
                    f"invalid request: a batch of {len(payload)} requests; at most {self.limits.max_batch}",
                )
            )
        return self._respond(payload, batch=True)

    def _respond(self, requests: list[Any], batch: bool) -> Response:
        """Run ``requests`` in order and encode each answer at once, within ``max_response`` in all.

        Each entry may use what the entries before it left, less a reserve
        of one "too large" error for every entry after it; an answer that
        does not fit becomes that error.  So the body never exceeds the
        bound, and no answer is held in memory longer than its encoding.
        """
        room = self.limits.max_response - (2 if batch else 0)  # the brackets of a batch
        pieces: list[bytes] = []
        shared: dict[Callable[..., Any], tuple[Any, _RPCError | None]] = {}
        for index, request in enumerate(requests):
            answer = self._one(request, shared)
            if answer is None:
                continue
            separator = 1 if pieces else 0
            reserve = (len(requests) - index - 1) * (self._error_entry + 1)
            piece = _encode_within(answer, room - separator - reserve)
            if piece is None:
                piece = _body(_error(answer["id"], TOO_LARGE, _too_large(self.limits.max_response)))
            room -= len(piece) + separator
            pieces.append(piece)
        if not pieces:
            return 204, None
        return 200, (b"[" + b",".join(pieces) + b"]" if batch else pieces[0])

    def _one(
        self, request: Any, shared: dict[Callable[..., Any], tuple[Any, _RPCError | None]]
    ) -> dict[str, Any] | None:
        """The response object for one request (``None`` for a notification)."""
        if not isinstance(request, dict):
            return _error(None, INVALID_REQUEST, "invalid request: not an object")
        request_id = request.get("id")
        if not _valid_id(request_id):
            return _error(
                None,
                INVALID_REQUEST,
                f"invalid request: id must be null, a 64-bit integer or a string of at most {MAX_ID_CHARS} characters",
            )
        method, params = request.get("method"), request.get("params", [])
        if request.get("jsonrpc") != "2.0" or not isinstance(method, str):
            return _error(request_id, INVALID_REQUEST, "invalid request: needs jsonrpc '2.0' and a method name")
        if not isinstance(params, (list, dict)):
            return _error(request_id, INVALID_REQUEST, "invalid request: params must be an array or an object")
        try:
            result = self._call(method, params, shared)
        except _RPCError as exc:
            response = _error(request_id, exc.code, exc.message, exc.data)
        else:
            response = {"jsonrpc": "2.0", "result": result, "id": request_id}
        return response if "id" in request else None

    def _call(self, method: str, params: Any, shared: dict[Callable[..., Any], tuple[Any, _RPCError | None]]) -> Any:
        function = self.methods.get(method)
        if function is None:
            raise _RPCError(METHOD_NOT_FOUND, f"method not found: {_cut(method)!r} (known: {', '.join(self.methods)})")
        try:
            bound = (
                inspect.signature(function).bind(*params)
                if isinstance(params, list)
                else inspect.signature(function).bind(**params)
            )
        except TypeError as exc:
            raise _RPCError(INVALID_PARAMS, f"invalid params for {_cut(method)}: {exc}") from None
        if function not in self._once_per_batch:
            return self._run(method, function, bound)
        if function not in shared:
            try:
                shared[function] = (self._run(method, function, bound), None)
            except _RPCError as exc:
                shared[function] = (None, exc)
        result, error = shared[function]
        if error is not None:
            raise error
        return result

    def _run(self, method: str, function: Callable[..., Any], bound: inspect.BoundArguments) -> Any:
        try:
            return function(*bound.args, **bound.kwargs)
        except _RPCError:
            raise
        except ReloadError as exc:
            raise _RPCError(SERVER_ERROR, str(exc), {"rejected": _rejected(exc)}) from None
        except TcpMgmError as exc:
            raise _RPCError(SERVER_ERROR, str(exc)) from None
        except Exception as exc:
            log.exception("MI method %s failed", method)
            raise _RPCError(INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {exc}") from None


def _recipes(function: Callable[..., Any]) -> list[tuple[str, ...]]:
    """The sets of parameter names ``function`` takes, as OpenSIPS's recipes: the required ones
    (which a signature puts first) with each choice of the optional ones, fewest first."""
    parameters = inspect.signature(function).parameters.values()
    required = tuple(p.name for p in parameters if p.default is inspect.Parameter.empty)
    optional = [p.name for p in parameters if p.default is not inspect.Parameter.empty]
    chosen = itertools.chain.from_iterable(itertools.combinations(optional, n) for n in range(len(optional) + 1))
    return [required + extra for extra in chosen]


def _rejected(exc: ReloadError) -> list[str]:
    report = exc.report
    return [str(err) for err in report.rejected] if report is not None else []


# -- who may reach it ---------------------------------------------------------------


def _is_loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is loopback too
    return (mapped or address).is_loopback


def _loopback_only(host: str | None) -> bool:
    """Whether binding ``host`` leaves the endpoint reachable from this machine alone."""
    if not host:  # "" and None bind every interface
        return False
    try:
        return _is_loopback(ipaddress.ip_address(host))
    except ValueError:
        pass  # a name: every address it resolves to must be loopback
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False  # unresolvable: nothing shows it stays on this machine
    return bool(infos) and all(_is_loopback(ipaddress.ip_address(info[4][0])) for info in infos)


def check_bind(host: str | None, *, token: str | None, insecure: bool) -> None:
    """Refuse to serve ``host`` beyond loopback without a token, unless ``insecure`` (then a warning).

    Both transports call it before they bind anything: without a token,
    anyone who reaches the endpoint can reload and read the rules.
    """
    if token or _loopback_only(host):
        return
    if not insecure:
        raise InsecureBindError(
            f"refusing to serve the MI endpoint on {host!r} without a token: it is reachable beyond this "
            "machine; give a token, bind 127.0.0.1 or ::1, or pass insecure=True"
        )
    log.warning(
        "MI endpoint on %r without a token (insecure=True): anyone who reaches it can reload and read the rules", host
    )


# -- HTTP, the part both transports share -------------------------------------------


@dataclasses.dataclass(frozen=True)
class Request:
    """One parsed HTTP request; header names lower-case, each with every value it was sent with."""

    verb: str
    target: str
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[0] if values else None


Outcome = Union[Request, Response]  # what reading a request ends with: the request, or the error to answer

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rf"({_TOKEN}) ([\x21-\x7e]+) HTTP/1\.[01]")
# No space before the colon, no line folding, no control characters (RFC 9112 section 5).
_HEADER_LINE = re.compile(rf"({_TOKEN}):[ \t]*([\t\x20-\x7e\x80-\xff]*?)[ \t]*")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(r"\r?\n")
# ASCII digits only (str.isdigit() also takes '²' and '٥'), and few of them.  # noqa: RUF003
_CONTENT_LENGTH = re.compile(r"[0-9]{1,20}")
_SINGLE = ("Content-Length", "Authorization", "Host")  # a repeat of these is ambiguous: 400
_CHUNK = 1 << 16
_LINGER = 2.0  # seconds, at most, to wait for a client to close after its answer
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _fail(status: int, message: str) -> Response:
    return status, _body(_error(None, INVALID_REQUEST, message))


class RequestParser:
    """Reads one HTTP/1.x request from the bytes it is fed, within :class:`Limits`; no I/O of its own.

    :meth:`feed` returns ``None`` while it needs more, then the
    :class:`Request` or the error response to answer (400 malformed or
    ambiguous framing, 411, 413, 431).  A transport feeds it what it
    receives, under the whole-request deadline.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._buffer = bytearray()
        self._scanned = 0  # where the search for the end of the head resumes
        self._head: tuple[str, str, dict[str, list[str]]] | None = None
        self._length = 0
        self._continue = False

    def feed(self, data: bytes) -> Outcome | None:
        self._buffer += data
        if self._head is None:
            end = _HEAD_END.search(self._buffer, max(0, self._scanned - 3))
            if end is None or end.start() > self.limits.max_head:
                self._scanned = len(self._buffer)
                if len(self._buffer) > self.limits.max_head:
                    return _fail(431, f"request head larger than {self.limits.max_head} bytes")
                return None
            failure = self._parse_head(self._buffer[: end.start()].decode("latin-1"))
            del self._buffer[: end.end()]
            if failure is not None:
                return failure
        if len(self._buffer) < self._length:
            return None
        verb, target, headers = self._head  # type: ignore[misc]  # set by _parse_head
        return Request(verb, target, headers, bytes(self._buffer[: self._length]))

    def take_continue(self) -> bool:
        """Whether to send ``100 Continue`` now (once): the head asked for it before sending its body."""
        wanted, self._continue = self._continue, False
        return wanted

    def eof(self) -> Response | None:
        """What to answer when the client stops sending: nothing if it sent nothing."""
        if not self._buffer and self._head is None:
            return None
        return _fail(400, "the request ended before it was complete")

    def _parse_head(self, head: str) -> Response | None:
        lines = _LINE_END.split(head)
        request_line = _REQUEST_LINE.fullmatch(lines[0])
        if request_line is None:
            return _fail(400, "malformed request line: expected METHOD TARGET HTTP/1.x")
        if len(lines) - 1 > self.limits.max_headers:
            return _fail(431, f"more than {self.limits.max_headers} header lines")
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            field = _HEADER_LINE.fullmatch(line)
            if field is None:
                return _fail(400, "malformed header line")
            headers.setdefault(field.group(1).lower(), []).append(field.group(2))
        for name in _SINGLE:
            if len(headers.get(name.lower(), ())) > 1:
                return _fail(400, f"repeated {name} header")
        if "transfer-encoding" in headers:
            return _fail(411, "Transfer-Encoding is not supported: send the body with a Content-Length")
        length = headers.get("content-length")
        if length is not None:
            if _CONTENT_LENGTH.fullmatch(length[0]) is None:
                return _fail(400, "Content-Length must be a number in ASCII digits")
            self._length = int(length[0])
            if self._length > self.limits.max_body:
                return _fail(413, f"request larger than {self.limits.max_body} bytes")
        self._continue = self._length > 0 and any(v.lower() == "100-continue" for v in headers.get("expect", ()))
        self._head = (request_line.group(1), request_line.group(2), headers)
        return None


def _answer(dispatcher: Dispatcher, path: str, outcome: Outcome) -> Reply:
    """The reply to what reading a request ended with: a scrape of /metrics, or :func:`_answer_rpc`'s."""
    # An MI path of /metrics keeps it for JSON-RPC: the scrape is the endpoint's addition, not its replacement.
    if isinstance(outcome, Request) and outcome.target.split("?", 1)[0] == METRICS_PATH and path != METRICS_PATH:
        if outcome.verb not in ("GET", "HEAD"):
            return (*_fail(405, f"{METRICS_PATH} answers GET"), _JSON)
        return dispatcher.scrape(outcome.header("authorization"))
    return (*_answer_rpc(dispatcher, path, outcome), _JSON)


def _answer_rpc(dispatcher: Dispatcher, path: str, outcome: Outcome) -> Response:
    """The response to what reading a request ended with: its error, or the method, path and dispatcher's answer."""
    if not isinstance(outcome, Request):
        return outcome
    if outcome.target.split("?", 1)[0] != path:
        return 404, _body(_error(None, INVALID_REQUEST, f"no endpoint at {_cut(outcome.target)!r}; POST to {path}"))
    if outcome.verb != "POST":
        return 405, _body(_error(None, INVALID_REQUEST, "JSON-RPC requests are POSTed"))
    if "content-length" not in outcome.headers:
        return 411, _body(_error(None, INVALID_REQUEST, "Content-Length required"))
    return dispatcher.handle(outcome.body, outcome.header("authorization"))


def _timed_out(limits: Limits) -> Response:
    return _fail(408, f"the request did not arrive within {limits.request_timeout} s")


_REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


def _response_bytes(status: int, body: bytes | None, content_type: str = _JSON, *, head_only: bool = False) -> bytes:
    head = [f"HTTP/1.1 {status} {_REASONS[status]}", f"Content-Length: {len(body or b'')}", "Connection: close"]
    if body is not None:
        head.append(f"Content-Type: {content_type}")
    if status == 401:
        head.append('WWW-Authenticate: Bearer realm="tcpmgm"')
    if status == 503:
        head.append("Retry-After: 1")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + (b"" if head_only or body is None else body)


_BUSY = _response_bytes(503, _body(_error(None, SERVER_ERROR, "busy: too many connections to the MI endpoint")))


def _drain_budget(limits: Limits) -> int:
    return limits.max_head + limits.max_body


# -- transport 1: a thread per connection --------------------------------------------


def _serve_socket(sock: socket.socket, dispatcher: Dispatcher, path: str, limits: Limits) -> None:
    """One connection: read the request within the deadline, answer, close."""
    deadline = time.monotonic() + limits.request_timeout
    parser = RequestParser(limits)
    outcome: Outcome | None = None
    try:
        while outcome is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                outcome = _timed_out(limits)
                break
            sock.settimeout(remaining)
            try:
                data = sock.recv(_CHUNK)
            except socket.timeout:
                outcome = _timed_out(limits)
                break
            if not data:
                outcome = parser.eof()
                if outcome is None:
                    return
                break
            outcome = parser.feed(data)
            if outcome is None and parser.take_continue():
                sock.sendall(_CONTINUE)
        status, body, content_type = _answer(dispatcher, path, outcome)
        head_only = isinstance(outcome, Request) and outcome.verb == "HEAD"
        sock.settimeout(limits.request_timeout)  # sendall's timeout bounds the whole send (Python >= 3.5)
        sock.sendall(_response_bytes(status, body, content_type, head_only=head_only))
        _linger_socket(sock, limits)
    except OSError:
        pass  # the client left, or did not take its answer in time: nothing more to tell it


def _linger_socket(sock: socket.socket, limits: Limits) -> None:
    # Closing with unread bytes (a request answered before its end, bytes
    # past it) resets the connection, which can destroy the answer in
    # flight.  So end our side, then drop what the client still sends until
    # it closes too, for a bounded time and size.
    sock.shutdown(socket.SHUT_WR)
    end = time.monotonic() + min(_LINGER, limits.request_timeout)
    budget = _drain_budget(limits)
    while budget > 0 and (remaining := end - time.monotonic()) > 0:
        sock.settimeout(remaining)
        data = sock.recv(_CHUNK)
        if not data:
            return
        budget -= len(data)


class _Connection(socketserver.BaseRequestHandler):
    server: _ThreadServer

    def handle(self) -> None:
        _serve_socket(self.request, self.server.dispatcher, self.server.path, self.server.limits)


class _ThreadServer(socketserver.TCPServer):
    allow_reuse_address = True
    # getsockname() of an AF_INET or AF_INET6 socket (with flow info and scope id).
    server_address: tuple[str, int] | tuple[str, int, int, int]

    def __init__(self, address: tuple[str, int], dispatcher: Dispatcher, path: str, limits: Limits) -> None:
        self.dispatcher = dispatcher
        self.path = path
        self.limits = limits
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Connection)
        self._refusals = _Refusals(limits)

    def server_close(self) -> None:
        super().server_close()
        self._refusals.close()

    def process_request(self, request: Any, client_address: Any) -> None:
        # A thread per connection, at most max_connections of them.  Beyond
        # that, this (the accepting) thread answers 503 without blocking.
        if not self._slots.acquire(blocking=False):
            self._refusals.refuse(request)
            return
        try:
            threading.Thread(
                target=self._serve_one, args=(request, client_address), name="tcpmgm-mi-connection", daemon=True
            ).start()
        except RuntimeError:  # no thread to be had: as busy as over the cap
            self._slots.release()
            self._refusals.refuse(request)

    def _serve_one(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver's own prints a traceback on stderr; a library logs.
        log.exception("MI connection from %s failed", client_address)


class _Refusals:
    """Connections over the cap: answered 503 at once, then drained in one thread of their own.

    The accepting thread must not block, yet closing a socket whose client is
    still writing its request (urllib writes it all before it reads) resets
    the connection, and the client sees a broken pipe instead of "busy".  So
    each refused socket lingers as :func:`_linger_socket` does, for as long
    and as many bytes, in this one thread; at most ``max_connections`` of them
    at a time, and beyond that a refusal closes at once as before.
    """

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._selector = selectors.DefaultSelector()
        self._wakeup, self._waker = socket.socketpair()
        for end in (self._wakeup, self._waker):
            end.setblocking(False)
        self._selector.register(self._wakeup, selectors.EVENT_READ)
        self._arrived: collections.deque[socket.socket] = collections.deque()  # appends and pops are atomic
        self._draining: dict[socket.socket, tuple[float, int]] = {}  # deadline, bytes still accepted
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="tcpmgm-mi-refusals", daemon=True)
        self._thread.start()

    def refuse(self, sock: socket.socket) -> None:
        """Answer ``sock`` 503 and hand it to the draining thread (never blocks)."""
        try:
            sock.setblocking(False)
            sock.send(_BUSY)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        self._arrived.append(sock)
        self._wake()

    def close(self) -> None:
        self._closing = True
        self._wake()
        self._thread.join()
        for sock in [*self._draining, *self._arrived]:
            sock.close()
        self._selector.close()
        self._wakeup.close()
        self._waker.close()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # its buffer full of wake-ups already
            self._waker.send(b"\0")

    def _run(self) -> None:
        while not self._closing:
            deadlines = [deadline for deadline, _ in self._draining.values()]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            for key, _ in self._selector.select(timeout):
                if key.data is None:
                    self._take_wakeups()
                else:
                    self._drain(key.data)
            self._take_arrived()
            now = time.monotonic()
            for sock in [sock for sock, (deadline, _) in self._draining.items() if deadline <= now]:
                self._forget(sock)

    def _take_wakeups(self) -> None:
        try:
            while self._wakeup.recv(_CHUNK):
                pass
        except BlockingIOError:
            pass  # all taken

    def _take_arrived(self) -> None:
        linger = min(_LINGER, self._limits.request_timeout)
        while self._arrived:
            sock = self._arrived.popleft()
            if len(self._draining) >= self._limits.max_connections:
                sock.close()  # too many lingering already: a reset is the lesser harm
                continue
            self._draining[sock] = (time.monotonic() + linger, _drain_budget(self._limits))
            self._selector.register(sock, selectors.EVENT_READ, data=sock)

    def _drain(self, sock: socket.socket) -> None:
        deadline, budget = self._draining[sock]
        try:
            data = sock.recv(_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data or len(data) >= budget:
            self._forget(sock)  # the client closed (or sent more than a request may hold)
        else:
            self._draining[sock] = (deadline, budget - len(data))

    def _forget(self, sock: socket.socket) -> None:
        del self._draining[sock]
        self._selector.unregister(sock)
        sock.close()


class MIServer:
    """The admin endpoint in a background thread: ``start()``, ``stop()``, or a ``with`` block."""

    def __init__(
        self,
        mgr: Any,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        token: str | None = None,
        path: str = "/mi",
        limits: Limits | None = None,
        insecure: bool = False,
    ) -> None:
        check_bind(host, token=token, insecure=insecure)
        self.dispatcher = Dispatcher(mgr, token=token, limits=limits)
        self._address = (host, port)
        self._path = path
        self._server: _ThreadServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the MI server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}{self._path}"

    def start(self) -> MIServer:
        self._server = _ThreadServer(self._address, self.dispatcher, self._path, self.dispatcher.limits)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="tcpmgm-mi",
            daemon=True,
        )
        self._thread.start()
        log.info("MI endpoint listening on %s", self.url)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None  # start() sets both
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self) -> MIServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


# -- transport 2: an asyncio loop ----------------------------------------------------


async def _serve_stream(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dispatcher: Dispatcher, path: str, limits: Limits
) -> None:
    """One connection, as :func:`_serve_socket` does it; the dispatcher runs in the loop's executor."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.request_timeout
    parser = RequestParser(limits)
    outcome: Outcome | None = None
    try:
        while outcome is None:
            try:
                data = await asyncio.wait_for(reader.read(_CHUNK), deadline - loop.time())
            except asyncio.TimeoutError:
                outcome = _timed_out(limits)
                break
            if not data:
                outcome = parser.eof()
                if outcome is None:
                    return
                break
            outcome = parser.feed(data)
            if outcome is None and parser.take_continue():
                writer.write(_CONTINUE)
        if isinstance(outcome, Request):
            status, body, content_type = await loop.run_in_executor(None, _answer, dispatcher, path, outcome)
        else:
            (status, body), content_type = outcome, _JSON
        head_only = isinstance(outcome, Request) and outcome.verb == "HEAD"
        writer.write(_response_bytes(status, body, content_type, head_only=head_only))
        await asyncio.wait_for(writer.drain(), limits.request_timeout)
        await _linger_stream(reader, writer, limits)
    except (OSError, asyncio.TimeoutError):
        pass  # the client left, or did not take its answer in time: nothing more to tell it
    finally:
        writer.close()


async def _linger_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limits: Limits) -> None:
    # As _linger_socket: drain an early-answered client instead of resetting it.
    if writer.can_write_eof():
        writer.write_eof()
    loop = asyncio.get_running_loop()
    end = loop.time() + min(_LINGER, limits.request_timeout)
    budget = _drain_budget(limits)
    while budget > 0:
        data = await asyncio.wait_for(reader.read(_CHUNK), end - loop.time())
        if not data:
            return
        budget -= len(data)


async def serve(
    mgr: Any,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    token: str | None = None,
    path: str = "/mi",
    limits: Limits | None = None,
    insecure: bool = False,
) -> asyncio.AbstractServer:
    """The admin endpoint on the running loop; close the returned server to stop it."""
    check_bind(host, token=token, insecure=insecure)
    dispatcher = Dispatcher(mgr, token=token, limits=limits)
    active = refused = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active, refused
        if active >= dispatcher.limits.max_connections:
            writer.write(_BUSY)
            # Lingers as the thread transport's refusals do (see _Refusals), as many at most.
            if refused < dispatcher.limits.max_connections:
                refused += 1
                try:
                    await _linger_stream(reader, writer, dispatcher.limits)
                except (OSError, asyncio.TimeoutError):
                    pass
                finally:
                    refused -= 1
            writer.close()
            return
        active += 1
        try:
            await _serve_stream(reader, writer, dispatcher, path, dispatcher.limits)
        except Exception:
            log.exception("MI connection failed")
        finally:
            active -= 1

    return await asyncio.start_server(handle, host, port)


# -- the client ---------------------------------------------------------------------


def call(url: str, method: str, params: Any = None, *, token: str | None = None, timeout: float = 30.0) -> Any:
    """Call ``method`` on the endpoint at ``url``; its result, or :class:`MIError`."""
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 1}
    if params is not None:
        request["params"] = params
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        http_request = urllib.request.Request(url, data=_body(request), headers=headers, method="POST")
    except ValueError as exc:
        raise MIError(f"bad MI URL {url!r}: {exc}") from None
    try:
        with urllib.request.urlopen(http_request, timeout=timeout) as reply:
            raw = reply.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        if not raw:
            raise MIError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MIError(f"cannot reach the MI endpoint at {url}: {reason}") from None
    try:
        answer = json.loads(raw)
    except ValueError:
        raise MIError(f"{url} did not answer with JSON-RPC: {raw[:200]!r}") from None
    if not isinstance(answer, dict):
        raise MIError(f"{url} did not answer with a JSON-RPC response object")
    if "error" in answer:
        error = answer["error"] or {}
        raise MIError(
            f"{method}: {error.get('message', 'error')} (code {error.get('code')})",
            error.get("code"),
            error.get("data"),
        )
    return answer.get("result")


def _pages(url: str, method: str, entries: str, *, token: str | None, timeout: float) -> Iterator[dict[str, Any]]:
    """The pages of a paged method (``tcp_list``, ``tcp_stats``) along their ``next_offset``,
    each checked to hold its list of ``entries`` and to move forward."""
    offset = 0
    while True:
        page = call(url, method, {"offset": offset}, token=token, timeout=timeout)
        following = page.get("next_offset") if isinstance(page, dict) else None
        if (
            not isinstance(page, dict)
            or not isinstance(page.get(entries), list)
            or not (following is None or (isinstance(following, int) and following > offset))
        ):
            raise MIError(f"{url}: {method} did not answer with a page after offset {offset}")
        yield page
        if following is None:
            return
        offset = following


def list_all(url: str, *, token: str | None = None, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every rule in service at ``url``, paging ``tcp_list`` along its ``next_offset``.

    Each page comes from the rules in service when it is asked for: a
    reload between two pages shows in the pages after it.
    """
    return [rule for page in _pages(url, "tcp_list", "rules", token=token, timeout=timeout) for rule in page["rules"]]


def stats_all(url: str, *, token: str | None = None, timeout: float = 30.0, attempts: int = 3) -> dict[str, Any]:
    """``tcp_stats`` paged through: one answer with every rule's entry under ``hits``.

    The pages must come from one matcher: when ``since`` changes between two of
    them (a reload), the counts restarted at zero, so the paging starts over,
    up to ``attempts`` times.
    """
    for _ in range(attempts):
        pages = _pages(url, "tcp_stats", "hits", token=token, timeout=timeout)
        first = next(pages)
        entries: list[dict[str, Any]] = list(first["hits"])
        for page in pages:
            if page.get("since") != first.get("since"):
                break  # reloaded between two pages: start over
            entries.extend(page["hits"])
        else:
            return {**first, "hits": entries, "offset": 0, "next_offset": None}
    raise MIError(f"{url}: the rules were reloaded during each of {attempts} attempts to read tcp_stats")
