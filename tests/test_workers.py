"""Local workers start from a fork server that imported torch once, and commands end without the teardown."""

from __future__ import annotations

import multiprocessing.forkserver
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor

import pandas as pd
import pytest
from process_helpers import what_a_worker_holds

from gradlab import scripts
from gradlab.sweep.workers import has_fork_server, start_worker_server, stop_worker_server, worker_context

needs_fork_server = pytest.mark.skipif(not has_fork_server(), reason="this platform has no fork server")


@needs_fork_server
def test_workers_are_forked_by_a_server_that_imported_torch_once():
    start_worker_server()
    try:
        with ProcessPoolExecutor(max_workers=2, mp_context=worker_context()) as pool:
            held = [future.result() for future in [pool.submit(what_a_worker_holds) for _ in range(2)]]
    finally:
        stop_worker_server()
    server = {parent for parent, _, _ in held}
    assert len(server) == 1 and server != {os.getpid()}  # both forked by the one server, not by this process
    assert all(torch for _, torch, _ in held)  # imported before any task ran
    assert not any(dynamo for _, _, dynamo in held)  # left to a run that makes a torch optimiser (1 s)
    assert multiprocessing.forkserver._forkserver._forkserver_pid is None  # stopped: the next sweep starts its own
    with pytest.raises(ProcessLookupError):
        os.kill(server.pop(), 0)  # ended (and reaped), not left to tear torch down


@pytest.mark.parametrize(("ensemble", "imported"), [("auto", False), ("off", True)])
def test_only_runs_that_make_a_torch_optimiser_import_dynamo(tmp_path, ensemble, imported):
    """An ensemble's members share one optimiser: its worker never pays torch.optim's import of dynamo (1 s)."""
    code = textwrap.dedent(f"""
        import sys
        from gradlab.scripts import compare_cells

        status = compare_cells(["--dataset", "distance", "--seq-len", "8", "--n-train", "32", "--n-validation", "8",
                                "--n-test", "8", "--cells", "GRU", "--seeds", "0,1,2,3", "--epochs", "2",
                                "--batch-size", "16", "--workers", "1", "--ensemble", "{ensemble}",
                                "--checkpoint-every", "0", "--no-figures", "--no-progress", "--out", sys.argv[1]])
        print(status, "torch._dynamo" in sys.modules)
        """)
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"0 {imported}"
    summary = pd.read_parquet(next(tmp_path.rglob("summary.parquet")))
    assert list(summary["ensemble_size"]) == [4 if ensemble == "auto" else 1] * 4  # trained as asked
    assert (summary["status"] == "finished").all()


@pytest.mark.parametrize(("argv", "started"), [
    (["--workers", "2"], True),
    (["--dataset", "fsdd", "--workers=4"], True),
    (["--workers", "2", "--executor", "local"], True),
    ([], False),
    (["--workers", "1"], False),
    (["--workers", "two"], False),  # the parser reports it; nothing is started for it
    (["--workers"], False),
    (["--workers", "2", "--executor", "ray"], False),
    (["--workers", "2", "--plan"], False),
    (["--workers", "2", "--help"], False),
])
def test_a_sweep_command_starts_the_server_early_only_where_its_flags_ask_for_local_workers(monkeypatch, argv,
                                                                                            started):
    calls = []
    monkeypatch.setattr(scripts, "start_worker_server", lambda: calls.append(True))
    scripts._start_workers_early(argv)
    assert calls == ([True] if started else [])


def _exit_status(code: str, tmp_path) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run([sys.executable, str(script), str(tmp_path / "handler.txt")], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize(("returned", "status", "stderr"), [
    ("return 3", 3, ""), ("return None", 0, ""), ("raise SystemExit(2)", 2, ""),
    ("raise SystemExit('bad input: give --out')", 1, "bad input: give --out\n")])
def test_exit_quickly_exits_as_sys_exit_would_after_the_exit_handlers_and_with_flushed_streams(tmp_path, returned,
                                                                                             status, stderr):
    done = _exit_status(f"""
        import atexit, sys
        from pathlib import Path
        from gradlab.sweep.workers import exit_quickly

        atexit.register(lambda: Path(sys.argv[1]).write_text("ran"))

        def main():
            sys.stdout.write("unflushed output")  # no newline: still in the buffer at the exit
            {returned}

        exit_quickly(main)
        """, tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (status, "unflushed output", stderr)
    assert (tmp_path / "handler.txt").read_text() == "ran"


def test_an_error_in_main_exits_as_usual_with_its_traceback(tmp_path):
    done = _exit_status("""
        from gradlab.sweep.workers import exit_quickly

        def main():
            raise RuntimeError("a bug")

        exit_quickly(main)
        """, tmp_path)
    assert done.returncode == 1 and "RuntimeError: a bug" in done.stderr
