"""``tcpmgm.mi``, the name the README documents: the admin (MI) endpoint and its client.

The code lives in ``tcpmgm/service/mi.py`` (docs/architecture.md).
"""

from .service.mi import (
    DEFAULT_PORT,
    DEFAULT_URL,
    Dispatcher,
    InsecureBindError,
    Limits,
    MIConfigError,
    MIError,
    MIServer,
    Request,
    RequestParser,
    call,
    check_bind,
    list_all,
    profile_dict,
    serve,
)

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_URL",
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
]
