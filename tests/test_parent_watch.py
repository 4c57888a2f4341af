"""Pool workers end with the process that started them."""

import os
import signal

import pytest
from process_helpers import kill_group, read_lines, running, start, wait_until

from gradlab.sweep.parent_watch import exit_with_parent


@pytest.fixture(params=["with", "without", "forkserver"])
def pool(request):
    """A parent process with a pool of two workers, each running a long task; the workers' PIDs.

    ``with`` and ``without`` the watch: spawned workers; ``forkserver``: watched workers forked by a fork
    server, whose parent is that server, not the process that started the pool.
    """
    parent = start("pool", request.param)
    try:
        workers = [int(line) for line in read_lines(parent, 2, timeout=60)]
        assert len(set(workers)) == 2 and all(running(pid) for pid in workers)
        yield request.param, parent, workers
    finally:
        kill_group(parent)


def test_workers_exit_when_their_parent_is_killed_and_only_with_the_watch(pool):
    watch, parent, workers = pool
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    if watch in ("with", "forkserver"):
        # no bound on the seconds: a loaded machine may be slow to schedule them; that the watch
        # acts at its first poll after the parent is gone is checked without a clock below
        wait_until(lambda: not any(running(pid) for pid in workers), timeout=60)
    else:  # the failure the watch fixes: the same pool without it keeps its workers
        with pytest.raises(AssertionError, match="not met"):
            wait_until(lambda: not any(running(pid) for pid in workers), timeout=1.5)


def test_poll_interval_must_be_positive():
    with pytest.raises(ValueError, match="poll_every"):
        exit_with_parent(os.getppid(), poll_every=0)


def test_the_watch_exits_at_its_first_poll_after_the_parent_is_gone(monkeypatch):
    from gradlab.sweep import parent_watch

    parents = iter([100, 100, 100, 1, 1])  # the parent dies between the third and the fourth poll
    polls = []

    def getppid():
        polls.append(1)
        return next(parents)

    class Exited(Exception):
        pass

    def exit_now(status):
        raise Exited(status)

    monkeypatch.setattr(parent_watch.os, "getppid", getppid)
    monkeypatch.setattr(parent_watch.os, "_exit", exit_now)
    with pytest.raises(Exited) as exited:
        parent_watch._watch(100, poll_every=1e-6)
    assert exited.value.args == (parent_watch.ORPHAN_EXIT_STATUS,)
    assert len(polls) == 4


def test_a_watched_process_that_ended_is_not_running_even_before_it_is_reaped():
    import subprocess
    import sys
    import time

    from gradlab.sweep.parent_watch import running

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_until(lambda: not running(child.pid), timeout=60)  # a zombie: ended, not yet reaped
    assert child.poll() == 0
    assert not running(child.pid)
    assert running(os.getpid())
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.2)
        assert running(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()
