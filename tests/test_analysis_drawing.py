"""The figures command draws in worker processes exactly what it draws in one; workers fail and stop cleanly."""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
from analysis_helpers import write_sweep
from process_helpers import REPOSITORY, ctrl_c_reaches_it, kill_group, read_lines, running, wait_until

from gradlab.__main__ import main
from gradlab.analysis import drawing, plots
from gradlab.analysis.commands import APPENDIX, REPORT, figures
from gradlab.analysis.drawing import Drawn, FigureJob, draw_all, worker_count

needs_fork = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork here")
FAST = {"formats": ("png",), "dpi": 30, "n_resamples": 20, "every_configuration": True}


def _no_rows(summary):
    raise ValueError("no accuracy rows")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A smaller sweep than tests/test_analysis_commands.py's ``runs``: drawing it costs seconds."""
    root = tmp_path_factory.mktemp("runs")
    write_sweep(root, "main", cells=("RNN_TANH", "LSTM"), seeds=(0, 1), tables=("history", "gradients"))
    return root


@pytest.fixture(scope="module")
def cannot_draw_accuracy():
    """Every figure of this module's figures() calls, but test accuracy, which its data cannot draw."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "plot_test_accuracy", _no_rows)  # forked workers see it too
        yield


def _draw(runs: Path, out: Path, jobs: int | None) -> tuple[list[str], str, dict[str, bytes]]:
    """figures() of ``runs`` into ``out``: the written files (relative), the printed lines and every file's bytes."""
    stream = io.StringIO()
    written = figures(runs, out, stream=stream, jobs=jobs, **FAST)
    files = {path.name: path.read_bytes() for path in sorted(out.iterdir())}
    return [str(path.relative_to(out)) for path in written], stream.getvalue().replace(str(out), "OUT"), files


@pytest.fixture(scope="module")
def serial(runs, tmp_path_factory, cannot_draw_accuracy):
    def refuse(*args, **kwargs):
        raise AssertionError("jobs=1 must draw in this process")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(drawing, "ProcessPoolExecutor", refuse)
        return _draw(runs, tmp_path_factory.mktemp("serial"), jobs=1)


def test_serial_path_draws_every_figure_in_this_process(serial):
    written, printed, files = serial
    assert written[-2:] == [REPORT, APPENDIX] and len(written) >= 8
    assert sorted(written) == sorted(files)  # every file there was written, and nothing else
    assert [line for line in printed.splitlines() if line.startswith("wrote")] == [f"wrote OUT/{name}"
                                                                                   for name in written]


@needs_fork
def test_workers_write_the_same_files_bytes_and_lines(runs, tmp_path, serial):
    written, printed, files = _draw(runs, tmp_path, jobs=2)
    assert written == serial[0]
    assert printed == serial[1]
    assert files.keys() == serial[2].keys()
    different = [name for name in files if files[name] != serial[2][name]]
    assert not different, f"differ from the serial path's: {different}"  # PNGs included: Agg is deterministic
    # Figures the data cannot draw (ValueError in a worker) are skipped with the serial path's notes, unlinked.
    lines = printed.splitlines()
    assert "skipped test_accuracy for main: no accuracy rows" in lines
    assert "skipped answer3_curves: no curve rows to plot" in lines  # the draw's own ValueError
    assert not [name for name in files if name.startswith(("test_accuracy", "answer3"))]
    report = (files[REPORT] + files[APPENDIX]).decode()
    assert "test_accuracy__" not in report and "answer3_curves" not in report
    assert "gradient_norm_by_timestep__main.png" in report and "answer1_decay_by_activation.png" in report


class _Figure:
    """Stands in for a matplotlib figure: savefig writes its text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def savefig(self, path, format: str, dpi: int) -> None:  # noqa: A002 - matplotlib's name
        Path(path).write_text(f"{self.text} {format} {dpi}")


def _raise(error: BaseException):
    def draw():
        raise error
    return draw


def _jobs() -> list[FigureJob]:
    # The first figure is the slowest: a worker finishes the others before it, and its lines still come first.
    return [FigureJob("a", lambda: time.sleep(0.3) or _Figure("first"), "figure a"),
            FigureJob("b", _raise(ValueError("no rows")), "figure b", "section"),
            FigureJob("c", _raise(KeyError("cell")), "figure c"),
            FigureJob("d", lambda: _Figure("last"), "figure d", "section")]


@needs_fork
def test_skips_in_workers_are_reported_in_job_order(tmp_path):
    results = {}
    for workers in (1, 2):
        stream = io.StringIO()
        drawn, value = draw_all(_jobs(), tmp_path, formats=("png", "svg"), dpi=7, workers=workers, stream=stream,
                                meanwhile=lambda: os.getpid())
        assert value == os.getpid()  # meanwhile runs in this process
        results[workers] = (drawn, stream.getvalue())
    assert results[1] == results[2]
    drawn, printed = results[2]
    assert drawn == [Drawn(True, (tmp_path / "a.png", tmp_path / "a.svg")), Drawn(False), Drawn(False),
                     Drawn(True, (tmp_path / "d.png", tmp_path / "d.svg"))]
    assert printed.splitlines() == [f"wrote {tmp_path / 'a.png'}", f"wrote {tmp_path / 'a.svg'}",
                                    "skipped figure b: no rows", "skipped figure c: 'cell'",
                                    f"wrote {tmp_path / 'd.png'}", f"wrote {tmp_path / 'd.svg'}"]
    assert (tmp_path / "d.svg").read_text() == "last svg 7"


@needs_fork
@pytest.mark.parametrize(("draw", "expected"), [(_raise(RuntimeError("broken draw")), RuntimeError),
                                                (lambda: os._exit(3), BrokenProcessPool)])
def test_an_error_in_a_worker_reaches_the_caller_and_stops_the_workers(tmp_path, draw, expected):
    """A worker that dies (``os._exit``, the kernel's OOM killer) breaks the pool: that error, not a hang."""
    jobs = [*_jobs(), FigureJob("e", draw, "figure e"),
            *(FigureJob(f"f{index}", lambda: _Figure("x"), "f") for index in range(8))]
    before = set(multiprocessing.active_children())
    stream = io.StringIO()
    with pytest.raises(expected):
        draw_all(jobs, tmp_path, formats=("png",), dpi=7, workers=2, stream=stream, meanwhile=lambda: None)
    # Ask the system: a worker the pool's own thread reaped can still look alive to multiprocessing.
    assert not [child.pid for child in set(multiprocessing.active_children()) - before if running(child.pid)]
    assert not list(tmp_path.glob(".*.tmp"))
    if expected is RuntimeError:  # the jobs before it printed their lines, as drawing in this process would have
        assert stream.getvalue().splitlines() == [f"wrote {tmp_path / 'a.png'}", "skipped figure b: no rows",
                                                  "skipped figure c: 'cell'", f"wrote {tmp_path / 'd.png'}"]


def test_an_error_of_meanwhile_comes_after_the_figures(tmp_path):
    def fail():
        raise LookupError("report failed")

    for workers in (1, 2):
        stream = io.StringIO()
        with pytest.raises(LookupError, match="report failed"):
            draw_all(_jobs(), tmp_path, formats=("png",), dpi=7, workers=workers, stream=stream, meanwhile=fail)
        assert len(stream.getvalue().splitlines()) == 4


# Ctrl-C while workers write: two stalled writes, the parent busy with its report.
_STALLED = """
import os, sys, time
from pathlib import Path
from gradlab.analysis.drawing import FigureJob, draw_all

class Stalled:
    def savefig(self, path, format, dpi):
        Path(path).write_text("half of it")
        os.write(1, f"{os.getpid()}\\n".encode())
        time.sleep(60)

jobs = [FigureJob(f"figure{index}", Stalled, "stalled") for index in range(4)]
draw_all(jobs, Path(sys.argv[1]), formats=("png",), dpi=7, workers=2, stream=sys.stdout,
         meanwhile=lambda: time.sleep(60))
"""


def _start_stalled(folder: Path) -> tuple[subprocess.Popen, list[int]]:
    """_STALLED in a process group of its own, once both workers are writing; and the workers' PIDs."""
    environment = {**os.environ,
                   "PYTHONPATH": os.pathsep.join([str(REPOSITORY / "src"), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-c", _STALLED, str(folder)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=environment, start_new_session=True,
                               preexec_fn=ctrl_c_reaches_it)
    workers = [int(pid) for pid in read_lines(process, 2)]
    assert len(list(folder.glob(".figure*.png.*.tmp"))) == 2
    return process, workers


@needs_fork
def test_ctrl_c_stops_the_workers_and_leaves_no_temporary(tmp_path):
    process, workers = _start_stalled(tmp_path)
    try:
        os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
        assert process.wait(timeout=15) != 0
        assert b"KeyboardInterrupt" in process.stderr.read()
        wait_until(lambda: not any(running(pid) for pid in workers), timeout=5)
        assert list(tmp_path.iterdir()) == []  # each worker removed the file it was writing
    finally:
        process.stderr.close()
        kill_group(process)


@needs_fork
def test_workers_of_a_killed_parent_stop_and_leave_no_temporary(tmp_path):
    process, workers = _start_stalled(tmp_path)
    try:
        process.kill()  # the parent alone, which can clean nothing up
        process.wait()
        wait_until(lambda: not any(running(pid) for pid in workers), timeout=10)
        assert list(tmp_path.iterdir()) == []
    finally:
        process.stderr.close()
        kill_group(process)


def test_worker_count():
    assert worker_count(1, 50) == 1
    assert worker_count(8, 3) == (3 if "fork" in multiprocessing.get_all_start_methods() else 1)
    assert worker_count(None, 1) == 1
    assert worker_count(None, 500) == (drawing.available_cpus() if "fork" in multiprocessing.get_all_start_methods()
                                       else 1)
    assert worker_count(4, 0) == 1


@pytest.mark.parametrize("jobs", [0, -2, 1.5, True])
def test_jobs_below_one_is_a_clear_error(tmp_path, jobs):
    with pytest.raises(ValueError, match=f"jobs must be a whole number of at least 1.*got {jobs!r}"):
        figures(tmp_path / "absent", tmp_path / "out", jobs=jobs)
    assert not (tmp_path / "out").exists()


def test_the_jobs_option(runs, monkeypatch, capsys):
    from gradlab.analysis import commands

    calls = []
    monkeypatch.setattr(commands, "figures", lambda *args, **kwargs: calls.append(kwargs))
    assert main(["figures", str(runs), "--out", "x", "--jobs", "3"]) == 0
    assert main(["figures", str(runs), "--out", "x"]) == 0
    assert [call["jobs"] for call in calls] == [3, None]
    for bad, message in (("0", "must be at least 1"), ("-1", "must be at least 1"), ("two", "expected a whole number")):
        with pytest.raises(SystemExit) as exited:
            main(["figures", str(runs), "--jobs", bad])
        assert exited.value.code == 2
        assert f"argument --jobs: {message}" in capsys.readouterr().err


def test_a_figure_known_not_to_draw_does_not_make_the_report_render_twice(runs, tmp_path, monkeypatch):
    # These runs have no long training curves, so question 3's figure is skipped; the report, written while the
    # figures are drawn, must already leave it out instead of being rendered again (a second, whole pass).
    from gradlab.analysis.plots.learning import plot_test_accuracy
    from gradlab.analysis.report import Findings

    monkeypatch.setattr(plots, "plot_test_accuracy", plot_test_accuracy)  # undo cannot_draw_accuracy, if active
    rendered = []
    original = Findings.main
    monkeypatch.setattr(Findings, "main", lambda self: rendered.append(1) or original(self))
    written, printed, files = _draw(runs, tmp_path, jobs=1)
    assert "skipped answer3_curves: no curve rows to plot" in printed.splitlines()
    assert rendered == [1]
    report = files[REPORT].decode()
    assert "answer3_curves" not in report and "answer1_decay_by_activation.png" in report
