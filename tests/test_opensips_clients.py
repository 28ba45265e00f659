"""OpenSIPS's own MI clients against the admin endpoint, on 127.0.0.1: `which` and `help` answer as
OpenSIPS's core does, so that opensips-cli (package opensipscli) and opensips.mi (package opensips),
installed from the test extra, work unchanged.  opensips-cli runs as a subprocess, as an operator
runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mi_endpoints import KINDS, start
from opensips.mi import OpenSIPSMI, OpenSIPSMIException

import tcpmgm
from tcpmgm.service import mi

OPENSIPS_CLI = Path(sys.executable).parent / "opensips-cli"  # the console script the opensipscli package installs
NAMES = {"tcp_reload", "tcp_mgm:reload", "tcp_list", "tcp_match", "which", "help"}


@pytest.fixture
def mgr(tmp_path):
    manager = tcpmgm.TcpMgm(f"sqlite:///{tmp_path / 'rules.db'}")
    manager.create_schema()
    manager.add_rule({"id": 1, "proto": "tcp", "remote_addr": "10.0.0.0/8", "connect_timeout": 900})
    manager.add_rule({"id": 2, "proto": "tls", "remote_addr": "10.1.0.0/16", "keepidle": 60})
    manager.reload()
    return manager


@pytest.fixture(params=KINDS)
def url(request, mgr):
    server, where = start(request.param, mgr)
    yield where
    server.stop()


# -- the answers, as OpenSIPS's core gives them ------------------------------------------


def test_which_lists_every_name_that_answers(url):
    names = mi.call(url, "which")
    assert set(names) >= NAMES and len(names) == len(set(names))
    for name in names:  # each one is a method: `which` gives its parameter sets
        assert isinstance(mi.call(url, "which", {"command": name}), list)


def test_which_command_gives_the_parameter_sets_as_opensips_recipes(url):
    # OpenSIPS's own recipes for its `which` and `help` (mi/mi_core.c): [[], ["command"]], [[], ["mi_cmd"]].
    assert mi.call(url, "which", {"command": "which"}) == [[], ["command"]]
    assert mi.call(url, "which", ["help"]) == [[], ["mi_cmd"]]
    assert mi.call(url, "which", {"command": "tcp_reload"}) == [[]]
    assert mi.call(url, "which", {"command": "tcp_list"}) == [[], ["offset"], ["limit"], ["offset", "limit"]]
    recipes = mi.call(url, "which", {"command": "tcp_match"})
    assert recipes[0] == ["proto"] and recipes[-1] == ["proto", "remote", "local", "explain"] and len(recipes) == 8


def test_which_of_a_prefix_lists_the_methods_under_it(url):
    assert mi.call(url, "which", {"command": "tcp_mgm:"}) == ["tcp_mgm:reload"]


@pytest.mark.parametrize("method, params", [("which", {"command": "nope"}), ("which", ["nope:"]), ("help", ["nope"])])
def test_an_unknown_command_is_opensips_404(url, method, params):
    with pytest.raises(mi.MIError) as unknown:
        mi.call(url, method, params)
    assert unknown.value.code == mi.UNKNOWN_COMMAND == 404 and "unknown MI command" in str(unknown.value)


def test_help(url):
    assert mi.call(url, "help") == "Usage: help mi_cmd - returns information about 'mi_cmd'"
    # OpenSIPS's core registers which and help under the module name "core" (mi/mi_core.c), and
    # its help answers the name of the module that registered a command (mi/mi.c).
    assert mi.call(url, "help", {"mi_cmd": "which"}) == {
        "Help": "lists all available MI commands",
        "Exported by": "core",
    }
    assert mi.call(url, "help", ["help"]) == {
        "Help": "prints information about MI commands usage",
        "Exported by": "core",
    }
    answer = mi.call(url, "help", ["tcp_mgm:reload"])
    assert set(answer) == {"Help", "Exported by"} and "reload" in answer["Help"]
    assert answer["Exported by"] == "tcpmgm"


def test_a_method_without_a_docstring_has_opensips_no_help_answer(mgr):
    dispatcher = mi.Dispatcher(mgr)
    dispatcher.methods["tcp_bare"] = lambda: None
    request = {"jsonrpc": "2.0", "method": "help", "params": ["tcp_bare"], "id": 1}
    status, body = dispatcher.handle(json.dumps(request).encode())
    assert status == 200 and json.loads(body)["result"]["Help"] == "not available for this command"


def test_integer_params_may_be_decimal_strings_as_opensips_takes_them(url):
    page = mi.call(url, "tcp_list", {"offset": "1", "limit": "1"})
    assert [rule["id"] for rule in page["rules"]] == [1] and page["offset"] == 1 and page["next_offset"] is None
    assert "matches" in mi.call(url, "tcp_match", {"proto": "tcp", "remote": "10.1.2.3", "explain": "1"})
    assert "matches" not in mi.call(url, "tcp_match", {"proto": "tcp", "remote": "10.1.2.3", "explain": 0})
    with pytest.raises(mi.MIError) as refused:
        mi.call(url, "tcp_match", {"proto": "tcp", "remote": "10.1.2.3", "explain": "2"})
    assert refused.value.code == mi.INVALID_PARAMS


# -- opensips.mi, in process ---------------------------------------------------------


def test_opensips_mi_client(url, mgr):
    client = OpenSIPSMI("http", url=url)
    assert client.execute("tcp_mgm:reload")["loaded"] == 2
    assert [rule["id"] for rule in client.execute("tcp_list")["rules"]] == [2, 1]
    assert set(client.execute("which")) >= NAMES
    assert client.execute("help", ["tcp_list"])["Exported by"] == "tcpmgm"
    assert client.execute("tcp_match", {"proto": "tls", "remote": "10.1.2.3:5061"})["rule"] == 2
    with pytest.raises(OpenSIPSMIException, match="unknown MI command"):
        client.execute("which", {"command": "nope"})


# -- opensips-cli, as a user runs it ---------------------------------------------------


@pytest.fixture
def opensips_cli(tmp_path, url):
    """Run ``opensips-cli -x mi ARGS`` against the endpoint; (exit status, stdout, stderr).

    HOME and the config file (-f, empty) are in tmp_path, so that no configuration of the machine
    running the tests takes part."""
    home = tmp_path / "home"
    home.mkdir()
    config = home / "opensips-cli.cfg"
    config.write_text("")
    environment = {**os.environ, "HOME": str(home)}

    def run(*args):
        command = [str(OPENSIPS_CLI), "-f", str(config), "-o", "communication_type=http", "-o", f"url={url}"]
        done = subprocess.run(
            [*command, "-x", "mi", *args], capture_output=True, text=True, env=environment, timeout=60, check=False
        )
        return done.returncode, done.stdout, done.stderr

    return run


def test_opensips_cli_runs_tcp_mgm_reload(opensips_cli, mgr):
    mgr.add_rule({"id": 3, "proto": "any", "remote_addr": "192.0.2.0/24"})
    status, out, err = opensips_cli("tcp_mgm:reload")
    assert (status, err) == (0, "")
    report = json.loads(out)
    assert report["loaded"] == 3 and report["rejected"] == []
    assert 3 in mgr.matcher


def test_opensips_cli_which_help_and_list(opensips_cli):
    status, out, err = opensips_cli("which")
    assert (status, err) == (0, "") and set(json.loads(out)) >= NAMES
    status, out, err = opensips_cli("help", "tcp_list")
    assert (status, err) == (0, "")
    assert json.loads(out) == {
        "Help": "lists one page of the rules in service, in the order they are tried",
        "Exported by": "tcpmgm",
    }
    status, out, err = opensips_cli("tcp_list")
    assert (status, err) == (0, "")
    assert [rule["id"] for rule in json.loads(out)["rules"]] == [2, 1]
    status, out, err = opensips_cli("tcp_list", "offset=1", "limit=1")  # opensips-cli sends every value as a string
    assert (status, err) == (0, "") and [rule["id"] for rule in json.loads(out)["rules"]] == [1]


def test_opensips_cli_reports_an_error_answer(opensips_cli):
    status, _, err = opensips_cli("which", "command=nope")
    assert status != 0 and "404: unknown MI command" in err
