"""The sweep lock, against real competing processes."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from process_helpers import kill_group, race_processes, read_lines, running, start, wait_until, write_lock_file

from gradlab.store.locking import SweepLock, SweepLockedError, SweepLockLost, lock_path_for, read_holder

ROUNDS = 20


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


LEFT_BEHIND = ("nothing", "dead_pid_here", "old_heartbeat_elsewhere", "unreadable_old")


def test_exactly_one_of_four_racing_processes_wins_fresh_or_stale(tmp_path):
    dead = _dead_pid()
    for round_index in range(ROUNDS * len(LEFT_BEHIND)):
        path = lock_path_for(tmp_path / f"sweep{round_index}")
        left_behind = LEFT_BEHIND[round_index % len(LEFT_BEHIND)]
        if left_behind == "dead_pid_here":
            write_lock_file(path, token=f"dead{round_index}", host=socket.gethostname(), pid=dead)
        elif left_behind == "old_heartbeat_elsewhere":
            write_lock_file(path, token=f"old{round_index}", heartbeat=time.time() - 3600)
        elif left_behind == "unreadable_old":
            path.write_text("{not json")
            os.utime(path, (time.time() - 3600, time.time() - 3600))
    outcomes = race_processes(tmp_path, ROUNDS * len(LEFT_BEHIND))
    wrong = {(index, LEFT_BEHIND[index % len(LEFT_BEHIND)]): sorted(seen) for index, seen in outcomes.items()
             if sorted(seen) != ["locked", "locked", "locked", "won"]}
    assert not wrong, f"rounds without exactly one winner (round, left behind): outcomes {wrong}"
    assert sorted(os.listdir(tmp_path)) == []  # every lock released, no claim or private file left


def test_live_holder_blocks_with_its_pid_host_and_what_to_do(tmp_path):
    holder = start("hold", str(tmp_path / "sweep"))
    try:
        assert read_lines(holder, 1) == ["held"]
        with pytest.raises(SweepLockedError) as caught:
            SweepLock(tmp_path / "sweep").acquire()
        message = str(caught.value)
        assert f"PID {holder.pid} on host {socket.gethostname()}" in message
        assert str(lock_path_for(tmp_path / "sweep")) in message and "Wait for that sweep" in message
    finally:
        kill_group(holder)


def test_sigkilled_holder_does_not_block_the_next_sweep(tmp_path):
    holder = start("hold", str(tmp_path / "sweep"))
    assert read_lines(holder, 1) == ["held"]
    holder.send_signal(signal.SIGKILL)
    wait_until(lambda: not running(holder.pid), timeout=60)  # a zombie until reaped below: dead all the same
    try:
        with SweepLock(tmp_path / "sweep") as lock:
            assert read_holder(lock.path).pid == os.getpid()
    finally:
        kill_group(holder)  # reaps it


def test_other_host_lock_is_taken_over_only_after_its_heartbeat_is_stale(tmp_path):
    path = lock_path_for(tmp_path / "sweep")
    write_lock_file(path, host="node7", pid=os.getpid(), heartbeat=time.time())  # a live-looking PID: not ours to check
    # Ages are set in the file, not waited for: a stalled test process must not make a fresh heartbeat stale.
    lock = SweepLock(tmp_path / "sweep", stale_after=600, heartbeat_every=0.1)
    with pytest.raises(SweepLockedError, match=f"PID {os.getpid()} on host node7"):
        lock.acquire()
    write_lock_file(path, host="node7", pid=os.getpid(), heartbeat=time.time() - 601)  # node7 stopped beating
    with lock:
        assert read_holder(path).host == socket.gethostname()


def test_unreadable_lock_file_ages_by_its_mtime(tmp_path):
    path = lock_path_for(tmp_path / "sweep")
    path.write_text("")
    lock = SweepLock(tmp_path / "sweep", stale_after=600, heartbeat_every=0.1)
    with pytest.raises(SweepLockedError, match="PID [?] on host [?]"):
        lock.acquire()
    os.utime(path, (time.time() - 601, time.time() - 601))
    with lock:
        assert read_holder(path).pid == os.getpid()


def test_claim_left_by_a_killed_contender_is_passed_over_once_old(tmp_path):
    path = lock_path_for(tmp_path / "sweep")
    write_lock_file(path, token="abandoned", heartbeat=time.time() - 3600)
    claim = path.with_name(f"{path.name}.claim-abandoned-0")
    claim.write_text("node7 99\n")
    os.utime(claim, (time.time() - 3600, time.time() - 3600))
    with SweepLock(tmp_path / "sweep", stale_after=0.5, heartbeat_every=0.1):
        assert read_holder(path).pid == os.getpid()
    assert sorted(os.listdir(tmp_path)) == [claim.name]  # the old claim is left; it blocks nothing


def test_heartbeat_advances_while_held(tmp_path):
    with SweepLock(tmp_path / "sweep", stale_after=1.0, heartbeat_every=0.05) as lock:
        first = read_holder(lock.path)
        # polled, not slept: on a loaded machine the heartbeat thread may run late, but it must run
        wait_until(lambda: read_holder(lock.path).heartbeat > first.heartbeat, timeout=60)
        second = read_holder(lock.path)
    assert second.token == first.token and second.started == first.started


def test_release_removes_the_lock_file_only_while_it_is_ours(tmp_path):
    lock = SweepLock(tmp_path / "sweep", stale_after=1.0, heartbeat_every=0.05).acquire()
    lock.verify()
    os.rename(lock.path, tmp_path / "taken")  # what a take-over does, then writes its own
    write_lock_file(lock.path, token="successor", host="node7")
    written = lock.path.read_text()
    with pytest.raises(SweepLockLost, match="node7"):
        lock.verify()
    lock._write_heartbeat()  # what the heartbeat thread does, called here rather than waited for
    assert lock.path.read_text() == written  # our heartbeat goes to our old file, not the successor's
    lock.release()
    assert json.loads(lock.path.read_text())["token"] == "successor"

    lock.path.unlink()
    with SweepLock(tmp_path / "sweep") as again:
        assert again.path.exists()
    assert not again.path.exists()


def test_lock_sits_beside_the_folder_and_survives_its_deletion(tmp_path):
    sweep = tmp_path / "out" / "sweep"
    assert lock_path_for(sweep) == tmp_path / "out" / ".sweep.lock"
    assert lock_path_for(tmp_path / "out" / "." / "sweep" / "") == lock_path_for(sweep)
    with SweepLock(sweep) as lock:
        sweep.mkdir()
        (sweep / "sweep.json").write_text("{}")
        shutil.rmtree(sweep)  # --overwrite
        lock.verify()
        assert os.listdir(sweep.parent) == [".sweep.lock"]


def test_bad_timings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="at most a third"):
        SweepLock(tmp_path / "sweep", stale_after=1.0, heartbeat_every=0.5)
    with pytest.raises(ValueError, match="> 0"):
        SweepLock(tmp_path / "sweep", stale_after=0.0)


def test_filesystem_without_hard_links_falls_back_to_exclusive_open(tmp_path, monkeypatch):
    import errno

    def no_links(source, target):
        raise OSError(errno.EPERM, "Operation not permitted")  # what some FUSE and SMB mounts answer

    monkeypatch.setattr(os, "link", no_links)
    with SweepLock(tmp_path / "sweep", stale_after=1.0, heartbeat_every=0.05) as lock:
        assert read_holder(lock.path).pid == os.getpid()
        with pytest.raises(SweepLockedError, match=f"PID {os.getpid()}"):
            SweepLock(tmp_path / "sweep").acquire()
    assert os.listdir(tmp_path) == []


def test_a_reused_pid_on_this_host_does_not_keep_a_dead_lock(tmp_path):
    path = lock_path_for(tmp_path / "sweep")
    # The PID runs (it is this test), but it is not the process that took the lock: its start time differs.
    write_lock_file(path, host=socket.gethostname(), pid=os.getpid(), process_start="1")
    with SweepLock(tmp_path / "sweep") as lock:
        assert read_holder(lock.path).token != "handwritten"


def test_a_holder_whose_lock_was_taken_over_finds_out_before_it_writes(tmp_path):
    from gradlab.store.atomic import checked_writes, write_atomic
    from gradlab.store.locking import check_lock

    with SweepLock(tmp_path / "sweep") as lock:
        check_lock(lock.path, lock.token)  # still ours: no error
        os.unlink(lock.path)  # what a take-over from another host does, then it writes its own lock file
        write_lock_file(lock.path, token="theirs", host="node7", pid=4242)
        with pytest.raises(SweepLockLost, match="no longer holds the sweep lock .*PID 4242 on host node7"):
            lock.verify()
        with checked_writes(lambda path: lock.verify()):
            with pytest.raises(SweepLockLost):
                write_atomic(tmp_path / "sweep" / "metrics.json", lambda temporary: temporary.write_text("{}"))
        assert not (tmp_path / "sweep").exists()  # nothing written, not even the folder
    assert read_holder(lock_path_for(tmp_path / "sweep")).token == "theirs"  # release left their lock alone
