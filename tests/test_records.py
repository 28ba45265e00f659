"""RuleRecords (the build's input) and the matcher built from them (docs/architecture.md#rule-records).

The records keep the rules as given and hand them back equal; a matcher built from records
answers as one built from the Rules; the objects a matcher makes on demand are cached where the
contract says (one Profile per rule, the same object every time); and a compiled matcher built
from records holds no Python object per rule.
"""

import ipaddress
import random
import sys

import pytest

from tcpmgm import Profile, ReferenceMatcher, Rule, RuleError
from tcpmgm.matching import matcher as matcher_module

N_RULES = 3000
PROTOS = [None, "tcp", "tls", "ws", "wss", "bin"]
ATTRS = [{}, {}, {"nodelay": 1}, {"tos": 184, "nodelay": 0}, {"max_msg_chunks": 7}]
TAGS = [None, None, None, "sip", "tls-listener"]


def _records_classes():
    """(matcher class, its records class) for each twin that is there."""
    pairs = []
    try:
        from tcpmgm.matching._records_py import RuleRecords as PureRecords
    except ImportError:  # the pure twin lands separately
        pass
    else:
        pairs.append(pytest.param((ReferenceMatcher, PureRecords), id="reference"))
    if matcher_module.COMPILED:
        from tcpmgm.matching._matcher import Matcher, RuleRecords

        pairs.append(pytest.param((Matcher, RuleRecords), id="compiled"))
    return pairs


@pytest.fixture(params=_records_classes())
def twin(request):
    return request.param


def _network(rng, version):
    bits = 32 if version == 4 else 128
    plen = rng.choice([0, bits, bits // 2, 8, rng.randint(0, bits)])
    value = rng.getrandbits(bits) >> (bits - plen) << (bits - plen) if plen else 0
    cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    return cls((value, plen))


def generated_rules(n, seed=0):
    """``n`` rules with every field used: both families, "any" filters, tags, attrs, profiles."""
    rng = random.Random(seed)
    rules = []
    ids = rng.sample(range(1, 10 * n), n)
    for rule_id in ids:
        version = rng.choice([4, 4, 6])
        remote = _network(rng, version) if rng.random() < 0.8 else None
        local = _network(rng, version) if rng.random() < 0.3 else None
        profile = Profile(
            connect_timeout=rng.choice([100, 250]),
            keepalive=rng.random() < 0.7,
            no_new_conn=rng.random() < 0.1,
            alias_mode=rng.randint(0, 2),
            keepidle=rng.choice([7200, 30]),
            attrs=rng.choice(ATTRS),
        )
        rules.append(
            Rule(
                rule_id,
                proto=rng.choice(PROTOS),
                remote=remote,
                remote_port=rng.choice([0, 0, 5060, rng.randint(1, 65535)]),
                local=local,
                local_port=rng.choice([0, 0, 5061]),
                priority=rng.randint(-3, 3),
                profile=profile,
                local_tag=rng.choice(TAGS) if local is not None else None,
            )
        )
    return rules


def queries(rules, n, seed=1):
    """Lookups near the rules' networks and elsewhere, with and without local addresses."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        rule = rng.choice(rules)
        version = rule.remote.version if rule.remote is not None else rng.choice([4, 6])
        bits = 32 if version == 4 else 128
        if rule.remote is not None and rng.random() < 0.7:
            remote = int(rule.remote.network_address) | rng.getrandbits(bits - rule.remote.prefixlen)
        else:
            remote = rng.getrandbits(bits)
        local = None
        if rule.local is not None and rng.random() < 0.7:
            local = str(ipaddress.ip_address(int(rule.local.network_address)))
        out.append(
            (
                rng.choice(PROTOS),
                str(ipaddress.ip_address(remote) if version == 6 else ipaddress.IPv4Address(remote)),
                rng.choice([0, 5060, rule.remote_port]),
                local,
                rng.choice([0, 5061, rule.local_port]),
            )
        )
    return out


def records_of(records_cls, rules):
    records = records_cls()
    for rule in rules:
        records.append(rule)
    return records


def same_rule(made, given):
    """Equal as a rule, and equal in what Rule equality leaves out: the profile (with its id)."""
    return made == given and made.profile == given.profile and made.order == given.order


# -- the records ------------------------------------------------------------------------------


def test_records_give_back_the_rules_given(twin):
    _, records_cls = twin
    rules = generated_rules(N_RULES)
    records = records_of(records_cls, rules)
    assert len(records) == len(rules)
    back = list(records.rules())
    assert all(same_rule(made, given) for made, given in zip(back, rules, strict=True))
    assert [rule.local_tag for rule in back] == [rule.local_tag for rule in rules]
    assert all(made.warnings == () for made in back)


def test_records_know_their_ids(twin):
    _, records_cls = twin
    rules = generated_rules(500, seed=3)
    records = records_of(records_cls, rules[:100])
    assert rules[0].id in records and rules[200].id not in records
    for rule in rules[100:]:  # asked before: the ids appended later are known too
        records.append(rule)
    assert all(rule.id in records for rule in rules)
    missing = set(range(1, 5001)) - {rule.id for rule in rules}
    assert not any(rule_id in records for rule_id in missing)
    assert 0 not in records and -1 not in records and 2**63 not in records
    assert "1" not in records and None not in records and 1.0 not in records


def test_records_accept_a_repeated_id_that_the_build_refuses(twin):
    matcher_cls, records_cls = twin
    records = records_of(records_cls, [Rule(4), Rule(2), Rule(9), Rule(2, proto="tcp"), Rule(4, proto="tls")])
    assert len(records) == 5 and 2 in records
    with pytest.raises(RuleError) as info:
        matcher_cls.from_records(records)
    assert (info.value.rule_id, info.value.column, info.value.value) == (2, "id", 2)
    assert "duplicate id" in str(info.value)


def test_records_refuse_what_is_not_a_rule(twin):
    _, records_cls = twin
    with pytest.raises(TypeError, match=r"tcpmgm\.Rule"):
        records_cls().append({"id": 1})


# -- a matcher from records -----------------------------------------------------------------


@pytest.fixture(scope="module")
def generated():
    rules = generated_rules(N_RULES, seed=7)
    return rules, queries(rules, 4000, seed=8)


def test_a_matcher_from_records_answers_as_one_from_rules(twin, generated):
    matcher_cls, records_cls = twin
    rules, lookups = generated
    from_rules = matcher_cls(rules)
    from_records = matcher_cls.from_records(records_of(records_cls, rules))
    assert len(from_records) == len(from_rules) == len(rules)
    for query in lookups:
        assert from_records.lookup(*query) == from_rules.lookup(*query), query
    for query in lookups[:300]:
        mine, theirs = from_records.explain(*query), from_rules.explain(*query)
        assert mine.winner == theirs.winner and mine.profile == theirs.profile
        assert [(rule.id, why) for rule, why in mine.matches] == [(rule.id, why) for rule, why in theirs.matches]
    assert all(same_rule(made, given) for made, given in zip(from_records, from_rules, strict=True))
    assert all(same_rule(from_records.get(rule.id), rule) for rule in rules)
    assert [rule.id for rule in from_records.as_given()] == [rule.id for rule in rules]
    assert all(same_rule(made, given) for made, given in zip(from_records.as_given(), rules, strict=True))


def test_a_matcher_takes_records_in_place_of_rules(twin, generated):
    matcher_cls, records_cls = twin
    rules, lookups = generated
    matcher = matcher_cls(records_of(records_cls, rules[:200]), count_hits=False)
    reference = ReferenceMatcher(rules[:200])
    assert [rule.id for rule in matcher] == [rule.id for rule in reference]
    assert all(matcher.lookup(*query) == reference.lookup(*query) for query in lookups[:500])
    assert not matcher.count_hits


def test_as_given_is_the_order_given_and_iteration_the_key_order(twin):
    matcher_cls, records_cls = twin
    rules = [Rule(30, priority=2), Rule(10, priority=-1), Rule(20, proto="tcp"), Rule(5)]
    matcher = matcher_cls.from_records(records_of(records_cls, rules))
    assert [rule.id for rule in matcher.as_given()] == [30, 10, 20, 5]
    assert [rule.id for rule in matcher] == [rule.id for rule in sorted(rules, key=Rule.key)]
    assert list(matcher_cls(rules).as_given()) == rules


def test_schema_version_is_kept_and_image_path_is_none_when_built(twin):
    matcher_cls, records_cls = twin
    records = records_of(records_cls, [Rule(1)])
    assert matcher_cls.from_records(records, schema_version=3).schema_version == 3
    assert matcher_cls.from_records(records).schema_version is None
    assert matcher_cls([Rule(1)]).schema_version is None
    assert matcher_cls([Rule(1)]).image_path is None


def test_the_default_profile_is_the_one_given(twin):
    matcher_cls, records_cls = twin
    default = Profile(id=5, keepidle=3, attrs={"nodelay": 1})
    matcher = matcher_cls.from_records(records_of(records_cls, [Rule(1, proto="tls")]), default=default)
    assert matcher.default == default.replace(id=0)
    assert matcher.lookup("tcp", "192.0.2.1") is matcher.default


# -- objects made on demand -----------------------------------------------------------------


def test_a_rules_profile_is_one_object(twin, generated):
    matcher_cls, records_cls = twin
    rules, lookups = generated
    matcher = matcher_cls.from_records(records_of(records_cls, rules))
    for query in lookups[:500]:
        profile = matcher.lookup(*query)
        assert matcher.lookup(*query) is profile
        if profile.id:
            assert matcher.get(profile.id).profile is profile
            assert matcher.explain(*query).profile is profile
    by_id = {rule.id: rule.profile for rule in matcher}
    assert all(matcher.get(rule_id).profile is profile for rule_id, profile in by_id.items())
    assert all(rule.profile is by_id[rule.id] for rule in matcher.as_given())


compiled_only = pytest.mark.skipif(not matcher_module.COMPILED, reason="compiled classifier not built")


@compiled_only
def test_rules_made_on_demand_carry_no_warnings():
    from tcpmgm.matching._matcher import Matcher

    rule = Rule.from_row({"id": 3, "proto": "tcp", "remote_addr": "10.1.2.3/8"})
    assert rule.warnings  # host bits set: the reload's report keeps it, the matcher does not
    matcher = Matcher([rule])
    assert matcher.get(3) == rule and matcher.get(3).warnings == ()


# -- no Python object per rule (compiled) ------------------------------------------------------


def _blocks_held(make):
    """Python memory blocks still allocated after ``make()``, the result kept."""
    before = sys.getallocatedblocks()
    kept = make()
    grown = sys.getallocatedblocks() - before
    return grown, kept


@compiled_only
def test_a_matcher_from_records_holds_no_python_object_per_rule():
    from tcpmgm.matching._matcher import Matcher, RuleRecords

    grown = {}
    for n in (2000, 20000):
        rules = generated_rules(n, seed=n)
        records_grown, records = _blocks_held(lambda rules=rules: records_of(RuleRecords, rules))
        matcher_grown, _kept = _blocks_held(lambda records=records: Matcher.from_records(records))
        grown[n] = (records_grown, matcher_grown)
        del rules
    # 18,000 more rules: the same few blocks (strings, caches), not one more block per rule.
    assert abs(grown[20000][0] - grown[2000][0]) < 200, grown
    assert abs(grown[20000][1] - grown[2000][1]) < 200, grown
    assert grown[20000][1] < 1000, grown


@compiled_only
def test_a_lookup_allocates_nothing_once_its_profile_is_made():
    from tcpmgm.matching._matcher import Matcher

    rules = generated_rules(2000, seed=11)
    matcher = Matcher(rules)
    lookups = queries(rules, 200, seed=12)
    for query in lookups:
        matcher.lookup(*query)
    before = sys.getallocatedblocks()
    for _ in range(5):
        for query in lookups:
            matcher.lookup(*query)
    assert sys.getallocatedblocks() - before < 20


@compiled_only
def test_rules_of_one_profile_share_one_profile_record():
    from tcpmgm.matching._matcher import Matcher

    def rules(profile_of):
        return [Rule(i, remote=ipaddress.IPv4Network((i << 8, 24)), profile=profile_of(i)) for i in range(1, 5001)]

    shared = Matcher(rules(lambda i: Profile()))
    distinct = Matcher(rules(lambda i: Profile(keepidle=10000 + i)))
    # One 48-byte ProfileRec (the default's, which every rule has) against one per rule and the
    # default's; every other array is the same, each section padded to 64 bytes.
    assert distinct.nbytes - shared.nbytes == (-(-5001 * 48 // 64) * 64) - 64


@compiled_only
def test_a_profile_the_records_cannot_hold_is_refused_by_name():
    from tcpmgm.matching._matcher import Matcher

    # Profiles made directly skip the attrs registry and the column ranges; the compiled matcher
    # keeps attrs as text and integers as C ints, so it refuses what it could not give back.
    with pytest.raises(ValueError, match=r"rule 4: profile attrs .* are not names and integers"):
        Matcher([Rule(4, profile=Profile(attrs={"a;b": 1}))])
    with pytest.raises(ValueError, match="rule 5: profile keepidle 2147483648 does not fit"):
        Matcher([Rule(5, profile=Profile(keepidle=2**31))])
