"""tcpmgm: per-connection TCP policy, the OpenSIPS ``tcp_mgm`` model for Python.

Rules ("TCP paths") filter on protocol, remote network/port, local
address/port and priority; the winning rule's :class:`Profile` tells how to
treat the connection.  See docs/behaviour.md#which-rule-wins for the one definition of which
rule wins, implemented by :class:`ReferenceMatcher` (pure Python, the oracle)
and :class:`Matcher` (what callers use).
"""

from .matching.explanation import Explanation
from .matching.matcher import Matcher
from .matching.reference import ReferenceMatcher
from .model.errors import (
    ArgumentError,
    ConnectionDropped,
    DatabaseError,
    ImageError,
    MessageTimeout,
    MessageTooFragmented,
    NoNewConnection,
    ReloadError,
    RuleError,
    RuleWarning,
    SchemaError,
    TcpMgmError,
)
from .model.profile import Profile, default_profile, register_attr, set_default_profile
from .model.protocols import register_protocol
from .model.rule import Rule
from .service.manager import ReloadReport, TcpMgm
from .service.policy import ConnectionPolicy
from .service.sockets import apply, connect

__version__ = "0.1.0"

__all__ = [
    "ArgumentError",
    "ConnectionDropped",
    "ConnectionPolicy",
    "DatabaseError",
    "Explanation",
    "ImageError",
    "Matcher",
    "MessageTimeout",
    "MessageTooFragmented",
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
