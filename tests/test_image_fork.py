"""Worker processes serving one image while it is replaced (docs/operations.md#serving-many-workers-from-one-image).

A parent compiles an image and forks 8 workers; each serves it (``TcpMgm.from_image``,
following the file) and looks up in a loop while the parent publishes a new image
``TCPMGM_FORK_REPLACEMENTS`` times (default 1,000).  The rules of version ``v`` answer with
``connect_timeout = v``, and odd and even versions have different rules, so every answer tells
the version that gave it and whether it is that version's whole answer.  Every answer must be
one published version's, the versions a worker sees never go back, and every worker ends on the
last one.  The workers report through a pipe each.
"""

import contextlib
import json
import os
import select
import signal
import time
import warnings

import pytest
from dbservers import SQLiteScratch, wait_until

import tcpmgm
from tcpmgm.matching.matcher import Matcher

REPLACEMENTS = int(os.environ.get("TCPMGM_FORK_REPLACEMENTS", "1000"))
WORKERS = 8
FINAL = 1 + REPLACEMENTS  # the version published last
# Functional deadlines (seconds), far beyond what the work takes, for a hung worker not to hang the suite.
STARTUP = 60.0
FINISH = 120.0
# Seconds a worker pauses between two rounds of lookups: eight workers spinning without a pause
# take every core of a small machine from the publisher, whose 1,000 publishes then take minutes;
# with it a worker still looks up tens of thousands of times and sees nearly every version.
PAUSE = 0.0002
# The lookups of a round, all asked of one matcher: the answers must all be one version's.
QUERIES = (
    ("tcp", "10.0.1.5", 5060),  # rule 3 in odd versions, rule 1 in even ones
    ("tcp", "10.1.2.3", 5060),  # rule 2
    ("tls", "10.2.0.1", 5061),  # rule 1
)

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def rows(version):
    """The rule table of ``version``: each answer carries the version as its connect_timeout."""
    table = [
        {"id": 1, "proto": "any", "remote_addr": "10.0.0.0/8", "connect_timeout": version, "keepidle": 1},
        {"id": 2, "proto": "tcp", "remote_addr": "10.1.0.0/16", "connect_timeout": version, "keepidle": 2},
    ]
    if version % 2:
        table.append({"id": 3, "proto": "tcp", "remote_addr": "10.0.1.0/24", "connect_timeout": version, "keepidle": 3})
    return table


def answer(profile):
    return profile.id, profile.connect_timeout, profile.keepidle


def expected_answers(version):
    oracle = tcpmgm.ReferenceMatcher([tcpmgm.Rule.from_row(row) for row in rows(version)])
    return tuple(answer(oracle.lookup(*query)) for query in QUERIES)


def publish(path, version):
    Matcher([tcpmgm.Rule.from_row(row) for row in rows(version)], count_hits=False).save(path)


@contextlib.contextmanager
def forked(work):
    """Fork a child running ``work(write)`` (``write``: its end of a pipe to the parent); yields
    ``(pid, read)``.  The child always ends with os._exit: it never returns into pytest."""
    read, write = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12 warns of fork() in a process with threads; the children touch no lock
        # those threads could hold (what they run is tcpmgm's, which resets its own: _in_own_process).
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read)
            work(write)
            code = 0
        except BaseException as exc:
            with contextlib.suppress(BaseException):
                os.write(write, (json.dumps({"crashed": repr(exc)}) + "\n").encode())
        finally:
            os._exit(code)
    os.close(write)
    try:
        yield pid, read
    finally:
        os.close(read)
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG) == (0, 0):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)


def read_line(fd, deadline):
    """One line from the pipe ``fd`` before ``deadline`` (time.monotonic()), as JSON."""
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"a worker said nothing in time (so far {data!r})")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise AssertionError(f"a worker closed its pipe (so far {data!r})")
        data += chunk
    return json.loads(data)


def say(fd, message):
    os.write(fd, (json.dumps(message) + "\n").encode())


def serve(path, expected, write):
    """A worker: serve the image, look up in a loop until the last version, report."""
    mgr = tcpmgm.TcpMgm.from_image(path)
    say(write, {"ready": mgr.image_watcher.active_method})
    errors, versions, lookups, last = [], set(), 0, 0
    give_up = time.monotonic() + FINISH
    while last != FINAL:
        if time.monotonic() > give_up:
            errors.append(f"version {FINAL} not seen in {FINISH} s (last {last})")
            break
        matcher = mgr.matcher  # a round from one matcher: one version's answers, whole
        got = tuple(answer(matcher.lookup(*query)) for query in QUERIES)
        single = answer(mgr.lookup(*QUERIES[0]))  # and a lookup through the manager, as a service makes it
        lookups += len(QUERIES) + 1
        time.sleep(PAUSE)
        for version, found in ((got[0][1], got), (single[1], None)):
            if found is not None and expected.get(version) != found:
                errors.append(f"round {found} is no published version's answer")
            elif found is None and (version not in expected or expected[version][0] != single):
                errors.append(f"lookup {single} is no published version's answer")
            if version < last:
                errors.append(f"version {version} after version {last}")
            last = max(last, version)
            versions.add(version)
    say(
        write,
        {
            "lookups": lookups,
            "versions": len(versions),
            "last": last,
            "errors": len(errors),
            "first_errors": errors[:5],
            "failed_reloads": mgr.failed_reloads,
        },
    )
    mgr.close()


def test_eight_workers_follow_an_image_replaced_many_times(tmp_path):
    path = tmp_path / "rules.img"
    scratch = SQLiteScratch(str(tmp_path / "rules.db"))
    try:
        compiler = tcpmgm.TcpMgm(scratch.url)
        compiler.create_schema()
        for row in rows(1):
            compiler.add_rule(row)
        assert compiler.compile(path).loaded == 3  # version 1, compiled from the table
        compiler.close()
    finally:
        scratch.close()
    expected = {version: expected_answers(version) for version in range(1, FINAL + 1)}
    assert len(set(expected.values())) == len(expected)  # every version answers differently

    with contextlib.ExitStack() as stack:
        workers = [stack.enter_context(forked(lambda write: serve(path, expected, write))) for _ in range(WORKERS)]
        started = time.monotonic() + STARTUP
        for _, read in workers:
            assert "ready" in read_line(read, started)
        for version in range(2, FINAL + 1):
            publish(path, version)
        finished = time.monotonic() + FINISH
        reports = [read_line(read, finished) for _, read in workers]
        statuses = [os.waitpid(pid, 0)[1] for pid, _ in workers]

    assert [r.get("crashed") for r in reports] == [None] * WORKERS
    assert [r["first_errors"] for r in reports] == [[]] * WORKERS
    assert [r["errors"] for r in reports] == [0] * WORKERS
    assert [r["last"] for r in reports] == [FINAL] * WORKERS
    assert [r["failed_reloads"] for r in reports] == [0] * WORKERS  # every file published was whole
    assert all(r["lookups"] > 0 and r["versions"] >= 2 for r in reports)
    assert statuses == [0] * WORKERS


def test_a_forked_child_follows_the_image_itself_and_leaves_the_parent_watching(tmp_path):
    """The manager a child inherits: its watcher is the parent's (close() in the child must not
    stop it), watch_image() starts the child's own, and a reload in the child does not wait for
    a lock that a thread of the parent held at the fork."""
    path = tmp_path / "rules.img"
    publish(path, 1)
    mgr = tcpmgm.TcpMgm.from_image(path, poll_interval=0.02)
    try:

        def child(write):
            inherited = mgr.image_watcher
            say(write, {"running": inherited.running})
            mgr.close()  # the parent's watcher is not this process's to stop
            mgr.watch_image()
            say(write, {"following": mgr.image_watcher.running and mgr.image_watcher is not inherited})
            assert wait_until(lambda: mgr.lookup("tcp", "10.0.1.5").connect_timeout == 2, deadline=FINISH)
            mgr.reload()  # the parent held the reload lock at the fork
            say(write, {"version": mgr.lookup("tcp", "10.0.1.5").connect_timeout})
            mgr.close()

        with mgr._reload_lock, forked(child) as (pid, read):
            pass_lock = read_line(read, time.monotonic() + STARTUP)
            assert pass_lock == {"running": False}
            assert read_line(read, time.monotonic() + STARTUP) == {"following": True}
            publish(path, 2)
            assert read_line(read, time.monotonic() + FINISH) == {"version": 2}
            assert os.waitpid(pid, 0)[1] == 0
        assert mgr.image_watcher.running  # the child's close() left the parent's watcher alone
        publish(path, 3)
        assert wait_until(lambda: mgr.lookup("tcp", "10.0.1.5").connect_timeout == 3)
    finally:
        mgr.close()
