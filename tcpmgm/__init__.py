"""tcpmgm: per-connection TCP policy, the OpenSIPS ``tcp_mgm`` model for Python.

Rules ("TCP paths") filter on protocol, remote network/port, local
address/port and priority; the winning rule's :class:`Profile` tells how to
treat the connection.  See SPEC section 4 for the one definition of which
rule wins, implemented by :class:`ReferenceMatcher` (pure Python, the oracle)
and :class:`Matcher` (what callers use).
"""

from .errors import (
    DatabaseError,
    NoNewConnection,
    ReloadError,
    RuleError,
    RuleWarning,
    SchemaError,
    TcpMgmError,
)
from .profile import Profile, default_profile, register_attr, set_default_profile
from .protocols import register_protocol
from .reference import Explanation, ReferenceMatcher
from .rule import Rule
from .matcher import Matcher
from .manager import ReloadReport, TcpMgm
from .sockets import apply, connect

__version__ = "0.1.0"

__all__ = [
    "DatabaseError",
    "Explanation",
    "Matcher",
    "NoNewConnection",
    "Profile",
    "ReferenceMatcher",
    "ReloadError",
    "ReloadReport",
    "Rule",
    "RuleError",
    "RuleWarning",
    "SchemaError",
    "TcpMgm",
    "TcpMgmError",
    "apply",
    "connect",
    "default_profile",
    "register_attr",
    "register_protocol",
    "set_default_profile",
]
