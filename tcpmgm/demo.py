"""``tcpmgm demo``: the four use cases of SPEC section 1 in an SQLite file, loaded and queried."""

from __future__ import annotations

import os
from typing import Any, Dict, List, TextIO, Tuple

from ._text import aligned
from .manager import TcpMgm
from .profile import default_profile, format_attrs

__all__ = ["DEMO_LISTENERS", "DEMO_ROWS", "SAMPLE_CONNECTIONS", "run_demo"]

# Socket tags of this imaginary proxy's listeners (OpenSIPS "socket ... as tag").
DEMO_LISTENERS = {"internal": "10.0.0.1", "public": "192.0.2.10"}

DEMO_ROWS: List[Dict[str, Any]] = [
    # Far-away SIP trunks: give the TLS handshake time to cross the ocean.
    {"id": 1, "proto": "tls", "remote_addr": "203.0.113.0/24", "remote_port": 5061,
     "connect_timeout": 1500},
    {"id": 2, "proto": "tcp", "remote_addr": "2001:db8:1000::/48", "connect_timeout": 800},
    # A pool of NAT'ed users: accept their connections, never open one to them.
    {"id": 3, "proto": "any", "remote_addr": "198.51.100.0/24", "no_new_conn": 1,
     "con_lifetime": 600},
    # A high-throughput replication link between two proxies (binary interface).
    {"id": 4, "proto": "bin", "remote_addr": "10.0.0.2", "remote_port": 5566,
     "con_lifetime": 86400, "msg_read_timeout": 30, "attrs": "max_msg_chunks=64",
     "keepidle": 30, "keepinterval": 10, "keepcount": 3},
    # Connections made through the internal listener, whoever the peer is.
    {"id": 5, "proto": "any", "local_addr": "internal", "priority": 1, "keepidle": 60},
    # Deliberately invalid: UDP is not TCP-based, so this row is rejected.
    {"id": 6, "proto": "udp", "remote_addr": "192.0.2.0/24", "connect_timeout": 200},
]

SAMPLE_CONNECTIONS: List[Tuple[str, str, int, str, int]] = [
    ("tls", "203.0.113.45", 5061, "192.0.2.10", 5061),
    ("tcp", "2001:db8:1000::7", 5060, "2001:db8::10", 5060),
    ("tcp", "198.51.100.23", 40312, "192.0.2.10", 5060),
    ("bin", "10.0.0.2", 5566, "10.0.0.1", 5566),
    ("bin", "10.0.0.3", 5566, "10.0.0.1", 5566),
    ("tcp", "192.0.2.99", 5060, "192.0.2.10", 5060),
]


def run_demo(path: str, out: TextIO) -> int:
    """Write the demo table to ``path`` (replacing it), load it and print what wins."""
    path = os.path.abspath(path)
    if os.path.exists(path):
        os.remove(path)
    manager = TcpMgm(f"sqlite:///{path}", listeners=DEMO_LISTENERS)
    manager.create_schema()
    # Write the rows as-is (the invalid one too): the loader is what must catch it.
    with manager.source.connection() as conn:
        for row in DEMO_ROWS:
            conn.execute(
                f"INSERT INTO tcp_mgm ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()),
            )
        conn.commit()
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
        shown = ", ".join(
            f"{k}={format_attrs(v) if k == 'attrs' else int(v)}" for k, v in diff.items()
        ) or "(default)"
        table.append((proto, _endpoint(rip, rport), _endpoint(lip, lport), str(profile.id), shown))
    print(aligned(table), file=out)
    print(file=out)
    print("rule 0 is the default profile: no rule matched.", file=out)
    return 0


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
