"""A Markdown findings report that answers the coursework's four questions from the measurements.

``findings.md`` opens with ``## Answers`` (each question in about 200 words,
generated from the data, with its numbers, one figure and the limits of the
evidence), then compact evidence tables; per-configuration detail goes to
``findings_appendix.md``. Every interval is named where it appears, every
across-seed table has a ``seeds`` column, and every textbook check has one of
four verdicts (supported, contradicted, not clear, too few seeds), Holm-corrected
over all checks of the report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from gradlab.analysis.learning import (
    classes_from_configs,
    select_by_validation,
    selected_runs,
    selection_groups,
)
from gradlab.analysis.load import RunData
from gradlab.analysis.report import answers, modern
from gradlab.analysis.report.controlled import controlled_section
from gradlab.analysis.report.dynamics import dynamics_section
from gradlab.analysis.report.evidence import (
    Check,
    Evidence,
    associations,
    checks_of,
    decide_checks,
    gather,
)
from gradlab.analysis.report.format import (
    dataset_of,
    format_percent,
    format_ratio,
    row_interval,
    split_note,
    table,
    with_interval,
)
from gradlab.analysis.report.study import Study, study
from gradlab.analysis.stats import config_groups, first_to_last_ratio, interval_label
from gradlab.analysis.style import cell_label, cell_order
from gradlab.store import schema
from gradlab.store.io import read_sweep_record

APPENDIX = "findings_appendix.md"
def sweep_config(data: RunData, sweep: str) -> dict:
    """The sweep's sweep.json (empty when absent or unreadable)."""
    path = data.sweeps.get(sweep)
    try:
        return read_sweep_record(path / schema.SWEEP_FILES["sweep"], require_runs=False) if path is not None else {}
    except (OSError, ValueError):  # load_runs warned about a damaged one
        return {}


def with_classes(data: RunData) -> RunData:
    """Fill the summary's ``num_classes`` where runs did not record it.

    From each sweep's sweep.json (the configured words) or, failing that, the
    length of the runs' predicted probabilities; chance accuracy is 1 / classes.
    """
    summary = data.summary.copy()
    if "num_classes" not in summary.columns:
        summary["num_classes"] = pd.array([pd.NA] * len(summary), dtype="Int64")
    summary["num_classes"] = pd.to_numeric(summary["num_classes"], errors="coerce").astype("Int64")
    for sweep in data.sweeps:
        classes = classes_from_configs(sweep_config(data, sweep).get("runs") or [])
        rows = (summary["sweep"] == sweep) & summary["num_classes"].isna()
        summary.loc[rows, "num_classes"] = summary.loc[rows, "run_id"].map(classes).astype("Int64")
    if not data.predictions.empty and summary["num_classes"].isna().any():
        lengths = (data.predictions.drop_duplicates(["sweep", "run_id"])
                   .assign(classes=lambda frame: frame["probabilities"].map(len))[["sweep", "run_id", "classes"]])
        merged = summary[["sweep", "run_id"]].merge(lengths, on=["sweep", "run_id"], how="left")["classes"]
        summary["num_classes"] = summary["num_classes"].fillna(pd.Series(merged.to_numpy(), index=summary.index)
                                                               .astype("Int64"))
    return data.replace(summary=summary)


def _grid_columns(config: dict) -> list[str]:
    grid = config.get("grid") or []
    return list(grid) if isinstance(grid, (list, dict)) else [str(grid)]


def tune(data: RunData) -> tuple[RunData, list[str]]:
    """Keep, in each sweep whose sweep.json names a ``grid`` and ``select_by``, the runs of the selected grid points.

    The choice per cell is :func:`gradlab.analysis.learning.select_by_validation`
    (mean best validation accuracy over seeds; test accuracy is never read).

    Returns:
        The restricted runs and one sentence per tuned sweep saying what was selected from which grid.
    """
    keep, notes = [], []
    every_run = data.runs() if data.sweeps else None  # once: it reads every row of every table
    for sweep in data.sweeps:
        runs = data.summary[data.summary["sweep"] == sweep]
        config = sweep_config(data, sweep)
        grid = _grid_columns(config)
        if not config.get("select_by") or not grid or runs.empty:
            keep.append(every_run.loc[every_run["sweep"] == sweep, ["sweep", "run_id"]])
            continue
        missing = [column for column in grid if column not in runs.columns]
        if missing:
            notes.append(f"{sweep}: cannot select from the grid, the summary lacks {missing}; all runs are pooled.")
            keep.append(runs[["sweep", "run_id"]])
            continue
        group, tuned = selection_groups(runs, grid)
        if not tuned:
            keep.append(runs[["sweep", "run_id"]])
            continue
        selection = select_by_validation(runs, group, tuned)
        keep.append(selected_runs(runs, selection, tuned)[["sweep", "run_id"]])
        values = config["grid"] if isinstance(config["grid"], dict) else {}
        values = {column: values.get(column, sorted(set(runs[column]))) for column in tuned}
        conditions = group[1:]

        def _where(row: pd.Series) -> str:
            named = ", ".join(f"{column} {_value(row[column])}" for column in conditions)
            return f"{cell_label(row['cell'])}" + (f" ({named})" if named else "")

        chosen = "; ".join(f"{_where(row)}: " + ", ".join(f"{column}={_value(row[column])}" for column in tuned)
                           + f" (validation {format_percent(row['validation_accuracy'])}, {row['seeds']} seeds)"
                           for _, row in selection.iterrows())
        shown = ", ".join(f"{column} in {{{', '.join(_value(value) for value in axis)}}}"
                          for column, axis in values.items())
        per = " and ".join(["cell", *conditions])
        notes.append(f"{sweep}: per {per}, the grid point with the best mean validation accuracy over seeds, from "
                     f"{shown} (test accuracy never used): {chosen}.")
    return data.select(pd.concat(keep, ignore_index=True)), notes


def _value(value: object) -> str:
    """A grid value as the command line spells it (None and NaN: ``none``)."""
    return "none" if value is None or (isinstance(value, float) and value != value) else f"{value:g}" \
        if isinstance(value, float) else str(value)


@dataclass
class Findings:
    """The evidence of every configuration, the report's checks (decided), and tuning notes."""

    data: RunData
    evidence: list[Evidence]
    checks: list[Check]
    tuning: list[str] = field(default_factory=list)
    figures: Mapping[str, Sequence[str]] = field(default_factory=dict)
    lengths: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    study: Study | None = None
    answer_figures: Sequence[str] = ()

    def main(self) -> str:
        """``findings.md``."""
        sources = ", ".join(f"`{path}`" for path in self.data.sweeps.values())
        lines = ["# gradlab findings", "",
                 f"Generated by `python -m gradlab figures` from {sources}. Every number is computed from the saved "
                 f"runs. Intervals are {interval_label()} (Student t) unless named otherwise; verdicts are "
                 f"Holm-corrected over all {len(self.checks)} checks of this report. "
                 f"Details: [{APPENDIX}]({APPENDIX}).",
                 ""]
        if self.study is not None:
            speakers = self.study.speakers
            if speakers > 1:
                lines[-1:] = ["", f"FSDD numbers come from {speakers} speaker folds: each of FSDD's speakers is the "
                                  "test speaker of one fold, the next speaker alphabetically validates (learning "
                                  "rate, clipping, checkpoint), the other four train. The unit of an FSDD interval "
                                  "is the test speaker (each fold's mean over its seeds).", ""]
            lines += answers.answers(self.study, self.answer_figures)
        lines += modern.modern_section(self.data, self.figures)  # after the answers, before the evidence
        lines += ["## Evidence", "", *self._overview(), *self._check_summary()]
        lines += controlled_section(self.data)
        lines += dynamics_section(self.data, self.figures)
        if self.tuning:
            lines += ["### Tuned comparison", "", *[f"- {note}" for note in self.tuning], ""]
        if self.data.skipped:
            lines += ["### Runs left out", "", *[f"- {message}" for message in self.data.skipped], ""]
        return "\n".join(lines)

    def _overview(self) -> list[str]:
        cells = cell_order(cell for e in self.evidence for cell in e.cells)
        rows, splits = [], {}
        for e in self.evidence:
            if e.accuracy.empty:
                continue
            accuracy = e.accuracy.set_index("cell")
            learned = e.learning.set_index("cell") if not e.learning.empty else None
            dataset = dataset_of(e.data)
            splits.setdefault(dataset, split_note(e.data, e.sweep_config))
            row = [e.label, dataset, int(accuracy["seeds"].max())]
            status = e.data.summary.groupby("cell", observed=True)["status"] if "status" in e.data.summary else None
            for cell in cells:
                text = format_percent(accuracy.loc[cell, "mean"]) if cell in accuracy.index else "–"
                if learned is not None and cell in learned.index and "unknown" not in learned.loc[cell, "learned_of"]:
                    text += f" ({learned.loc[cell, 'learned']}/{learned.loc[cell, 'seeds']})"
                if status is not None and cell in status.groups:
                    runs = status.get_group(cell)
                    diverged = int((runs == "diverged").sum())
                    if diverged:
                        text += f", **{diverged} of {len(runs)} diverged**" + (
                            " (most: not a trained configuration)" if 2 * diverged > len(runs) else "")
                row.append(text)
            rows.append(row)
        if not rows:
            return []
        split = "; ".join(f"{dataset}: {note}" for dataset, note in splits.items())
        return [f"Test accuracy of the best-validation checkpoint, mean over seeds (seeds that learned / seeds); a "
                f"diverged run counts at the checkpoint chosen before it diverged, and is named. "
                f"Splits: {split}.", "",
                *table(["configuration", "data", "seeds", *[cell_label(cell) for cell in cells]], rows)]

    def _check_summary(self) -> list[str]:
        if not self.checks:
            return ["No textbook claim could be checked: the runs lack the cells they need.", ""]
        counts = pd.Series([check.verdict for check in self.checks]).value_counts()
        lines = [f"Checks ({len(self.checks)} distinct measurements; accuracy checks of one-epoch runs left out; "
                 "full table in the appendix): " + ", ".join(f"{count} {verdict}" for verdict, count in counts.items())
                 + ". How a verdict is reached: two one-sided Welch t tests over seeds, one that the difference lies "
                 "beyond the claim's effect size on the claimed side, one that it lies on the other side of zero; "
                 "p is twice the smaller one-sided p, Holm-adjusted over all checks, and a verdict (supported or "
                 "contradicted, by the side of the smaller p) needs an adjusted p of at most 0.05, else not clear; "
                 "too few seeds: under 5 per cell. The intervals shown are unadjusted 95% intervals, so one can "
                 "clear the effect size while its adjusted test does not.", ""]
        decided = [check for check in self.checks if check.verdict in ("supported", "contradicted")]
        if decided:
            lines += table(["configuration", "claim", "verdict"],
                           [[check.where, check.claim, f"**{check.verdict}**"] for check in decided[:12]])
            if len(decided) > 12:
                lines += [f"({len(decided) - 12} more decided checks in the appendix.)", ""]
        return lines

    def appendix(self) -> str:
        """``findings_appendix.md``: every configuration's tables and the full list of checks."""
        lines = ["# gradlab findings: appendix", "",
                 f"Per configuration. Intervals are {interval_label()} unless named otherwise; `seeds` counts the "
                 "seeds behind each row.", "", "## All checks", ""]
        header = ["configuration", "claim", "difference, first - second [95% Welch t interval]", "P(improvement)",
                  "seeds", "Holm p", "verdict"]
        lines += table(header, [_check_row(check) for check in self.checks]) if self.checks else ["None.", ""]
        association = associations(self.evidence)
        if not association.empty:
            association = association[association["r"].notna()]
        if not association.empty:
            lines += ["## Gradient flow and learning, seed by seed", "",
                      "Spearman r between log10 first-to-last ratio at initialisation and best validation accuracy; "
                      "an association over runs, not a cause.", ""]
            lines += table(["configuration", "scope", "r [95% Fisher-z interval]", "seeds"],
                           [[row.configuration,
                             cell_label(row.scope) if row.scope != "pooled" else "pooled across cells",
                             with_interval(row.r, row.ci_low, row.ci_high, lambda v: f"{v:.2f}"), row.seeds]
                            for row in association.itertuples()])
        lines += dynamics_section(self.data, {}, detail=True)
        for e in self.evidence:
            lines += [f"## {e.label}", "", f"Data: {dataset_of(e.data)}; {split_note(e.data, e.sweep_config)}.", ""]
            lines += _configuration_tables(e)
            for name in self.figures.get(e.label, []):
                lines.append(f"- [{name}]({name})")
            lines.append("")
        return "\n".join(lines)


def _check_row(check: Check) -> list[object]:
    c = check.comparison
    scale = 100.0 if "accuracy" in check.quantity else 1.0
    difference = with_interval(c.difference * scale, c.ci_low * scale, c.ci_high * scale)
    improvement = f"{c.probability_of_improvement:.2f}" if pd.notna(c.probability_of_improvement) else "n/a"
    p_value = f"{check.adjusted_p:.3g}" if pd.notna(check.adjusted_p) else "n/a"
    return [check.where, check.claim, f"{difference} ({check.quantity})", improvement,
            f"{c.seeds_first} / {c.seeds_second}", p_value, f"**{check.verdict}**"]


def _configuration_tables(e: Evidence) -> list[str]:
    lines = []
    if not e.ratios.empty:
        stages = {stage: e.ratio_summary(stage) for stage in ("init", "late")}
        rows = []
        order = {cell: k for k, cell in enumerate(cell_order(stages["init"]["cell"]))}
        ordered = stages["init"].assign(_order=stages["init"]["cell"].map(order)).sort_values(["_order", "state"],
                                                                                              ascending=[True, False])
        for _, row in ordered.iterrows():
            late = stages["late"][(stages["late"]["cell"] == row["cell"]) & (stages["late"]["state"] == row["state"])]
            name = cell_label(row["cell"]) + (" c_t" if row["state"] == "c" else "")
            rows.append([name, row_interval(row, format_ratio, log=True),
                         row_interval(late.iloc[0], format_ratio, log=True) if not late.empty else "not recorded",
                         int(row["seeds"])])
        lines += ["First-to-last gradient ratio |dL/dh_0| / |dL/dh_T-1| (layer 0, forward), geometric mean over seeds "
                  f"[{interval_label()}, on log10]:", ""]
        lines += table(["cell", "at initialisation", "late in training", "seeds"], rows)
    if not e.learning.empty:
        accuracy = e.accuracy.set_index("cell")
        rows = [[cell_label(row.cell), row.seeds, row.learned_of,
                 with_interval(row.epochs_to_learn, row.epochs_to_learn_low, row.epochs_to_learn_high),
                 with_interval(row.final, row.final_low, row.final_high, format_percent),
                 f"{row.trend} ({with_interval(100 * row.slope, 100 * row.slope_low, 100 * row.slope_high)} "
                 "points/epoch)",
                 row_interval(accuracy.loc[row.cell], format_percent) if row.cell in accuracy.index else "n/a"]
                for row in e.learning.itertuples()]
        lines += ["Learning (epochs to learn over learning runs only; final level: mean validation accuracy over "
                  "the last 10% of epochs, at least 3):", ""]
        lines += table(["cell", "seeds", "learned", "epochs to learn", "final level", "trend", "test accuracy"], rows)
    if e.aggregate is not None and not e.aggregate.empty:
        rows = [[cell_label(row.cell), with_interval(row.iqm, row.ci_low, row.ci_high, format_percent), row.interval,
                 row.seeds, row.examples, row.solved_of] for row in e.aggregate.itertuples()]
        lines += ["Interquartile mean of test accuracy over seeds (stratified bootstrap over seeds and test "
                  "examples); solved: test accuracy at least 90%. A second interval for accuracy on purpose: the "
                  "t interval above is of the mean over seeds and treats the test clips as fixed; this one is of "
                  "the interquartile mean (robust to one odd seed) and also resamples the test clips, so it is "
                  "wider and says how much a different draw of test clips could move the number:", ""]
        lines += table(["cell", "IQM", "interval", "seeds", "test examples", "solved"], rows)
    if not e.data.summary.empty:
        costs = e.data.summary.groupby("cell", observed=True).agg(
            seeds=("seed", "size"), n_params=("n_params", "mean"), time=("time_per_epoch", "mean"))
        rows = [[cell_label(cell), int(costs.loc[cell, "seeds"]), f"{costs.loc[cell, 'n_params']:,.0f}",
                 f"{costs.loc[cell, 'time']:.3g}"] for cell in cell_order(costs.index)]
        lines += table(["cell", "seeds", "parameters", "seconds per epoch"], rows)
    return lines


def build_findings(
    data: RunData,
    *,
    figures: Mapping[str, Sequence[str]] | None = None,
    answer_figures: Sequence[str] = (),
    n_resamples: int = 2000,
    seed: int = 0,
) -> Findings:
    """Gather the evidence of every configuration of ``data`` and decide the report's checks together.

    Args:
        data: loaded runs (see :func:`gradlab.analysis.load_runs`).
        figures: optional configuration label -> figure file names.
        answer_figures: file names of the answers' figures (see
            :func:`gradlab.analysis.report.answers.answer_figures`).
        n_resamples, seed: the stratified bootstrap of the IQM accuracy.
    """
    data, tuning = tune(with_classes(data))
    groups = config_groups(data.summary) if not data.summary.empty else [
        (name, data.runs().loc[lambda runs, n=name: runs["sweep"] == n, ["sweep", "run_id"]]) for name in data.sweeps]
    evidence = []
    for (label, runs), (_, part) in zip(groups, data.split(groups)):
        sweep = str(runs["sweep"].iloc[0]) if len(runs) else ""
        found = gather(label, part, sweep_config=sweep_config(data, sweep), n_resamples=n_resamples, seed=seed)
        # The report reads only each configuration's summary from here on: not keeping its per-run tables
        # saves a second copy of every table (gigabytes over thousands of runs).
        evidence.append(dataclasses.replace(found, data=part.replace(**{kind: None for kind in part.loaded
                                                                        if kind != "summary"})))
    checks = distinct_checks([check for e in evidence if not _one_epoch(e) for check in checks_of(e)]
                             + [check for e in evidence if _one_epoch(e) for check in checks_of(e)
                                if "accuracy" not in check.quantity])
    decide_checks(checks)
    return Findings(data=data, evidence=evidence, checks=checks, tuning=tuning, figures=dict(figures or {}),
                    lengths=_length_sweeps(data), study=study(data), answer_figures=tuple(answer_figures))


def _one_epoch(evidence: Evidence) -> bool:
    """Runs of one epoch (a measurement at initialisation): their accuracy says nothing about a cell."""
    summary = evidence.data.summary
    return "epochs" in summary.columns and not summary.empty and bool((summary["epochs"].max() or 0) <= 1)


def distinct_checks(checks: list[Check]) -> list[Check]:
    """Each measurement once: a check whose claim and numbers repeat an earlier one (the same runs
    repeated in another sweep, which train bit for bit alike) is left out of the family."""
    seen, kept = set(), []
    for check in checks:
        c = check.comparison
        key = (check.claim, check.quantity, round(float(c.difference), 12), int(c.seeds_first), int(c.seeds_second))
        if key not in seen:
            seen.add(key)
            kept.append(check)
    return kept


def _length_sweeps(data: RunData) -> list[tuple[str, pd.DataFrame]]:
    """(label, first-to-last ratios at initialisation) of each configuration run at several lengths."""
    if data.summary.empty or data.gradients.empty:
        return []
    found = []
    for label, part in data.split(config_groups(data.summary, exclude=("seq_len",))):
        if part.summary["seq_len"].nunique() > 1:
            ratios = first_to_last_ratio(part.gradients, part.summary, stage="init")
            if not ratios.empty:
                found.append((label, ratios))
    return found


def findings_report(
    data: RunData,
    *,
    figures: Mapping[str, Sequence[str]] | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
) -> str:
    """The text of ``findings.md`` for ``data`` (see :func:`build_findings`)."""
    return build_findings(data, figures=figures, n_resamples=n_resamples, seed=seed).main()
