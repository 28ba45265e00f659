"""``tcpmgm.mi``, the name the README documents: the admin (MI) endpoint and its client.

The code lives in ``tcpmgm/service/mi.py`` (docs/architecture.md).
"""

from .service.mi import (
    Dispatcher,
    MIServer,
    MIError,
    MIConfigError,
    InsecureBindError,
    Limits,
    Request,
    RequestParser,
    serve,
    call,
    list_all,
    check_bind,
    profile_dict,
    DEFAULT_PORT,
    DEFAULT_URL,
)

__all__ = [
    "Dispatcher",
    "MIServer",
    "MIError",
    "MIConfigError",
    "InsecureBindError",
    "Limits",
    "Request",
    "RequestParser",
    "serve",
    "call",
    "list_all",
    "check_bind",
    "profile_dict",
    "DEFAULT_PORT",
    "DEFAULT_URL",
]
