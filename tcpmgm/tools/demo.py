"""``tcpmgm demo``: the four use cases of docs/behaviour.md in an SQLite file, loaded and queried."""

from __future__ import annotations

import os
from typing import Any, TextIO

from ..model.errors import TcpMgmError
from ..model.profile import default_profile, format_attrs
from ..model.text import aligned
from ..service.manager import TcpMgm
from ..sql.db import work

__all__ = ["DEMO_APPLICATION_ID", "DEMO_LISTENERS", "DEMO_ROWS", "SAMPLE_CONNECTIONS", "is_demo_database", "run_demo"]

# Socket tags of this imaginary proxy's listeners (OpenSIPS "socket ... as tag").
DEMO_LISTENERS = {"internal": "10.0.0.1", "public": "192.0.2.10"}

DEMO_ROWS: list[dict[str, Any]] = [
    # Far-away SIP trunks: give the TLS handshake time to cross the ocean.
    {"id": 1, "proto": "tls", "remote_addr": "203.0.113.0/24", "remote_port": 5061, "connect_timeout": 1500},
    {"id": 2, "proto": "tcp", "remote_addr": "2001:db8:1000::/48", "connect_timeout": 800},
    # A pool of NAT'ed users: accept their connections, never open one to them.
    {"id": 3, "proto": "any", "remote_addr": "198.51.100.0/24", "no_new_conn": 1, "con_lifetime": 600},
    # A high-throughput replication link between two proxies (binary interface).
    {
        "id": 4,
        "proto": "bin",
        "remote_addr": "10.0.0.2",
        "remote_port": 5566,
        "con_lifetime": 86400,
        "msg_read_timeout": 30,
        "attrs": "max_msg_chunks=64",
        "keepidle": 30,
        "keepinterval": 10,
        "keepcount": 3,
    },
    # Connections made through the internal listener, whoever the peer is.
    {"id": 5, "proto": "any", "local_addr": "internal", "priority": 1, "keepidle": 60},
    # Deliberately invalid: UDP is not TCP-based, so this row is rejected.
    {"id": 6, "proto": "udp", "remote_addr": "192.0.2.0/24", "connect_timeout": 200},
]

SAMPLE_CONNECTIONS: list[tuple[str, str, int, str, int]] = [
    ("tls", "203.0.113.45", 5061, "192.0.2.10", 5061),
    ("tcp", "2001:db8:1000::7", 5060, "2001:db8::10", 5060),
    ("tcp", "198.51.100.23", 40312, "192.0.2.10", 5060),
    ("bin", "10.0.0.2", 5566, "10.0.0.1", 5566),
    ("bin", "10.0.0.3", 5566, "10.0.0.1", 5566),
    ("tcp", "192.0.2.99", 5060, "192.0.2.10", 5060),
]


# SQLite's header field for exactly this, "which application's file is this"
# (PRAGMA application_id, offset 68): "TCPd".  A file carrying it was written by
# the demo and may be replaced by the next one; any other file is left alone.
DEMO_APPLICATION_ID = 0x54435064
_SQLITE_MAGIC = b"SQLite format 3\x00"


def is_demo_database(path: str) -> bool:
    """Whether ``path`` is an SQLite database that an earlier ``run_demo`` wrote."""
    try:
        with open(path, "rb") as file:
            header = file.read(100)
    except OSError:
        return False
    return (
        len(header) == 100
        and header.startswith(_SQLITE_MAGIC)
        and int.from_bytes(header[68:72], "big") == DEMO_APPLICATION_ID
    )


def run_demo(path: str, out: TextIO, *, force: bool = False) -> int:
    """Write the demo table to ``path``, load it and print what wins.

    An existing ``path`` is replaced only when it is an earlier demo's database
    or ``force`` is true; otherwise :class:`TcpMgmError`, and the file is untouched.
    """
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise TcpMgmError(f"{path} is a directory; give --path a file name")
    if os.path.lexists(path):
        if not (force or is_demo_database(path)):
            raise TcpMgmError(
                f"{path} exists and is not a tcpmgm demo database; not replacing it "
                "(choose another --path, or --force to replace it)"
            )
        os.remove(path)
    manager = TcpMgm(f"sqlite:///{path}", listeners=DEMO_LISTENERS)
    manager.create_schema()
    # Write the rows as-is (the invalid one too): the loader is what must catch it.
    with work(manager.source, f"cannot write the demo rows to {path}", commit=True) as cur:
        cur.execute(f"PRAGMA application_id = {DEMO_APPLICATION_ID}")
        for row in DEMO_ROWS:
            cur.execute(
                f"INSERT INTO tcp_mgm ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()),
            )
    print(f"demo database: {path}", file=out)
    print("listeners: " + ", ".join(f"{tag}={addr}" for tag, addr in DEMO_LISTENERS.items()), file=out)
    print(file=out)
    report = manager.reload()
    print("reload report:", file=out)
    print(_indent(str(report)), file=out)
    print(file=out)

    base = default_profile()
    header = ("proto", "remote", "local", "rule", "profile (differences from the default)")
    table = [header]
    for proto, rip, rport, lip, lport in SAMPLE_CONNECTIONS:
        profile = manager.lookup(proto, rip, rport, lip, lport)
        diff = profile.differences(base)
        shown = ", ".join(f"{k}={format_attrs(v) if k == 'attrs' else int(v)}" for k, v in diff.items()) or "(default)"
        table.append((proto, _endpoint(rip, rport), _endpoint(lip, lport), str(profile.id), shown))
    print(aligned(table), file=out)
    print(file=out)
    print("rule 0 is the default profile: no rule matched.", file=out)
    return 0


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
