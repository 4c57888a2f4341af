"""Pool workers end with the process that started them."""

import os
import signal

import pytest

from gradlab.parent_watch import exit_with_parent
from process_helpers import kill_group, read_lines, running, start, wait_until


@pytest.fixture(params=["with", "without"])
def pool(request):
    """A parent process with a spawn pool of two workers, each running a long task; the workers' PIDs."""
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
    if watch == "with":
        seconds = wait_until(lambda: not any(running(pid) for pid in workers), timeout=5)
        assert seconds < 2  # polled every 0.1 s here
    else:  # the failure the watch fixes: the same pool without it keeps its workers
        with pytest.raises(AssertionError, match="not met"):
            wait_until(lambda: not any(running(pid) for pid in workers), timeout=1.5)


def test_poll_interval_must_be_positive():
    with pytest.raises(ValueError, match="poll_every"):
        exit_with_parent(os.getppid(), poll_every=0)
