"""The measurements behind the findings report, one configuration at a time, and its checks.

A configuration is the runs of one sweep that share every configuration
column but the seed (:func:`gradlab.analysis.stats.config_groups`). Each
:class:`Evidence` holds the per-seed values and per-cell tables the report
cites; :func:`checks_of` turns textbook claims into comparisons, and
:func:`decide_checks` Holm-corrects all of them together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gradlab.analysis.aggregate import accuracy_aggregate
from gradlab.analysis.compare import (
    MUCH_SMALLER_DECADES,
    Comparison,
    compare,
    decide,
    seed_association,
)
from gradlab.analysis.learning import chance_level, learning_table, run_learning
from gradlab.analysis.load import RunData
from gradlab.analysis.stats import (
    accuracy_table,
    first_to_last_ratio,
    log10,
    select_stages,
    summarise,
)
from gradlab.analysis.style import cell_label, cell_order


@dataclass
class Evidence:
    """Everything the report says about one configuration.

    Attributes:
        label: the configuration's name (sweep and varying values).
        data: its runs.
        ratios: per run and state: ``cell``, ``state``, ``stage``, ``seed``,
            ``seq_len`` and ``log10_ratio`` (first-to-last, layer 0, forward).
        learning_runs: :func:`gradlab.analysis.learning.run_learning`.
        learning: :func:`gradlab.analysis.learning.learning_table` per cell.
        accuracy: test accuracy per cell (mean, t interval, seeds).
        aggregate: IQM test accuracy with its stratified bootstrap, when predictions exist.
        steps: per run: per-step factors of the gradient (``gradient_step``)
            and of the Jacobian product (``jacobian_step``) at initialisation.
        chance: chance accuracy (NaN when unknown).
    """

    label: str
    data: RunData
    ratios: pd.DataFrame
    learning_runs: pd.DataFrame
    learning: pd.DataFrame
    accuracy: pd.DataFrame
    aggregate: pd.DataFrame | None
    steps: pd.DataFrame
    chance: float
    sweep_config: dict = field(default_factory=dict)

    @property
    def cells(self) -> list[str]:
        return cell_order(set(self.data.summary["cell"]) | set(self.ratios["cell"]))

    def ratio(self, cell: str, stage: str = "init", state: str = "h") -> np.ndarray:
        ratios = self.ratios
        rows = ratios[(ratios["cell"] == cell) & (ratios["stage"] == stage) & (ratios["state"] == state)]
        return rows["log10_ratio"].to_numpy()

    def ratio_summary(self, stage: str = "init") -> pd.DataFrame:
        staged = self.ratios[self.ratios["stage"] == stage]
        return summarise(staged, "log10_ratio", ["cell", "state"])

    def per_run(self) -> pd.DataFrame:
        """One row per run: log10 ratio at initialisation (h), best validation and test accuracy."""
        init = self.ratios[(self.ratios["stage"] == "init") & (self.ratios["state"] == "h")]
        keys = ["sweep", "run_id"]
        if init.empty or self.learning_runs.empty or self.data.summary.empty:
            return pd.DataFrame(columns=[*keys, "cell", "log10_ratio", "best", "test_accuracy"])
        merged = init[[*keys, "cell", "log10_ratio"]].merge(
            self.learning_runs[[*keys, "best"]], on=keys, how="inner")
        return merged.merge(self.data.summary[[*keys, "test_accuracy"]], on=keys, how="left")


def _ratios(data: RunData) -> pd.DataFrame:
    parts = []
    for stage in ("init", "late"):
        for state in ("h", "c"):
            ratios = first_to_last_ratio(data.gradients, data.summary, stage=stage, state=state)
            if not ratios.empty:
                parts.append(ratios.assign(stage=stage, state=state, log10_ratio=log10(ratios["ratio"])))
    columns = ["sweep", "run_id", "cell", "seed", "seq_len", "stage", "state", "log10_ratio"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def _step_factors(data: RunData, ratios: pd.DataFrame) -> pd.DataFrame:
    """Per run at initialisation: log10 per-step factor of the gradient and of the Jacobian product.

    The gradient's is log10(first-to-last ratio) / (T - 1); the Jacobian's the
    least-squares slope of log10 ||d h_last / d h_t|| against the distance.
    """
    init = ratios[(ratios["stage"] == "init") & (ratios["state"] == "h")]
    steps = init.assign(gradient_step=init["log10_ratio"] / (init["seq_len"] - 1).clip(lower=1))
    steps = steps[["sweep", "run_id", "cell", "seed", "gradient_step"]]
    jacobian = data.jacobian[(data.jacobian["layer"] == 0) & (data.jacobian["direction"] == "forward")]
    slopes = []
    if not jacobian.empty:
        staged = select_stages(jacobian)
        staged = staged[(staged["stage"] == "init") & (staged["spectral_norm"] > 0)]
        for (sweep, run_id), run in staged.groupby(["sweep", "run_id"], observed=True):
            if run["distance"].nunique() > 1:
                slope = np.polyfit(run["distance"].astype(float), log10(run["spectral_norm"].astype(float)), 1)[0]
                slopes.append({"sweep": sweep, "run_id": run_id, "jacobian_step": float(slope)})
    slopes = pd.DataFrame(slopes, columns=["sweep", "run_id", "jacobian_step"])
    return steps.merge(slopes, on=["sweep", "run_id"], how="outer") if not steps.empty else slopes


def gather(label: str, data: RunData, *, sweep_config: dict | None = None, n_resamples: int = 2000,
           seed: int = 0) -> Evidence:
    """Compute the :class:`Evidence` of one configuration."""
    ratios = _ratios(data)
    recorded = not data.summary.empty and not data.history.empty
    runs = run_learning(data.history, data.summary, data.predictions) if recorded else pd.DataFrame()
    learning = learning_table(runs) if not runs.empty else pd.DataFrame()
    if not learning.empty:
        order = {cell: k for k, cell in enumerate(cell_order(learning["cell"]))}
        learning = learning.sort_values("cell", key=lambda cells: cells.map(order)).reset_index(drop=True)
    accuracy = accuracy_table(data.summary) if not data.summary.empty else pd.DataFrame()
    aggregate = None
    if not data.predictions.empty and (data.predictions["split"] == "test").any():
        try:
            aggregate = accuracy_aggregate(data.predictions, n_resamples=n_resamples, seed=seed)
        except ValueError:
            aggregate = None  # runs evaluated on different examples: no pooled aggregate
        if aggregate is not None:
            order = {cell: k for k, cell in enumerate(cell_order(aggregate["cell"]))}
            aggregate = aggregate.sort_values("cell", key=lambda cells: cells.map(order)).reset_index(drop=True)
    chances = chance_level(data.summary).dropna().unique() if not data.summary.empty else []
    return Evidence(label=label, data=data, ratios=ratios, learning_runs=runs, learning=learning, accuracy=accuracy,
                    aggregate=aggregate, steps=_step_factors(data, ratios),
                    chance=float(chances[0]) if len(chances) == 1 else float("nan"),
                    sweep_config=sweep_config or {})


@dataclass
class Check:
    """One textbook claim tested in one configuration."""

    where: str
    claim: str
    quantity: str  # what was compared, with its units
    comparison: Comparison
    log: bool = False
    verdict: str = "not clear"
    adjusted_p: float = float("nan")


def _values(evidence: Evidence, cell: str, quantity: str) -> np.ndarray:
    if quantity == "ratio":
        return evidence.ratio(cell)
    if quantity == "test accuracy":
        column = evidence.data.summary.loc[evidence.data.summary["cell"] == cell, "test_accuracy"]
        return column.dropna().to_numpy(dtype=float)
    runs = evidence.learning_runs
    if runs.empty:
        return np.array([])
    return runs.loc[runs["cell"] == cell, "epochs_to_learn"].dropna().to_numpy(dtype=float)


#: The claims checked in every configuration that holds both cells:
#: (first, second, quantity, direction, margin, wording).
CLAIMS: tuple[tuple[str, str, str, str, float, str], ...] = (
    ("RNN_TANH", "LSTM", "ratio", "less", MUCH_SMALLER_DECADES,
     "a tanh RNN keeps much less gradient (>= 1 decade) than an LSTM at initialisation"),
    ("RNN_TANH", "RNN_RELU", "ratio", "less", 0.0,
     "a tanh RNN keeps less gradient than a relu RNN at initialisation (saturating vanishes more)"),
    ("LSTM", "RNN_TANH", "test accuracy", "greater", 0.0, "an LSTM is more accurate than a tanh RNN"),
    ("GRU", "RNN_TANH", "test accuracy", "greater", 0.0, "a GRU is more accurate than a tanh RNN"),
    ("GRU", "LSTM", "epochs to learn", "less", 0.0, "a GRU learns in fewer epochs than an LSTM"),
)


def checks_of(evidence: Evidence) -> list[Check]:
    """The :data:`CLAIMS` this configuration can test (both cells present), before correction."""
    checks = []
    for first, second, quantity, direction, margin, claim in CLAIMS:
        a, b = _values(evidence, first, quantity), _values(evidence, second, quantity)
        if len(a) == 0 or len(b) == 0 or not (np.isfinite(a).all() and np.isfinite(b).all()):
            continue
        units = {"ratio": "log10 first-to-last ratio (decades)", "test accuracy": "accuracy points",
                 "epochs to learn": "epochs, learning runs only"}[quantity]
        checks.append(Check(evidence.label, claim, f"{cell_label(first)} - {cell_label(second)}, {units}",
                            compare(a, b, claim=direction, margin=margin), log=quantity == "ratio"))
    return checks


def decide_checks(checks: list[Check], alpha: float = 0.05) -> None:
    """Fill every check's verdict and Holm-adjusted p-value, all checks of the report together."""
    for check, (verdict, p_value) in zip(checks, decide([check.comparison for check in checks], alpha)):
        check.verdict, check.adjusted_p = verdict, p_value


def associations(evidence_list: list[Evidence], *, outcome: str = "best") -> pd.DataFrame:
    """Seed-level association between log10 first-to-last ratio at init and ``outcome``, per configuration."""
    rows = []
    for evidence in evidence_list:
        per_run = evidence.per_run()
        if per_run.empty:
            continue
        table = seed_association(per_run, "log10_ratio", outcome, by="cell")
        rows.append(table.assign(configuration=evidence.label))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
