import tcpmgm


def test_default_profile_when_no_rules(matcher_cls):
    assert matcher_cls([]).lookup("tcp", "192.0.2.1", 5060, "10.0.0.1", 5060) == tcpmgm.default_profile()
