"""``tcpmgm.limits``, the name the README documents: the ranges of a rule's columns.

The code lives in ``tcpmgm/model/limits.py`` (docs/architecture.md).
"""

from .model.limits import (
    ATTR_MAX,
    ATTR_MIN,
    BEYOND_EVERY_RANGE,
    ID_MAX,
    ID_MIN,
    PORT_MAX,
    PRIORITY_MAX,
    PRIORITY_MIN,
    PROFILE_INT_MAX,
    check_id,
    check_port,
    check_priority,
    check_profile_int,
)

__all__ = [
    "ATTR_MAX",
    "ATTR_MIN",
    "BEYOND_EVERY_RANGE",
    "ID_MAX",
    "ID_MIN",
    "PORT_MAX",
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "PROFILE_INT_MAX",
    "check_id",
    "check_port",
    "check_priority",
    "check_profile_int",
]
