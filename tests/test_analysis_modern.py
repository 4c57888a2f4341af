"""The findings' Modern recurrences section: verdicts on synthetic sweeps whose answers are known."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from analysis_helpers import FACTOR, write_sweep

from gradlab.analysis import load_runs, modern
from gradlab.analysis.compare import MUCH_SMALLER_DECADES
from gradlab.analysis.plots.modern import plot_memory_sensitivity, plot_ratio_vs_length
from gradlab.analysis.report import build_findings
from gradlab.analysis.report.modern import BENCH_FILE, modern_figures, modern_section

SEEDS = (0, 1, 2, 3, 4)
LENGTHS = (20, 50)
TABLES = ("summary", "gradients", "parameter_gradients")
DISTANCE = {"dataset": "distance", "epochs": 3, "init": "default"}  # summary columns of a default distance run


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    write_sweep(root, "length-distance", cells=("RNN_TANH", "GRU"), seeds=SEEDS, seq_lens=LENGTHS,
                tables=("gradients", "parameter_gradients"), summary=DISTANCE,
                jitter=0.002)
    write_sweep(root, "length-distance-modern", cells=("DIAGONAL", "MINGRU", "MINLSTM"), seeds=SEEDS,
                seq_lens=LENGTHS, tables=("gradients", "parameter_gradients"),
                summary=DISTANCE, jitter=0.002)
    return root, load_runs([root], tables=TABLES)


def _line(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


def test_ratios_are_the_closed_form_per_seed(loaded):
    _, data = loaded
    table = modern.ratios(data.gradients, modern.length_runs(data.summary))
    row = table[(table["cell"] == "DIAGONAL") & (table["seq_len"] == 50) & (table["seed"] == 3)
                & (table["stage"] == "init")].iloc[0]
    assert row["log_ratio"] == pytest.approx(49 * np.log10(FACTOR[("DIAGONAL", "h")] * (1 - 0.002 * 3)))
    assert set(table["stage"]) == {"init", "late"} and len(table) == 5 * 2 * 5 * 2


def test_gradient_verdicts_say_yes_no_and_not_clear_as_the_data_do(loaded):
    _, data = loaded
    checks = modern.ratio_comparisons(modern.ratios(data.gradients, modern.length_runs(data.summary)))
    assert set(checks["classic"]) == {"GRU"}  # the classic cell keeping the most gradient
    by_cell = checks.groupby("cell")["verdict"].agg(set).to_dict()
    # DIAGONAL keeps about 2 decades more than the GRU at T = 50 (0.99 vs 0.9 per step) and 0.8 at T = 20:
    # past the one-decade claim only at 50.
    at = checks.set_index(["stage", "seq_len", "cell"])
    assert at.loc[("init", 50, "DIAGONAL"), "verdict"] == "supported"
    assert at.loc[("init", 50, "DIAGONAL"), "difference"] > MUCH_SMALLER_DECADES
    assert at.loc[("init", 20, "DIAGONAL"), "verdict"] != "supported"
    assert by_cell["MINGRU"] == {"contradicted"}
    assert "supported" not in by_cell["MINLSTM"] and "contradicted" not in by_cell["MINLSTM"]
    text = "\n".join(modern_section(data, {}))
    answer = _line(text, "- **At initialisation**")
    assert "DIAGONAL not clear" in answer and "minGRU" not in answer  # labels are the mode names
    assert "MINGRU no" in answer and "MINLSTM not clear" in answer


def test_a_cell_that_keeps_more_at_every_length_gets_yes(tmp_path):
    write_sweep(tmp_path, "length-distance", cells=("RNN_TANH", "DIAGONAL"), seeds=SEEDS, seq_lens=(30, 60),
                tables=("gradients",), summary=DISTANCE, jitter=0.002)
    data = load_runs([tmp_path], tables=("summary", "gradients"))
    text = "\n".join(modern_section(data, {}))
    assert "DIAGONAL yes" in _line(text, "- **At initialisation**")
    assert "DIAGONAL yes" in _line(text, "- **After training**")


def test_accuracy_is_compared_with_the_classic_cell_best_on_validation(loaded):
    _, data = loaded
    checks = modern.accuracy_comparisons(modern.length_runs(data.summary)).set_index(["seq_len", "cell"])
    assert set(checks["classic"]) == {"GRU"}
    assert checks.loc[(50, "DIAGONAL"), "difference"] == pytest.approx(0.05)
    assert checks.loc[(50, "DIAGONAL"), "verdict"] == "supported"
    assert checks.loc[(50, "MINGRU"), "verdict"] == "contradicted"
    assert checks.loc[(50, "MINLSTM"), "verdict"] == "not clear"  # equal accuracy, seed for seed
    text = "\n".join(modern_section(data, {}))
    assert "DIAGONAL yes; MINGRU no; MINLSTM not clear" in _line(text, "- More accurate")


def test_memory_association_finds_the_sign_of_the_curse(loaded):
    _, data = loaded
    table = modern.memory_association(data.parameter_gradients).set_index(["cell", "stage"])
    assert table.loc[("DIAGONAL", "init"), "verdict"] == "grows with memory"
    assert table.loc[("MINGRU", "late"), "verdict"] == "shrinks with memory"
    assert table.loc[("MINLSTM", "init"), "verdict"] == "not clear"
    assert table.loc[("DIAGONAL", "init"), "runs"] == 10  # 5 seeds x 2 lengths; classic cells have no memory
    assert table.loc[("DIAGONAL", "init"), "parameter"] == "weight_hh"


def test_delay_comparison_pairs_speakers(tmp_path):
    rows = []
    for speaker_index, speaker in enumerate(("a", "b", "c", "d")):
        for cell, base in (("GRU", 0.80), ("LRU", 0.90), ("MINGRU", 0.80)):
            for seed in range(3):
                for sweep, delay in ((f"fsdd-delay-{cell}-{speaker}", 64), ("fsdd-tuned", 0), ("fsdd-pad", 0)):
                    value = base + 0.02 * speaker_index + 0.001 * seed + (0.3 if sweep == "fsdd-pad" else 0)
                    value += 0.01 * (1, -2, 3, -1)[speaker_index] if cell == "MINGRU" else 0  # either side
                    value += 0.01 * (speaker_index % 2) if cell == "LRU" else 0  # folds differ: a testable spread
                    rows.append({"sweep": sweep, "cell": cell, "seed": seed, "test_speaker": speaker,
                                 "dataset": "fsdd", "delay": delay, "status": "finished",
                                 "test_accuracy": value, "best_val_accuracy": value})
    table = modern.delay_comparisons(pd.DataFrame(rows)).set_index(["delay", "cell"])
    assert set(table["unit"]) == {"speakers"} and set(table["n"]) == {4}
    assert table.loc[(64, "LRU"), "difference"] == pytest.approx(0.105)  # the pad sweep is not read
    assert table.loc[(0, "LRU"), "verdict"] == "more accurate"
    assert table.loc[(64, "MINGRU"), "verdict"] == "not clear"


def test_section_sits_after_the_answers_with_figures_and_the_benchmark(loaded):
    root, data = loaded
    (root / BENCH_FILE).write_text("cell  T  scan ms  loop ms  loop/scan\nLRU  50  1.0  2.0  2.00\n")
    jobs = dict(modern_figures(data))
    assert set(jobs) == {"modern_gradient_vs_length", "modern_memory_sensitivity"}
    report = build_findings(load_runs([root], tables="all"), figures={"modern": ["modern_gradient_vs_length.png",
                                                       "modern_memory_sensitivity.png"]}).main()
    start = report.index("## Modern recurrences")
    assert start < report.index("## Evidence")
    if "## Answers" in report:
        assert report.index("## Answers") < start
    section = report[start:report.index("## Evidence")]
    assert "(modern_memory_sensitivity.png)" in section and "(modern_gradient_vs_length.png)" in section
    assert "LRU  50  1.0  2.0  2.00" in section and "python benchmarks/bench_scan.py" in section
    (root / BENCH_FILE).unlink()
    assert "Not measured with these runs" in "\n".join(modern_section(data, {}))


def test_no_modern_cell_no_section(tmp_path):
    write_sweep(tmp_path, "plain", cells=("GRU",), seeds=(0, 1), tables=("gradients",))
    data = load_runs([tmp_path], tables=("summary", "gradients"))
    assert modern_section(data, {}) == [] and modern_figures(data) == []


def test_figures_draw_one_line_per_cell_and_a_panel_per_modern_cell(loaded):
    _, data = loaded
    ratios = modern.ratios(data.gradients, modern.length_runs(data.summary))
    fig = plot_ratio_vs_length(ratios)
    assert len(fig.axes) == 2 and len(fig.axes[0].containers) == 5  # an errorbar per cell
    lines = {container.get_label(): container for container in fig.axes[0].containers}
    diagonal = lines["DIAGONAL"].lines[0].get_ydata()
    assert diagonal[-1] == pytest.approx(np.mean([49 * np.log10(0.99 * (1 - 0.002 * s)) for s in SEEDS]))
    fig = plot_memory_sensitivity(data.parameter_gradients)
    assert [ax.get_title().split(":")[0] for ax in fig.axes] == ["DIAGONAL", "MINGRU", "MINLSTM"]


def test_figures_command_draws_the_section_figures_and_links_them(loaded, tmp_path):
    from gradlab.analysis.commands import figures

    root, _ = loaded
    written = figures([root], tmp_path / "report", formats=("png",), n_resamples=20, stream=io.StringIO())
    names = {path.name for path in written}
    assert {"modern_gradient_vs_length.png", "modern_memory_sensitivity.png"} <= names
    report = (tmp_path / "report" / "findings.md").read_text()
    section = report[report.index("## Modern recurrences"):report.index("## Evidence")]
    assert "(modern_gradient_vs_length.png)" in section and "(modern_memory_sensitivity.png)" in section


def test_classic_distance_runs_alone_measure_nothing_about_the_modern_cells(tmp_path):
    """Modern cells on FSDD only, classic cells on the distance task: the gradient question is not measured."""
    write_sweep(tmp_path, "length-distance", cells=("RNN_TANH", "GRU"), seeds=SEEDS, seq_lens=LENGTHS,
                tables=("gradients",), summary=DISTANCE)
    write_sweep(tmp_path, "fsdd-tuned-modern", cells=("MINGRU",), seeds=SEEDS, tables=("gradients",),
                summary={"dataset": "fsdd", "epochs": 3})
    data = load_runs([tmp_path], tables=("summary", "gradients"))
    text = "\n".join(modern_section(data, {}))
    assert "No distance-task runs of the modern cells with recorded gradients: not measured." in text
    assert "First-to-last gradient ratio" not in text
    assert "modern_gradient_vs_length" not in dict(modern_figures(data))
