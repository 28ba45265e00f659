"""``lookup_many``'s buffers read in pure Python: the reference twin of the buffer parsing in ``_matcher.pyx``.

A batch is five columns, one per ``lookup()`` argument, each a buffer (or
``None``; ``protos`` may also be one ``str`` for every row).  This module
reads them as the compiled matcher does, with the same refusals and the same
messages, and turns each row into the arguments ``lookup()`` takes for the
same values: a protocol name, ``(int, 4)`` for a host-order IPv4 integer, the
16 packed bytes of an IPv6 address (whose IPv4-mapped form ``lookup()``
already matches as IPv4), the two ports.  So the reference's batch answer is,
by construction, ``lookup()`` row by row.

The contract, as the compiled ``Matcher.lookup_many`` documents it:

* a buffer is anything ``memoryview()`` takes, C-contiguous, in native byte
  order (a byte-order prefix on one-byte items means nothing and is allowed);
* an integer column is one-dimensional, of format ``bBhHiIlLqQnN`` and 1, 2,
  4 or 8 bytes an item: the width comes from the itemsize, the signedness
  from the letter;
* an address column is either unsigned 32-bit integers (IPv4, host order) or
  bytes (formats ``B``/``b``/``c``: flat, a multiple of 16 bytes, or of shape
  (n, 16)), 16 a packed address in network order;
* every column has as many items as ``remote_ips``;
* the first element out of range (in row order; in a row the protocol, then
  the remote port, then the local port) is refused, naming the argument, the
  index and the value as the buffer's format means it.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal

from ..model.limits import PORT_MAX
from ..model.profile import Profile
from ..model.protocols import protocol_name, protocols
from ..model.rule import Rule
from .arguments import lookup_proto

__all__ = ["lookup_many"]

_INT_FORMATS = "bBhHiIlLqQnN"
# Format prefixes that mean this machine's byte order ('@' and '=' always do).
_NATIVE_ORDER = ("@", "=", "<") if sys.byteorder == "little" else ("@", "=", ">", "!")
_FOREIGN_ORDER = (">", "!") if sys.byteorder == "little" else ("<",)
_FOREIGN_NAME = "big-endian" if sys.byteorder == "little" else "little-endian"
# The native struct letter of each (itemsize, signed): the bytes are re-read through it.
_READ_AS: dict[tuple[int, bool], Literal["b", "B", "h", "H", "i", "I", "q", "Q"]] = {
    (1, True): "b",
    (1, False): "B",
    (2, True): "h",
    (2, False): "H",
    (4, True): "i",
    (4, False): "I",
    (8, True): "q",
    (8, False): "Q",
}


def _view(obj: Any, argument: str) -> memoryview:
    try:
        return memoryview(obj)
    except (TypeError, ValueError, BufferError) as exc:
        # TypeError: no buffer at all; ValueError/BufferError: an exporter that
        # refuses (a NumPy datetime array, a released view).
        raise TypeError(
            f"{argument}: expected a buffer (array.array, bytes, memoryview, NumPy array) or None, "
            f"got {type(obj).__name__}" + ("" if isinstance(exc, TypeError) else f" ({exc})")
        ) from None


def _column(obj: Any, argument: str, address: bool) -> Sequence[Any] | None:
    """The items of one column (``None`` for ``None``): ints, or lookup()'s address arguments."""
    if obj is None:
        return None
    view = _view(obj, argument)
    fmt = view.format
    order = fmt[:1]
    if order in _NATIVE_ORDER or order in _FOREIGN_ORDER:
        fmt = fmt[1:]
        # Byte order means nothing for one-byte items ('<B' from ctypes).
        if order in _FOREIGN_ORDER and view.itemsize != 1:
            raise ValueError(f"{argument}: {_FOREIGN_NAME} buffers are not accepted, use native byte order")
    if not view.c_contiguous:
        raise ValueError(f"{argument}: the buffer must be C-contiguous")
    if address and fmt in ("B", "b", "c") and view.itemsize == 1:
        # Bytes, or rows of 16 bytes (NumPy (n, 16), ctypes (c_ubyte * 16) * n).
        shape = view.shape or ()  # a memoryview's shape is a tuple; typeshed allows None
        if view.nbytes % 16 or (view.ndim > 1 and shape[1:] != (16,)):
            got = f"{view.nbytes} bytes" if view.ndim <= 1 else f"shape {shape}"
            raise ValueError(f"{argument}: packed IPv6 buffers hold 16 bytes per address, got {got}")
        raw = view.tobytes()
        return [raw[i : i + 16] for i in range(0, len(raw), 16)]
    if view.ndim != 1:
        raise ValueError(f"{argument}: expected a one-dimensional buffer, got {view.ndim} dimensions")
    # The itemsize, not the letter, gives the width ('<l' is 4 bytes, '@l' 8 here);
    # an exporter claiming any other width is refused rather than read past.
    if len(fmt) != 1 or fmt not in _INT_FORMATS or view.itemsize not in (1, 2, 4, 8):
        raise TypeError(f"{argument}: expected a buffer of integers, got format {view.format!r}")
    signed = fmt.islower()
    if address and (view.itemsize != 4 or signed):
        raise TypeError(
            f"{argument}: IPv4 addresses must be unsigned 32-bit integers (array 'I'), "
            f"got format {view.format!r}; IPv6 goes in a bytes buffer of 16 bytes per address"
        )
    # Through the bytes, not the view: indexing a view knows no byte-order prefix ('<i' from ctypes).
    values: list[int] = memoryview(view.tobytes()).cast(_READ_AS[view.itemsize, signed]).tolist()
    return [(value, 4) for value in values] if address else values


def _check_length(argument: str, column: Sequence[Any] | None, expected: int) -> None:
    if column is not None and len(column) != expected:
        raise ValueError(f"{argument}: {len(column)} items, but remote_ips has {expected}")


def _checked(argument: str, column: Sequence[int] | None, i: int, top: int) -> int:
    """Item ``i`` of an integer column (0 for ``None``); ``ValueError`` outside 0..top."""
    if column is None:
        return 0
    value = column[i]
    if not 0 <= value <= top:
        if argument == "protos":
            raise ValueError(f"protos[{i}]: unknown protocol code {value}")
        raise ValueError(f"{argument}[{i}]: {value} is outside 0..{PORT_MAX}")
    return value


def _rows(
    protos: Any, remote_ips: Any, remote_ports: Any, local_ips: Any, local_ports: Any
) -> Iterator[tuple[str, Any, int, Any, int]]:
    """lookup()'s arguments row by row, once the batch as a whole is accepted."""
    max_code = len(protocols())  # the registry only grows: read once, as the compiled matcher does
    remotes = _column(remote_ips, "remote_ips", True)
    locals_ = _column(local_ips, "local_ips", True)
    rports = _column(remote_ports, "remote_ports", False)
    lports = _column(local_ports, "local_ports", False)
    if remotes is None:
        raise TypeError("remote_ips: a buffer of addresses is required")
    # One str for every row: checked as lookup() checks it (TypeError / ValueError naming "proto").
    one_code = lookup_proto(protos) if isinstance(protos, str) else None
    codes = None if one_code is not None else _column(protos, "protos", False)
    _check_length("protos", codes, len(remotes))
    _check_length("remote_ports", rports, len(remotes))
    _check_length("local_ips", locals_, len(remotes))
    _check_length("local_ports", lports, len(remotes))
    for i, remote in enumerate(remotes):
        code = _checked("protos", codes, i, max_code) if one_code is None else one_code
        rport = _checked("remote_ports", rports, i, PORT_MAX)
        lport = _checked("local_ports", lports, i, PORT_MAX)
        yield protocol_name(code), remote, rport, None if locals_ is None else locals_[i], lport


def lookup_many(
    lookup: Callable[[str | None, Any, int, Any, int], Profile],
    rules: Iterable[Rule],
    protos: Any,
    remote_ips: Any,
    remote_ports: Any = None,
    local_ips: Any = None,
    local_ports: Any = None,
) -> array.array[int]:
    """``lookup()``'s id for every row of the batch: ``array('I')``, or ``array('Q')``
    when some id of ``rules`` (the matcher's) does not fit in 32 bits."""
    typecode = "I" if max((rule.id for rule in rules), default=0) <= 0xFFFFFFFF else "Q"
    rows = _rows(protos, remote_ips, remote_ports, local_ips, local_ports)
    return array.array(typecode, [lookup(*row).id for row in rows])
