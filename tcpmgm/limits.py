"""``tcpmgm.limits``, the name the README documents: the ranges of a rule's columns.

The code lives in ``tcpmgm/model/limits.py`` (docs/architecture.md).
"""

from .model.limits import (
    ID_MIN,
    ID_MAX,
    PRIORITY_MIN,
    PRIORITY_MAX,
    PORT_MAX,
    PROFILE_INT_MAX,
    ATTR_MIN,
    ATTR_MAX,
    BEYOND_EVERY_RANGE,
    check_id,
    check_priority,
    check_port,
    check_profile_int,
)

__all__ = [
    "ID_MIN",
    "ID_MAX",
    "PRIORITY_MIN",
    "PRIORITY_MAX",
    "PORT_MAX",
    "PROFILE_INT_MAX",
    "ATTR_MIN",
    "ATTR_MAX",
    "BEYOND_EVERY_RANGE",
    "check_id",
    "check_priority",
    "check_port",
    "check_profile_int",
]
