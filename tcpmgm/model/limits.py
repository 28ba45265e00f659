"""The ranges of the rule table's integers (docs/behaviour.md#a-rule), defined once.

They are the ranges the OpenSIPS columns hold (``id`` a BIGINT, ``priority``
and the profile columns INT, the ports 16 bits).  ``Rule.from_row`` and
``Rule(...)`` refuse a value outside them with a :class:`RuleError`; the
compiled row reader hands such a row to ``Rule.from_row`` instead of building
it; the compiled matcher, which packs ids and ``Rule.order`` into C integers,
relies on them.  So every path that makes a rule accepts exactly the same rows,
and every matcher the same rules.

Neutral on purpose: this module imports nothing but the exceptions, so the
compiled modules can read it without importing a pure twin.
"""

from __future__ import annotations

from typing import Any

from .errors import RuleError

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

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1  # SQL INT, C int

ID_MIN = 1  # 0 is the default profile
ID_MAX = 2**63 - 1  # BIGINT
PRIORITY_MIN, PRIORITY_MAX = _INT_MIN, _INT_MAX
PORT_MAX = 65535  # 0 is "any"
PROFILE_INT_MAX = _INT_MAX  # every profile integer is 0..PROFILE_INT_MAX
# The widest an attrs value (name=int) may be, a C int as in OpenSIPS: each name's own
# range lies within it (model/profile.py BUILTIN_ATTRS), a name registered without one has it.
ATTR_MIN, ATTR_MAX = _INT_MIN, _INT_MAX

# Larger than every bound above.  Parsers give a number of this magnitude or
# more as +-BEYOND_EVERY_RANGE instead of converting it exactly: converting a
# 100,000-digit value only to refuse it is slow (and int() refuses text past
# 4300 digits), and every range check then refuses it just the same.
BEYOND_EVERY_RANGE = 2**64


def check_id(number: int, value: Any) -> None:
    """Refuse an id outside ID_MIN..ID_MAX (``value``: what the row held, for the message)."""
    if number < ID_MIN:
        raise RuleError(None, "id", value, "id must be a positive integer (0 is the default profile)")
    if number > ID_MAX:
        raise RuleError(None, "id", value, f"id must be at most {ID_MAX}")


def check_priority(rule_id: int | None, number: int, value: Any) -> None:
    if not PRIORITY_MIN <= number <= PRIORITY_MAX:
        raise RuleError(rule_id, "priority", value, f"must be between {PRIORITY_MIN} and {PRIORITY_MAX}")


def check_port(rule_id: int | None, column: str, number: int, value: Any) -> None:
    if not 0 <= number <= PORT_MAX:
        raise RuleError(rule_id, column, value, f"port must be between 0 (any) and {PORT_MAX}")


def check_profile_int(rule_id: int | None, column: str, number: int, value: Any) -> None:
    if number < 0:
        raise RuleError(rule_id, column, value, "must not be negative")
    if number > PROFILE_INT_MAX:
        raise RuleError(rule_id, column, value, f"must be at most {PROFILE_INT_MAX}")
