"""What a rule keeps, declared once (rule.ATTRIBUTES, derived from the dataclass fields).

Every way of making a rule (``Rule(...)``, ``Rule.from_row``, the compiled row
reader's shortcut) writes the instance dict from that declaration, and the
compiled matcher, which reads the dict by name, reads only declared names.
The compiled shortcut is held attribute by attribute to ``from_row`` on
generated rows in tests/test_key.py and tests/test_rows.py.
"""

import dataclasses
import ipaddress
import re
from pathlib import Path

import pytest

import tcpmgm.matching
from tcpmgm import Rule
from tcpmgm.matching import records
from tcpmgm.model.rule import _CHECKED_ATTRIBUTES, ATTRIBUTES
from tcpmgm.sql import rows
from tcpmgm.sql.schema import SCHEMA_VERSIONS


def test_the_declaration_is_the_fields():
    """Each field under its name, a network as its prefix, then the order."""
    fields = [field.name for field in dataclasses.fields(Rule)]
    assert [name.replace("_prefix", "") for name in _CHECKED_ATTRIBUTES] == fields
    assert (*_CHECKED_ATTRIBUTES, "order") == ATTRIBUTES
    assert {"remote_prefix", "local_prefix"} <= set(ATTRIBUTES)


def test_every_maker_writes_the_declared_attributes():
    net = ipaddress.ip_network
    made = Rule(id=4, proto="tcp", remote=net("10.0.0.0/8"), local=net("10.0.0.1/32"), local_port=5)
    # The dataclass __init__ also keeps the networks it was given.
    assert set(vars(made)) == {*ATTRIBUTES, "remote", "local"}
    from_row = Rule.from_row({"id": 4, "proto": "tcp", "remote_addr": "10.0.0.0/8", "local_addr": "10.0.0.1"})
    assert tuple(vars(from_row)) == ATTRIBUTES
    assert from_row.remote == net("10.0.0.0/8") and set(vars(from_row)) == {*ATTRIBUTES, "remote"}


def test_from_checked_takes_one_value_per_declared_attribute():
    with pytest.raises(TypeError, match=r"^Rule._from_checked takes 10 values, got 2$"):
        Rule._from_checked(1, None)


@pytest.mark.skipif(not rows.COMPILED, reason="compiled modules disabled by TCPMGM_NO_EXTENSIONS")
def test_a_rule_from_the_compiled_readers_records_has_the_declared_attributes():
    columns = SCHEMA_VERSIONS[2]
    Rule.from_row({"id": 1, "proto": "tls"})  # the C path knows a spelling once from_row has accepted it
    row = {"id": 9, "proto": "tls", "remote_addr": "2001:db8::/32", "local_port": 5061, "priority": -1}
    values = tuple(row.get(column) for column in columns)
    reader = rows.RowReader(columns)
    assert reader._plain(values)
    made = records.RuleRecords()
    reader.read_batch([values], made, [], [])
    (rule,) = made.rules()
    assert tuple(vars(rule)) == ATTRIBUTES
    assert vars(rule) == vars(Rule.from_row(row))


def _compiled_matcher_sources():
    folder = Path(tcpmgm.matching.__file__).parent
    return sorted([*folder.glob("*.pyx"), *folder.glob("*.pxi")])


def test_the_compiled_matcher_reads_declared_attributes_only():
    """The compiled matcher's build reads a rule's instance dict by name (``fields["..."]``):
    each name it reads is a declared attribute."""
    read = {
        name
        for source in _compiled_matcher_sources()
        for name in re.findall(r'\bfields\["(\w+)"\]', source.read_text(encoding="utf-8"))
    }
    assert read, "the compiled matcher no longer reads fields[...]: update this test to where it reads rules"
    assert read <= set(ATTRIBUTES), f"read but not declared: {sorted(read - set(ATTRIBUTES))}"
