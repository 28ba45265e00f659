"""Serving from a rule image (docs/operations.md#serving-many-workers-from-one-image): compile,
publish, follow the file, and keep the image in service when a new one is refused."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dbservers import SQLiteScratch, wait_until

import tcpmgm
from tcpmgm.matching.matcher import Matcher
from tcpmgm.model.errors import ImageError, ReloadError, TcpMgmError

FOLLOW = ["inotify", "poll"] if sys.platform.startswith("linux") else ["poll"]
POLL = 0.02  # seconds between two stat polls: a publish is noticed within a few of them


@pytest.fixture
def table(tmp_path):
    """A SQLite table holding rule 1 (tcp, connect_timeout 100), its manager, and the scratch connection."""
    scratch = SQLiteScratch(str(tmp_path / "rules.db"))
    mgr = tcpmgm.TcpMgm(scratch.url)
    mgr.create_schema()
    mgr.add_rule({"id": 1, "proto": "tcp", "connect_timeout": 100})
    yield mgr, scratch
    mgr.close()
    scratch.close()


def publish(path, rows):
    """Publish an image of ``rows`` at ``path`` as a compiler does (Matcher.save: atomic)."""
    Matcher([tcpmgm.Rule.from_row(row) for row in rows], count_hits=False).save(path)


def publish_bytes(path, data):
    """Publish arbitrary bytes at ``path`` by an atomic rename, as a broken compiler might."""
    scratch = f"{path}.part"
    with open(scratch, "wb") as f:
        f.write(data)
    os.replace(scratch, path)


@pytest.fixture
def serving(tmp_path):
    """An image of rule 1 at tmp_path/rules.img, and the managers made on it (closed afterwards)."""
    path = tmp_path / "rules.img"
    publish(path, [{"id": 1, "proto": "tcp", "connect_timeout": 100}])
    made = []

    def from_image(**options):
        mgr = tcpmgm.TcpMgm.from_image(path, poll_interval=POLL, **options)
        made.append(mgr)
        return mgr

    yield path, from_image
    for mgr in made:
        mgr.close()


def test_an_image_serves_the_compiled_table(table, tmp_path):
    mgr, scratch = table
    mgr.add_rule({"id": 2, "proto": "tls", "remote_addr": "203.0.113.0/24", "local_port": 5061, "keepidle": 60})
    # A row the loader rejects: left out of the image, as a reload leaves it out.
    scratch.execute("INSERT INTO tcp_mgm (id, proto) VALUES (%s, %s)", (3, "bad"))
    path = tmp_path / "rules.img"
    report = mgr.compile(path)
    assert (report.loaded, len(report.rejected), report.schema_version) == (2, 1, 2)
    assert (mgr.compiles, mgr.failed_compiles, mgr.reloads) == (1, 0, 0)
    assert len(mgr.matcher) == 0  # compiling puts nothing in service

    served = tcpmgm.TcpMgm.from_image(path, watch=False)
    try:
        assert served.image_path == str(path)
        assert served.image_watcher is None
        assert repr(served) == f"<TcpMgm image={str(path)!r} rules=2>"
        mgr.reload()
        for query in [("tcp", "192.0.2.1"), ("tls", "203.0.113.9", 0, "192.0.2.10", 5061), ("ws", "192.0.2.1")]:
            assert served.lookup(*query) == mgr.lookup(*query)
            assert served.explain(*query).matches == mgr.explain(*query).matches
        assert served.rules_as_read == mgr.rules_as_read  # database order, kept in the image
        assert [r.id for r in served.opensips_order.paths] == [r.id for r in mgr.opensips_order.paths]
        assert served.matcher.schema_version == 2
        assert served.hits() == {0: 1, 1: 1, 2: 1}  # the image holds no counts: each manager counts its own
    finally:
        served.close()


def test_rules_as_read_are_made_from_the_matcher_in_database_order(table):
    mgr, scratch = table
    scratch.execute("INSERT INTO tcp_mgm (id, proto, connect_timeout) VALUES (%s, %s, %s)", (9, "tls", 5))
    scratch.execute("INSERT INTO tcp_mgm (id, proto, connect_timeout) VALUES (%s, %s, %s)", (4, "ws", 6))
    mgr.reload()
    read = [r.id for r in mgr.rules_as_read]
    assert read == [rule.id for rule in mgr.matcher.as_given()]
    assert sorted(read) == [1, 4, 9]
    assert mgr.opensips_order is mgr.opensips_order  # built once per matcher in service
    before = mgr.opensips_order
    mgr.reload()
    assert mgr.opensips_order is not before


@pytest.mark.parametrize("method", FOLLOW)
def test_a_new_file_at_the_path_is_put_in_service(serving, method):
    path, from_image = serving
    mgr = from_image(method=method)
    assert mgr.image_watcher.running and mgr.image_watcher.active_method == method
    assert mgr.lookup("tcp", "192.0.2.1").connect_timeout == 100
    old = mgr.matcher
    publish(path, [{"id": 1, "proto": "tcp", "connect_timeout": 200}, {"id": 2, "proto": "tls"}])
    assert wait_until(lambda: mgr.lookup("tcp", "192.0.2.1").connect_timeout == 200)
    assert mgr.lookup("tls", "192.0.2.1").id == 2
    assert mgr.reloads >= 1 and mgr.failed_reloads == 0
    # A caller that still holds the old matcher keeps reading its rules: it lives while it is held.
    assert old.lookup("tcp", "192.0.2.1").connect_timeout == 100 and old.lookup("tls", "192.0.2.1").id == 0
    # Another one, the same size: noticed too (a rename gives the path another file).
    publish(path, [{"id": 1, "proto": "tcp", "connect_timeout": 300}, {"id": 2, "proto": "tls"}])
    assert wait_until(lambda: mgr.lookup("tcp", "192.0.2.1").connect_timeout == 300)


@pytest.mark.parametrize("method", FOLLOW)
def test_a_refused_file_keeps_the_image_in_service(serving, method, caplog):
    path, from_image = serving
    mgr = from_image(method=method)
    good = path.read_bytes()
    with caplog.at_level(logging.ERROR, logger="tcpmgm"):
        publish_bytes(path, b"not an image at all")
        assert wait_until(lambda: mgr.failed_reloads == 1)
        publish_bytes(path, good[: len(good) // 2])  # truncated
        assert wait_until(lambda: mgr.failed_reloads == 2)
    assert mgr.lookup("tcp", "192.0.2.1").connect_timeout == 100  # the old image serves on
    assert mgr.reloads == 0
    refusals = [r.getMessage() for r in caplog.records if "old rules stay in service" in r.getMessage()]
    assert len(refusals) == 2 and all(f"image {path}" in m for m in refusals)
    assert not any(r.exc_info for r in caplog.records)  # a refused image is no bug: one line, no traceback
    publish(path, [{"id": 5, "proto": "tcp", "connect_timeout": 500}])
    assert wait_until(lambda: mgr.lookup("tcp", "192.0.2.1").id == 5)


def test_reload_reopens_the_path_and_keeps_the_image_when_refused(serving):
    path, from_image = serving
    mgr = from_image(watch=False)
    publish(path, [{"id": 7, "proto": "tcp", "connect_timeout": 700}])
    assert mgr.lookup("tcp", "192.0.2.1").id == 1  # not watching: nothing changes by itself
    report = mgr.reload()
    assert (report.loaded, report.rejected, report.warnings) == (1, (), ())
    assert mgr.lookup("tcp", "192.0.2.1").id == 7 and mgr.last_report == report
    publish_bytes(path, b"\0" * 4096)
    with pytest.raises(ReloadError, match="old rules stay in service") as info:
        mgr.reload()
    assert isinstance(info.value.__cause__, ImageError)
    assert (mgr.reloads, mgr.failed_reloads) == (1, 1)
    assert mgr.lookup("tcp", "192.0.2.1").id == 7
    os.remove(path)
    with pytest.raises(ReloadError, match="old rules stay in service"):
        mgr.reload()
    assert mgr.lookup("tcp", "192.0.2.1").id == 7


def test_a_file_that_cannot_be_served_is_refused_at_once(tmp_path):
    with pytest.raises(ImageError, match="cannot read"):
        tcpmgm.TcpMgm.from_image(tmp_path / "missing.img")
    publish_bytes(tmp_path / "bad.img", b"TCPMGMIM" + b"\0" * 600)
    with pytest.raises(ImageError):
        tcpmgm.TcpMgm.from_image(tmp_path / "bad.img")


def test_watching_starts_from_the_file_at_the_path(serving):
    """A file published after the image in service was opened and before the watcher was
    armed is put in service when the watching begins."""
    path, from_image = serving
    mgr = from_image(watch=False)
    publish(path, [{"id": 3, "proto": "tcp"}])
    mgr.watch_image(method="poll", poll_interval=POLL)
    assert mgr.lookup("tcp", "192.0.2.1").id == 3  # at once, not at the next change


def test_close_stops_following_the_file(serving):
    path, from_image = serving
    mgr = from_image()
    watcher = mgr.image_watcher
    mgr.close()
    assert not watcher.running
    publish(path, [{"id": 2, "proto": "tcp"}])
    assert not wait_until(lambda: mgr.lookup("tcp", "192.0.2.1").id == 2, deadline=0.5)
    assert mgr.lookup("tcp", "192.0.2.1").id == 1  # the rules stay in service after close()


def test_an_image_manager_has_no_table(serving, tmp_path):
    _, from_image = serving
    mgr = from_image(watch=False)
    calls = {
        "create_schema": mgr.create_schema,
        "add_rule": lambda: mgr.add_rule({"proto": "tcp"}),
        "install_change_trigger": mgr.install_change_trigger,
        "watch": mgr.watch,
        "compile": lambda: mgr.compile(tmp_path / "other.img"),
        "source": lambda: mgr.source,
    }
    for name, call in calls.items():
        with pytest.raises(TcpMgmError, match=rf"^TcpMgm\.{name} needs the rule table, and this manager serves"):
            call()
    assert not (tmp_path / "other.img").exists()


def test_a_database_manager_follows_its_table_not_an_image(table):
    mgr, _ = table
    with pytest.raises(TcpMgmError, match="reads a database, not an image"):
        mgr.watch_image()


def test_a_failed_compile_leaves_the_image_as_it_was(table, tmp_path, caplog):
    mgr, scratch = table
    path = tmp_path / "rules.img"
    mgr.compile(path)
    before = path.read_bytes()
    scratch.execute("INSERT INTO tcp_mgm (id, proto) VALUES (%s, %s)", (2, "bad"))
    mgr.strict = True
    with pytest.raises(ReloadError, match=rf"^strict mode: 1 row\(s\) rejected, the image {path} stays as it was"):
        mgr.compile(path)
    assert path.read_bytes() == before
    assert (mgr.compiles, mgr.failed_compiles) == (1, 1)
    with caplog.at_level(logging.ERROR, logger="tcpmgm"), pytest.raises(ReloadError, match="cannot write the image"):
        mgr.strict = False
        mgr.compile(tmp_path / "no such folder" / "rules.img")
    assert not any(r.exc_info for r in caplog.records)
    assert mgr.failed_compiles == 2
    assert sorted(os.listdir(tmp_path)) == ["rules.db", "rules.img"]  # no temporary file left behind


def test_the_database_watcher_compiles_and_the_workers_follow(table, tmp_path):
    """One process watches the table and publishes; the workers follow the file: one read of
    the table per change, whatever the number of workers."""
    mgr, scratch = table
    path = tmp_path / "rules.img"
    mgr.compile(path)
    workers = [tcpmgm.TcpMgm.from_image(path, poll_interval=POLL, method=method) for method in FOLLOW]
    reports = []
    try:
        with mgr.watch(compile_to=path, method="poll", interval=0.05, debounce=0.05, on_reload=reports.append) as w:
            assert wait_until(lambda: w.reloads >= 1)  # the compile every watch begins with
            scratch.execute("INSERT INTO tcp_mgm (id, proto, connect_timeout) VALUES (%s, %s, %s)", (2, "tls", 1500))
            for worker in workers:
                assert wait_until(lambda worker=worker: worker.lookup("tls", "192.0.2.1").id == 2)
        assert mgr.compiles == 1 + len(reports) and all(report.loaded in (1, 2) for report in reports)
        assert reports[-1].loaded == 2
        assert (mgr.reloads, len(mgr.matcher)) == (0, 0)  # the watching process compiled, never reloaded
    finally:
        for worker in workers:
            worker.close()


# -- the command line -------------------------------------------------------------------

SCRIPT = Path(sys.executable).parent / "tcpmgm"


def run(*args, cwd):
    if not SCRIPT.exists():
        pytest.skip(f"the tcpmgm console script is not installed next to {sys.executable}")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TCPMGM_")}
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=120)


def error_line(result, code):
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_compile_command_writes_an_image(table, tmp_path):
    _, scratch = table
    scratch.execute("INSERT INTO tcp_mgm (id, proto) VALUES (%s, %s)", (2, "bad"))
    result = run("compile", "--db", scratch.url, "--out", "rules.img", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("compiled 1 rule(s) into rules.img (schema version 2, ")
    assert result.stderr == "tcpmgm: note: 1 row(s) rejected and left out (`tcpmgm check` lists them)\n"
    assert Matcher.open(tmp_path / "rules.img").lookup("tcp", "192.0.2.1").connect_timeout == 100

    before = (tmp_path / "rules.img").read_bytes()
    strict = run("compile", "--db", scratch.url, "--out", "rules.img", "--strict", cwd=tmp_path)
    assert error_line(strict, 1).startswith("tcpmgm: error: strict mode: 1 row(s) rejected, the image rules.img stays")
    assert (tmp_path / "rules.img").read_bytes() == before


def test_compile_command_failures(table, tmp_path):
    _, scratch = table
    assert "Missing option '--out'" in error_line(run("compile", "--db", scratch.url, cwd=tmp_path), 2)
    missing = run("compile", "--db", "sqlite:///nothing.db", "--out", "rules.img", cwd=tmp_path)
    assert error_line(missing, 1).startswith("tcpmgm: error: ")
    unwritable = run("compile", "--db", scratch.url, "--out", "nowhere/rules.img", cwd=tmp_path)
    assert error_line(unwritable, 1).startswith("tcpmgm: error: cannot write the image nowhere/rules.img: ")
    assert not (tmp_path / "rules.img").exists()


def test_without_inotify_auto_polls_and_inotify_is_an_error(serving, monkeypatch):
    from tcpmgm.service import filewatch

    def no_inotify(directory):
        raise OSError(24, "inotify_init1: Too many open files")  # the per-user limit of instances, say

    monkeypatch.setattr(filewatch, "_Inotify", no_inotify)
    path, from_image = serving
    with pytest.raises(OSError, match="Too many open files"):
        from_image(method="inotify")
    mgr = from_image()
    assert mgr.image_watcher.active_method == "poll"
    publish(path, [{"id": 4, "proto": "tcp"}])
    assert wait_until(lambda: mgr.lookup("tcp", "192.0.2.1").id == 4)


@pytest.mark.skipif("inotify" not in FOLLOW, reason="inotify is Linux only")
def test_a_directory_gone_from_inotify_is_polled(tmp_path):
    """The watch on a directory ends with the directory (removed, or a volume unmounted): the
    watcher then polls the path, and a file published there again is taken."""
    folder = tmp_path / "images"
    folder.mkdir()
    path = folder / "rules.img"
    publish(path, [{"id": 1, "proto": "tcp"}])
    mgr = tcpmgm.TcpMgm.from_image(path, method="inotify", poll_interval=POLL)
    try:
        os.remove(path)
        folder.rmdir()
        assert wait_until(lambda: mgr.image_watcher.active_method == "poll")
        folder.mkdir()
        publish(path, [{"id": 6, "proto": "tcp"}])
        assert wait_until(lambda: mgr.lookup("tcp", "192.0.2.1").id == 6)
    finally:
        mgr.close()


def test_the_admin_endpoint_of_an_image_manager(serving):
    import json

    from tcpmgm.service import mi

    path, from_image = serving
    mgr = from_image(watch=False)
    dispatcher = mi.Dispatcher(mgr)

    def ask(method, **params):
        status, body = dispatcher.handle(
            json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
        )
        assert status == 200
        return json.loads(body)

    publish(path, [{"id": 8, "proto": "tcp"}, {"id": 9, "proto": "tls"}])
    assert ask("tcp_reload")["result"]["loaded"] == 2  # tcp_reload re-opens the image
    assert [rule["id"] for rule in ask("tcp_list")["result"]["rules"]] == [8, 9]
    error = ask("tcp_opensips_check")["error"]
    assert error["code"] == mi.SERVER_ERROR and f"serves the image {path}" in error["message"]
