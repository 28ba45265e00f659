"""``Explanation``'s text: what ``print(mgr.explain(...))`` and ``tcpmgm match --explain`` show (issue 10, 18)."""

import tcpmgm

ROWS = [
    {
        "id": 1,
        "proto": "tls",
        "remote_addr": "203.0.113.0/24",
        "connect_timeout": 1500,
        "attrs": "max_msg_chunks=8",
        "no_new_conn": 1,
    },
    {"id": 2, "proto": "any", "remote_addr": "203.0.113.0/24"},
    {"id": 3, "proto": "any", "priority": 5},
]


def test_str_names_the_winner_the_profile_and_why_each_match_lost(matcher_cls):
    matcher = matcher_cls([tcpmgm.Rule.from_row(row) for row in ROWS])
    found = matcher.explain("tls", "203.0.113.9", 5061, "192.0.2.10", 5061)
    lines = str(found).splitlines()
    assert lines[0] == "rule #1 tls 203.0.113.0/24:* <- any:* prio 0"
    assert lines[1].split() == ["attribute", "value"] and set(lines[2]) == {"-", " "}
    table = dict(line.split(None, 1) for line in lines[3:15])
    assert list(table) == list(tcpmgm.model.profile.PROFILE_FIELDS)
    assert table["connect_timeout"] == "1500" and table["no_new_conn"] == "1" and table["keepalive"] == "1"
    assert table["attrs"] == "max_msg_chunks=8"
    assert lines[15:] == [
        "",
        "matching rules, best first:",
        "#1 tls 203.0.113.0/24:* <- any:* prio 0: winner",
        "#2 any 203.0.113.0/24:* <- any:* prio 0: protocol 'any' where the winner names a protocol",
        "#3 any any:* <- any:* prio 5: a higher priority value (5 > 0)",
    ]
    assert "Rule(" not in str(found) and "Profile(" not in str(found)  # no dataclass repr
    assert str(found).startswith(found.summary()) and found.summary() == "\n".join(lines[:15])


def test_str_of_no_match_is_the_default_profile(matcher_cls):
    found = matcher_cls([tcpmgm.Rule.from_row(ROWS[0])]).explain("tcp", "198.51.100.1")
    lines = str(found).splitlines()
    assert lines[0] == "rule 0: no rule matches (default profile)"
    assert dict(line.split(None, 1) for line in lines[3:])["attrs"] == "-"
    assert len(lines) == 15 and str(found) == found.summary()


def test_the_manager_explains_with_the_same_text(tmp_path):
    mgr = tcpmgm.TcpMgm(f"sqlite:///{tmp_path / 'rules.db'}")
    mgr.create_schema()
    for row in ROWS:
        mgr.add_rule(row)
    mgr.reload()
    found = mgr.explain("tls", "203.0.113.9", 5061)
    assert str(found) == str(tcpmgm.ReferenceMatcher(list(mgr.matcher)).explain("tls", "203.0.113.9", 5061))
    assert len(str(found)) < 1000
