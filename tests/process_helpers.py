"""Real processes for the locking, cleaning and worker tests.

Run as a script (``python process_helpers.py MODE ...``) it plays one role:

- ``hold SWEEP``: take the sweep lock, print ``held``, wait to be killed.
- ``write TARGET``: start an atomic write of TARGET, print ``writing`` half-way, wait to be killed.
- ``pool with|without|forkserver``: start a spawn pool of two workers (with or without
  :func:`gradlab.sweep.parent_watch.exit_with_parent`), or a watched pool of workers forked
  by gradlab's fork server (:func:`gradlab.sweep.workers.worker_context`), give each a long
  task that prints its PID, and wait to be killed.

Imported, it gives the tests a way to start those roles and to race locks
from several processes (:func:`race`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import selectors
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def ctrl_c_reaches_it() -> None:
    """A ``preexec_fn``: the child takes SIGINT as a terminal's Ctrl-C, even when the tests run in a background job
    (a shell starts those with SIGINT ignored, and an ignored signal stays ignored across exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*arguments: str) -> subprocess.Popen:
    """Start this file as a script in a new process, importing gradlab from this checkout.

    The process leads a process group of its own, which its children join:
    :func:`kill_group` ends them all, whatever the test saw of them.
    """
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPOSITORY), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, __file__, *arguments], stdout=subprocess.PIPE, env=environment,
                            start_new_session=True)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL whatever is left of the process group :func:`start` made for ``process``."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    process.stdout.close()


def read_lines(process: subprocess.Popen, count: int, timeout: float = 20.0) -> list[str]:
    """The next ``count`` lines ``process`` prints, failing after ``timeout`` seconds."""
    # Raw reads of the pipe: a buffered readline could swallow the next line
    # into its buffer, where select() no longer sees it.
    pending = _pending.setdefault(process.pid, b"")
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while pending.count(b"\n") < count:
            if not selector.select(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"process {process.pid} printed {pending!r} in {timeout} s, expected {count} lines")
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"process {process.pid} ended (status {process.wait()}) after printing {pending!r}")
            pending += chunk
    lines = pending.split(b"\n")
    _pending[process.pid] = b"\n".join(lines[count:])
    return [line.decode().strip() for line in lines[:count]]


_pending: dict[int, bytes] = {}


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, dead but not yet reaped, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_until(condition, timeout: float) -> float:
    """Seconds until ``condition()`` held, polling; raises AssertionError after ``timeout``."""
    begin = time.monotonic()
    while not condition():
        if time.monotonic() - begin > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - begin


def write_lock_file(path: Path, **fields) -> None:
    """A lock file written by hand, as another host's gradlab would have."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"token": "handwritten", "host": "elsewhere", "pid": 4242, "process_start": None,
              "started": time.time() - 10, "heartbeat": time.time(), **fields}
    path.write_text(json.dumps(record))


def race(barrier, results, root: str, rounds: int, index: int) -> None:
    """Try for ``<root>/sweep<r>`` in each round at the same moment as the others; report who won.

    A winner whose lock file is no longer its own by the end of the round
    reports "lost": two processes both believed they held the lock.
    """
    from gradlab.store.locking import SweepLock, SweepLockedError, SweepLockLost

    for round_index in range(rounds):
        lock = SweepLock(Path(root) / f"sweep{round_index}", stale_after=1.0, heartbeat_every=0.1)
        barrier.wait(timeout=30)
        try:
            lock.acquire()
            outcome = "won"
        except SweepLockedError:
            outcome = "locked"
        barrier.wait(timeout=30)  # everyone has tried while the winner still holds
        if outcome == "won":
            try:
                lock.verify()
            except SweepLockLost:
                outcome = "lost"
        results.put((round_index, index, outcome))
        barrier.wait(timeout=30)
        lock.release()


def race_processes(root: Path, rounds: int, processes: int = 4) -> dict[int, list[str]]:
    """Run :func:`race` in ``processes`` spawned processes; each round's outcomes ("won", "locked", "lost")."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=race, args=(barrier, results, str(root), rounds, index), daemon=True)
               for index in range(processes)]
    for worker in workers:
        worker.start()
    outcomes: dict[int, list[str]] = {round_index: [] for round_index in range(rounds)}
    try:
        for _ in range(rounds * processes):
            round_index, _, outcome = results.get(timeout=30)
            outcomes[round_index].append(outcome)
        for worker in workers:
            worker.join(timeout=30)
            assert worker.exitcode == 0, f"racing process {worker.pid} failed with status {worker.exitcode}"
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
    return outcomes


def what_a_worker_holds() -> tuple[int, bool, bool]:
    """A pool task: this worker's parent PID, and whether torch and its dynamo were imported before the task."""
    return os.getppid(), "torch" in sys.modules, "torch._dynamo" in sys.modules


def allocation_faults(repeats: int = 8) -> int:
    """A pool task: the page faults of filling three 20 MB arrays and freeing them, ``repeats`` times, once warm.

    By default glibc hands the 60 MB back to the kernel when they are freed (above its trim threshold, twice
    the largest block freed), and the next fills fault fresh pages in; with the thresholds raised, it keeps
    them for the next arrays.
    """
    import resource

    import numpy as np

    def faults() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def fill() -> None:
        arrays = [np.ones(2_500_000) for _ in range(3)]
        del arrays

    fill()  # the first time faults either way
    before = faults()
    for _ in range(repeats):
        fill()
    return faults() - before


def sleep_and_report(seconds: float) -> None:
    os.write(1, f"{os.getpid()}\n".encode())  # one write: lines of two workers must not interleave
    time.sleep(seconds)


def _main(mode: str, argument: str) -> None:
    if mode == "hold":
        from gradlab.store.locking import SweepLock

        with SweepLock(argument, stale_after=1.0, heartbeat_every=0.05):
            print("held", flush=True)
            time.sleep(60)
    elif mode == "write":
        from gradlab.store.atomic import write_atomic

        def stall(temporary: Path) -> None:
            temporary.write_text("half of it")
            print("writing", flush=True)
            time.sleep(60)

        write_atomic(argument, stall)
    elif mode == "pool":
        from gradlab.sweep.parent_watch import exit_with_parent
        from gradlab.sweep.workers import worker_context

        watch = {"initializer": exit_with_parent, "initargs": (os.getpid(), 0.1)} if argument != "without" else {}
        context = worker_context() if argument == "forkserver" else multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=2, mp_context=context, **watch)
        for _ in range(2):
            pool.submit(sleep_and_report, 60)
        time.sleep(60)


if __name__ == "__main__":
    _main(*sys.argv[1:])
