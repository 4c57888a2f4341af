"""Sweep workers keep the memory they free for reuse (gradlab.sweep.memory), unless told not to."""

from __future__ import annotations

import os
import platform
from concurrent.futures import ProcessPoolExecutor

import pytest
from process_helpers import allocation_faults

from gradlab.sweep.memory import keep_freed_memory
from gradlab.sweep.workers import start_worker, start_worker_server, stop_worker_server, worker_context

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")


def _faults_in_a_sweep_worker(monkeypatch, setting: str) -> int:
    """:func:`allocation_faults` in a worker started as a sweep's local executor starts one."""
    monkeypatch.setenv("GRADLAB_KEEP_FREED_MEMORY", setting)
    start_worker_server()  # a new server: it and its workers see this environment
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=worker_context(), initializer=start_worker,
                                 initargs=(os.getpid(),)) as pool:
            return pool.submit(allocation_faults).result()
    finally:
        stop_worker_server()


@glibc_only
def test_a_sweep_worker_reuses_freed_memory_instead_of_faulting_fresh_pages_in(monkeypatch):
    kept = _faults_in_a_sweep_worker(monkeypatch, "1")
    default = _faults_in_a_sweep_worker(monkeypatch, "0")
    # By default glibc hands some of the 60 MB back at every free and faults it in again (9,000 faults of 4 KiB
    # here); kept, next to none.
    assert default > 2000
    assert kept < default / 20


def test_the_setting_is_left_alone_where_asked_or_where_there_is_no_glibc(monkeypatch):
    monkeypatch.setenv("GRADLAB_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory() is False
    monkeypatch.delenv("GRADLAB_KEEP_FREED_MEMORY")
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert keep_freed_memory() is False


def test_a_sweep_that_trains_in_its_own_process_keeps_freed_memory_too(monkeypatch):
    from gradlab.sweep import memory
    from gradlab.sweep.execute import LocalExecutor

    calls = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append(True) or True)
    LocalExecutor(workers=1).run([], lambda *args: None)
    assert calls == [True]
