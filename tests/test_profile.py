"""docs/behaviour.md#the-connection-profile: the connection profile, its defaults and the attrs registry."""

import copy
import dataclasses
import pickle

import pytest

import tcpmgm
from tcpmgm import Profile, Rule
from tcpmgm.model.profile import (
    OPENSIPS_DEFAULTS,
    PROFILE_FIELDS,
    default_profile,
    format_attrs,
    parse_attrs,
    parse_integer,
    set_default_profile,
)

SPEC_TABLE = {
    "connect_timeout": 100,
    "con_lifetime": 120,
    "msg_read_timeout": 4,
    "send_threshold": 0,
    "no_new_conn": False,
    "alias_mode": 0,
    "parallel_read": 0,
    "keepalive": True,
    "keepcount": 9,
    "keepidle": 7200,
    "keepinterval": 75,
    "attrs": {},
}


@pytest.fixture
def restore_default_profile():
    saved = default_profile()
    yield
    set_default_profile(saved)


def test_the_twelve_attributes_and_their_spec_defaults():
    assert tuple(SPEC_TABLE) == PROFILE_FIELDS
    assert OPENSIPS_DEFAULTS.values() == SPEC_TABLE
    assert OPENSIPS_DEFAULTS.id == 0
    assert default_profile() == OPENSIPS_DEFAULTS


def test_profile_is_immutable():
    profile = Profile(id=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.keepidle = 1
    with pytest.raises(TypeError):
        profile.attrs["max_msg_chunks"] = 1


def test_attrs_dict_is_copied_not_shared():
    attrs = {"max_msg_chunks": 5}
    profile = Profile(attrs=attrs)
    attrs["max_msg_chunks"] = 6
    assert dict(profile.attrs) == {"max_msg_chunks": 5}
    assert profile.values()["attrs"] is not profile.attrs


@pytest.mark.parametrize("field", ["no_new_conn", "keepalive"])
def test_flags_are_booleans(field):
    assert getattr(Profile(**{field: 5}), field) is True
    assert getattr(Profile(**{field: 0}), field) is False


def test_equality_and_hash_cover_id_values_and_attrs():
    base = Profile(id=1, attrs={"max_msg_chunks": 2})
    assert base == Profile(id=1, attrs={"max_msg_chunks": 2})
    assert hash(base) == hash(Profile(id=1, attrs={"max_msg_chunks": 2}))
    assert base != base.replace(id=2)
    assert base != base.replace(keepcount=1)
    assert base != base.replace(attrs={"max_msg_chunks": 3})
    assert base != base.replace(attrs={})
    assert len({base, base.replace(id=1), base.replace(id=2)}) == 2
    assert base != "profile"


def test_replace_values_and_differences():
    profile = OPENSIPS_DEFAULTS.replace(id=4, connect_timeout=1500, no_new_conn=1, attrs={"max_msg_chunks": 8})
    assert profile.id == 4 and profile.connect_timeout == 1500 and profile.no_new_conn is True
    assert OPENSIPS_DEFAULTS.connect_timeout == 100  # the original is untouched
    assert profile.differences(OPENSIPS_DEFAULTS) == {
        "connect_timeout": 1500,
        "no_new_conn": True,
        "attrs": {"max_msg_chunks": 8},
    }
    assert OPENSIPS_DEFAULTS.differences(OPENSIPS_DEFAULTS.replace(id=9)) == {}  # id is not an attribute


def test_profile_pickles():
    profile = Profile(id=2, keepidle=3, attrs={"max_msg_chunks": 1})
    assert pickle.loads(pickle.dumps(profile)) == profile


def test_set_default_profile_with_values(restore_default_profile):
    new = set_default_profile(connect_timeout=300, keepalive=0)
    assert new is default_profile()
    assert (new.id, new.connect_timeout, new.keepalive, new.keepidle) == (0, 300, False, 7200)
    again = set_default_profile(keepidle=10)  # changes are relative to the current default
    assert (again.connect_timeout, again.keepidle) == (300, 10)


def test_set_default_profile_with_a_profile_forces_id_zero(restore_default_profile):
    new = set_default_profile(Profile(id=42, con_lifetime=5))
    assert new.id == 0 and new.con_lifetime == 5 and default_profile() == new


def test_matchers_keep_the_default_they_were_built_with(matcher_cls, restore_default_profile):
    before = matcher_cls([])
    set_default_profile(connect_timeout=999)
    after = matcher_cls([])
    assert before.lookup("tcp", "192.0.2.1").connect_timeout == 100
    assert after.lookup("tcp", "192.0.2.1").connect_timeout == 999
    assert after.lookup("tcp", "192.0.2.1").id == 0


def test_matcher_default_argument(matcher_cls):
    default = Profile(id=77, keepidle=1)
    matcher = matcher_cls([Rule.from_row({"id": 1, "proto": "tls"})], default=default)
    assert matcher.default == default.replace(id=0)
    assert matcher.lookup("tcp", "192.0.2.1") == default.replace(id=0)
    assert matcher.lookup("tls", "192.0.2.1").id == 1


@pytest.mark.parametrize(
    "text, expected",
    [
        ("max_msg_chunks=10", {"max_msg_chunks": 10}),
        ("max_msg_chunks", {"max_msg_chunks": 0}),
        ("max_msg_chunks=+3", {"max_msg_chunks": 3}),
        ("max_msg_chunks=1;max_msg_chunks=2", {"max_msg_chunks": 2}),
        ("  ", {}),
    ],
)
def test_parse_attrs(text, expected):
    assert parse_attrs(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("nope=1", "unknown attribute 'nope'"),
        ("max_msg_chunks=x", "attribute 'max_msg_chunks' has non-integer value 'x'"),
    ],
)
def test_parse_attrs_errors_name_the_item(text, message):
    with pytest.raises(ValueError, match=message):
        parse_attrs(text)


def test_format_attrs_round_trips():
    attrs = {"max_msg_chunks": 7}
    assert format_attrs(attrs) == "max_msg_chunks=7"
    assert parse_attrs(format_attrs(attrs)) == attrs
    assert format_attrs({}) == ""


@pytest.mark.parametrize("text, value", [("0", 0), ("-12", -12), ("+7", 7), ("0042", 42)])
def test_parse_integer_accepts_sql_integers(text, value):
    assert parse_integer(text) == value


@pytest.mark.parametrize("text", ["", "-", "1_000", "1.0", "\u0663", " 1", "1e3", "0x1f", "++1"])
def test_parse_integer_refuses_everything_else(text):
    with pytest.raises(ValueError):
        parse_integer(text)


def test_public_names():
    assert tcpmgm.Profile is Profile
    assert tcpmgm.default_profile is default_profile


def test_rules_pickle_and_deepcopy_with_their_profile():
    rule = Rule.from_row({"id": 5, "proto": "tcp", "remote_addr": "10.0.0.0/8", "attrs": "max_msg_chunks=2"})
    for clone in (pickle.loads(pickle.dumps(rule)), copy.deepcopy(rule)):
        assert clone == rule and clone.profile == rule.profile
        assert dict(clone.profile.attrs) == {"max_msg_chunks": 2}
