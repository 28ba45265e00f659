"""The protocol registry: which ``proto`` values a rule may name.

Every protocol gets a small positive code, stable for the life of the process
(``any`` is 0), so the compiled classifier can key its tables by an integer.
The built-in names are OpenSIPS's TCP-based protocols; an application that
carries another protocol over TCP registers it with :func:`register_protocol`.
"""

from __future__ import annotations

import threading

__all__ = [
    "ANY",
    "BUILTIN_PROTOCOLS",
    "NOT_TCP_PROTOCOLS",
    "protocol_code",
    "protocol_name",
    "protocols",
    "register_protocol",
]

ANY = "any"

BUILTIN_PROTOCOLS: tuple[str, ...] = (
    "tcp",
    "tls",
    "ws",
    "wss",
    "bin",
    "bins",
    "hep_tcp",
    "hep_tls",
    "smpp",
    "msrp",
    "msrps",
)

# Protocols OpenSIPS knows that do not run over TCP: a rule naming one of them
# can never apply to a TCP connection, so it is refused rather than ignored.
NOT_TCP_PROTOCOLS = frozenset({"udp", "sctp", "hep_udp", "ipsec", "bond"})

_lock = threading.Lock()
_codes: dict[str, int] = {name: code for code, name in enumerate(BUILTIN_PROTOCOLS, 1)}
_names: dict[int, str] = {code: name for name, code in _codes.items()}


def register_protocol(name: str) -> int:
    """Make ``name`` a valid ``proto`` and return its code (idempotent)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"protocol name must be a non-empty string, got {name!r}")
    key = name.strip().lower()
    if key == ANY:
        raise ValueError("'any' is the wildcard, not a protocol")
    if key in NOT_TCP_PROTOCOLS:
        raise ValueError(f"{key!r} is not a TCP-based protocol")
    with _lock:
        code = _codes.get(key)
        if code is None:
            code = len(_codes) + 1
            _codes[key] = code
            _names[code] = key
        return code


def protocol_code(name: str | None) -> int | None:
    """The code of ``name`` (0 for ``any`` or ``None``), or ``None`` if unknown.

    Case-insensitive and blind to surrounding blanks (``CHAR(n)`` columns pad).
    """
    if name is None:
        return 0
    key = name.strip().lower()
    if key == ANY:
        return 0
    return _codes.get(key)


def protocol_name(code: int) -> str:
    """The name registered under ``code`` (``'any'`` for 0)."""
    return ANY if code == 0 else _names[code]


def protocols() -> tuple[str, ...]:
    """Every registered protocol name, in code order."""
    with _lock:
        return tuple(_names[code] for code in sorted(_names))
