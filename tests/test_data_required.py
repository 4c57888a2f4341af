"""Tests that need the real FSDD recordings skip without them, except under CI=true, where they fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from data_helpers import FSDD_TEST_ENV, fsdd_recordings

TESTS = Path(__file__).resolve().parent


def test_missing_recordings_skip_locally_and_fail_under_ci(tmp_path, monkeypatch):
    monkeypatch.setenv(FSDD_TEST_ENV, str(tmp_path / "nowhere"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="nowhere"):
        fsdd_recordings()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="FSDD recordings not found at .*nowhere.*CI=true"):
        fsdd_recordings()


def test_the_fsdd_override_is_honoured(tmp_path, monkeypatch):
    folder = tmp_path / "copy" / "recordings"
    folder.mkdir(parents=True)
    (folder / "0_theo_0.wav").write_bytes(b"")
    monkeypatch.setenv(FSDD_TEST_ENV, str(tmp_path / "copy"))
    assert fsdd_recordings() == folder


@pytest.mark.parametrize("test_file", ["test_experiments.py", "test_data_fsdd.py"])
def test_real_audio_tests_fail_under_ci_when_the_override_points_nowhere(tmp_path, test_file):
    # every test that reads FSDD looks where GRADLAB_FSDD says, and CI=true turns the missing folder into failures
    env = {**os.environ, "CI": "true", FSDD_TEST_ENV: str(tmp_path / "nowhere")}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                             str(TESTS / test_file), "-k", "fsdd"], capture_output=True, text=True, env=env,
                            cwd=TESTS.parent, timeout=600, check=False)
    assert result.returncode == 1, result.stdout[-2000:]
    assert "FSDD recordings not found at" in result.stdout and "nowhere" in result.stdout
