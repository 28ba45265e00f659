"""The admin endpoint: JSON-RPC 2.0 over HTTP, in the style of the OpenSIPS management interface.

Methods:

* ``tcp_reload`` (alias ``tcp_mgm:reload``): reload the rules; returns the report.
* ``tcp_list``: the rules in service, in the order they are tried.
* ``tcp_match``: which rule wins for a connection; params ``proto``,
  ``remote`` (``ip``, ``ip:port`` or ``[ipv6]:port``), ``local`` (same,
  optional) and ``explain`` (bool), by name or by position.

One request handler (:class:`Dispatcher`) serves two transports: a
``http.server`` in a thread (:class:`MIServer`) and an ``asyncio`` server
(:func:`serve`) whose requests run in the loop's executor, so a reload never
blocks the loop.  Both bind to 127.0.0.1 by default.  With a token, each
request must carry ``Authorization: Bearer <token>`` or is answered with
HTTP 401 and a JSON-RPC error.  Whatever arrives, the answer is a JSON-RPC
response (or an HTTP error for non-JSON-RPC traffic), never a crashed server.
"""

from __future__ import annotations

import asyncio
import hmac
import http.server
import inspect
import json
import logging
import socket
import threading
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from .errors import ReloadError, TcpMgmError
from .profile import Profile
from .sockets import parse_endpoint

__all__ = ["Dispatcher", "MIServer", "MIError", "serve", "call", "profile_dict", "DEFAULT_PORT", "DEFAULT_URL"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 8888  # OpenSIPS's mi_http listens there too
DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}/mi"
MAX_BODY = 1 << 20
REQUEST_DEADLINE = 30.0  # seconds a client gets to send its request (both transports)

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = (
    -32700, -32600, -32601, -32602, -32603,
)
SERVER_ERROR = -32000    # the method ran and failed (reload failed, database down)
UNAUTHORIZED = -32001

Response = Tuple[int, Optional[bytes]]  # HTTP status, body (None: no content)


class MIError(TcpMgmError):
    """A call to the admin endpoint failed: a JSON-RPC error (``code``) or the transport."""

    def __init__(self, message: str, code: Optional[int] = None, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


class _RPCError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def profile_dict(profile: Profile) -> Dict[str, Any]:
    """A profile as JSON-ready values (flags as 0/1, attrs as an object)."""
    return {
        name: dict(value) if name == "attrs" else int(value)
        for name, value in profile.values().items()
    }


def _error(request_id: Any, code: int, message: str, data: Any = None) -> Dict[str, Any]:
    error: Dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "error": error, "id": request_id}


def _body(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


class Dispatcher:
    """Turns one HTTP request body into one HTTP response, for any transport."""

    def __init__(self, mgr: Any, *, token: Optional[str] = None) -> None:
        self.mgr = mgr
        self._token = token.encode() if token else None
        self.methods: Dict[str, Callable[..., Any]] = {
            "tcp_reload": self.tcp_reload,
            "tcp_mgm:reload": self.tcp_reload,
            "tcp_list": self.tcp_list,
            "tcp_match": self.tcp_match,
        }

    # -- the methods -------------------------------------------------------------
    def tcp_reload(self) -> Dict[str, Any]:
        report = self.mgr.reload()
        return {
            "loaded": report.loaded,
            "rejected": [str(err) for err in report.rejected],
            "warnings": [str(w) for w in report.warnings],
            "seconds": round(report.seconds, 6),
            "schema_version": report.schema_version,
        }

    def tcp_list(self) -> Dict[str, Any]:
        return {"rules": [rule.to_row() for rule in self.mgr.matcher]}

    def tcp_match(self, proto: Optional[str], remote: Optional[str] = None,
                  local: Optional[str] = None, explain: bool = False) -> Dict[str, Any]:
        for name, value in (("proto", proto), ("remote", remote), ("local", local)):
            if value is not None and not isinstance(value, str):
                raise _RPCError(INVALID_PARAMS, f"{name} must be a string")
        if not isinstance(explain, bool):
            raise _RPCError(INVALID_PARAMS, "explain must be true or false")
        try:
            remote_ip, remote_port = parse_endpoint(remote) if remote else (None, 0)
            local_ip, local_port = parse_endpoint(local) if local else (None, 0)
            found = self.mgr.explain(proto, remote_ip, remote_port, local_ip, local_port)
        except (TypeError, ValueError) as exc:
            raise _RPCError(INVALID_PARAMS, str(exc)) from None
        result: Dict[str, Any] = {"rule": found.profile.id, "profile": profile_dict(found.profile)}
        if explain:
            result["matches"] = [
                {"rule": rule.id, "filters": rule.describe(), "reason": reason} for rule, reason in found.matches
            ]
        return result

    # -- the protocol ------------------------------------------------------------
    def authorized(self, authorization: Optional[str]) -> bool:
        if self._token is None:
            return True
        scheme, _, credential = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(credential.strip().encode(), self._token)

    def handle(self, body: bytes, authorization: Optional[str] = None) -> Response:
        """The HTTP status and body answering a POSTed ``body``."""
        if not self.authorized(authorization):
            return 401, _body(_error(None, UNAUTHORIZED, "unauthorized: missing or wrong bearer token"))
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return 200, _body(_error(None, PARSE_ERROR, f"parse error: {exc}"))
        except RecursionError:  # "[[[[..." fits in MAX_BODY and nests deeper than json can follow
            return 200, _body(_error(None, PARSE_ERROR, "parse error: nested too deeply"))
        if isinstance(payload, list):
            if not payload:
                return 200, _body(_error(None, INVALID_REQUEST, "invalid request: empty batch"))
            answers = [a for a in (self._one(item) for item in payload) if a is not None]
            return (200, _body(answers)) if answers else (204, None)
        answer = self._one(payload)
        return (200, _body(answer)) if answer is not None else (204, None)

    def _one(self, request: Any) -> Optional[Dict[str, Any]]:
        """The response object for one request (``None`` for a notification)."""
        if not isinstance(request, dict):
            return _error(None, INVALID_REQUEST, "invalid request: not an object")
        request_id = request.get("id")
        if "id" in request and (isinstance(request_id, bool) or not isinstance(request_id, (str, int, type(None)))):
            return _error(None, INVALID_REQUEST, "invalid request: id must be a string, integer or null")
        method, params = request.get("method"), request.get("params", [])
        if request.get("jsonrpc") != "2.0" or not isinstance(method, str):
            return _error(request_id, INVALID_REQUEST, "invalid request: needs jsonrpc '2.0' and a method name")
        if not isinstance(params, (list, dict)):
            return _error(request_id, INVALID_REQUEST, "invalid request: params must be an array or an object")
        try:
            result = self._call(method, params)
        except _RPCError as exc:
            response = _error(request_id, exc.code, exc.message, exc.data)
        else:
            response = {"jsonrpc": "2.0", "result": result, "id": request_id}
        return response if "id" in request else None

    def _call(self, method: str, params: Any) -> Any:
        function = self.methods.get(method)
        if function is None:
            raise _RPCError(METHOD_NOT_FOUND, f"method not found: {method!r} (known: {', '.join(self.methods)})")
        try:
            bound = inspect.signature(function).bind(*params) if isinstance(params, list) \
                else inspect.signature(function).bind(**params)
        except TypeError as exc:
            raise _RPCError(INVALID_PARAMS, f"invalid params for {method}: {exc}") from None
        try:
            return function(*bound.args, **bound.kwargs)
        except _RPCError:
            raise
        except ReloadError as exc:
            raise _RPCError(SERVER_ERROR, str(exc), {"rejected": _rejected(exc)}) from None
        except TcpMgmError as exc:
            raise _RPCError(SERVER_ERROR, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a bug in a method must not take the service down
            log.exception("MI method %s failed", method)
            raise _RPCError(INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {exc}") from None


def _rejected(exc: ReloadError) -> List[str]:
    report = exc.report
    return [str(err) for err in report.rejected] if report is not None else []


def _http_answer(dispatcher: Dispatcher, verb: str, path: str, expected_path: str,
                 headers: Mapping[str, str], read_body: Callable[[int], bytes]) -> Response:
    """The HTTP layer both transports share: method, path and length checks, then the dispatcher."""
    if path.split("?", 1)[0] != expected_path:
        return 404, _body(_error(None, INVALID_REQUEST, f"no endpoint at {path!r}; POST to {expected_path}"))
    if verb != "POST":
        return 405, _body(_error(None, INVALID_REQUEST, "JSON-RPC requests are POSTed"))
    length_text = headers.get("content-length")
    if length_text is None or not length_text.strip().isdigit():
        return 411, _body(_error(None, INVALID_REQUEST, "Content-Length required"))
    length = int(length_text)
    if length > MAX_BODY:
        return 413, _body(_error(None, INVALID_REQUEST, f"request larger than {MAX_BODY} bytes"))
    return dispatcher.handle(read_body(length), headers.get("authorization"))


_REASONS = {200: "OK", 204: "No Content", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            411: "Length Required", 413: "Payload Too Large", 400: "Bad Request"}


def _response_headers(status: int, body: Optional[bytes]) -> List[Tuple[str, str]]:
    headers = [("Content-Length", str(len(body or b""))), ("Connection", "close")]
    if body is not None:
        headers.append(("Content-Type", "application/json"))
    if status == 401:
        headers.append(("WWW-Authenticate", 'Bearer realm="tcpmgm"'))
    return headers


# -- transport 1: a thread ---------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_HTTPServer"
    protocol_version = "HTTP/1.1"

    @property
    def timeout(self) -> float:  # type: ignore[override]
        # The socket timeout of each read: a client that stops sending is
        # dropped instead of holding its thread for ever.
        return REQUEST_DEADLINE

    def _serve(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, body = _http_answer(self.server.dispatcher, self.command, self.path, self.server.path,
                                    headers, self.rfile.read)
        self.send_response(status)
        for name, value in _response_headers(status, body):
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(body)
        self.close_connection = True

    do_POST = do_GET = do_PUT = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("MI %s: %s", self.address_string(), format % args)


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: Tuple[str, int], dispatcher: Dispatcher, path: str) -> None:
        self.dispatcher = dispatcher
        self.path = path
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)


class MIServer:
    """The admin endpoint in a background thread: ``start()``, ``stop()``, or a ``with`` block."""

    def __init__(self, mgr: Any, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                 token: Optional[str] = None, path: str = "/mi") -> None:
        self.dispatcher = Dispatcher(mgr, token=token)
        self._address = (host, port)
        self._path = path
        self._server: Optional[_HTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the MI server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}{self._path}"

    def start(self) -> "MIServer":
        self._server = _HTTPServer(self._address, self.dispatcher, self._path)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="tcpmgm-mi", daemon=True,
        )
        self._thread.start()
        log.info("MI endpoint listening on %s", self.url)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self) -> "MIServer":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


# -- transport 2: an asyncio loop ----------------------------------------------------

async def serve(mgr: Any, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                token: Optional[str] = None, path: str = "/mi") -> asyncio.AbstractServer:
    """The admin endpoint on the running loop; close the returned server to stop it."""
    dispatcher = Dispatcher(mgr, token=token)
    loop = asyncio.get_running_loop()

    async def read_request(reader: asyncio.StreamReader) -> Tuple[str, str, Dict[str, str]]:
        verb, target, _ = (await reader.readline()).decode("latin-1").split(" ", 2)
        headers: Dict[str, str] = {}
        while True:
            line = (await reader.readline()).decode("latin-1").rstrip("\r\n")
            if not line:
                return verb, target, headers
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
            if len(headers) > 100:
                raise ValueError("too many headers")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            verb, target, headers = await asyncio.wait_for(read_request(reader), REQUEST_DEADLINE)
            # Read the body here, on the loop; the dispatcher then runs in a
            # worker thread so that a reload does not block the loop.
            received = b""
            length_text = headers.get("content-length", "").strip()
            if verb == "POST" and length_text.isdigit() and int(length_text) <= MAX_BODY:
                received = await asyncio.wait_for(reader.readexactly(int(length_text)), REQUEST_DEADLINE)
            status, body = await loop.run_in_executor(
                None, _http_answer, dispatcher, verb, target, path, headers, lambda _length: received,
            )
        except (ValueError, asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            status, body = 400, _body(_error(None, INVALID_REQUEST, "malformed HTTP request"))
        try:
            head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"]
            head += [f"{name}: {value}" for name, value in _response_headers(status, body)]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b""))
            await writer.drain()
        except ConnectionError:
            pass  # the client left; nothing to tell it
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)


# -- the client ---------------------------------------------------------------------

def call(url: str, method: str, params: Any = None, *, token: Optional[str] = None, timeout: float = 30.0) -> Any:
    """Call ``method`` on the endpoint at ``url``; its result, or :class:`MIError`."""
    request: Dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 1}
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
        raise MIError(f"{method}: {error.get('message', 'error')} (code {error.get('code')})",
                      error.get("code"), error.get("data"))
    return answer.get("result")
