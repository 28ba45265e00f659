"""What a row reader made of a row in a matcher's records, comparable across readers, the twins
of reader and records, and values whose repr misbehaves (tests of the row readers and of the
messages they raise)."""

from collections.abc import Sequence
from typing import Any

import pytest

from tcpmgm import Rule, RuleError
from tcpmgm.matching import records
from tcpmgm.matching._records_py import RuleRecords as PureRecords
from tcpmgm.model.rule import ATTRIBUTES
from tcpmgm.sql import rows
from tcpmgm.sql._rows_py import RowReader as PureReader

# (RowReader, RuleRecords) of each side: the pure twins, and the compiled ones when they are built.
READER_TWINS = [pytest.param((PureReader, PureRecords), id="pure-reader")]
if rows.COMPILED and records.COMPILED:
    READER_TWINS.append(pytest.param((rows.RowReader, records.RuleRecords), id="compiled-reader"))


def held(rule: Rule) -> dict[str, Any]:
    """What a rule holds that a matcher's records keep: every attribute (the networks included) but
    the warnings, which the records leave to the reload's report; its profile by ``==`` and by value."""
    kept = {name: getattr(rule, name) for name in (*ATTRIBUTES, "remote", "local") if name != "warnings"}
    kept["profile values"] = (type(rule.profile), rule.profile.id, rule.profile.values())
    return kept


def batch_outcome(reader: Any, empty: Any, values: Sequence[Any]) -> tuple[Any, ...]:
    """What ``reader.read_batch`` made of one row in the ``empty`` records: ``("rule", held, warnings)``
    with the rule the records give back, or ``("error", message, rule_id, column)``."""
    rejected: list[RuleError] = []
    warnings: list[Any] = []
    reader.read_batch([values], empty, rejected, warnings)
    if rejected:
        (exc,) = rejected
        assert len(empty) == 0
        return "error", str(exc), exc.rule_id, exc.column
    (rule,) = empty.rules()
    assert rule.id in empty
    return "rule", held(rule), [str(w) for w in warnings]


class RaisingRepr:
    """A column value whose repr fails: a message must still show something."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class HugeRepr:
    """A column value whose repr is 100,000 characters: a message must show it cut."""

    def __repr__(self) -> str:
        return "h" * 100_000
