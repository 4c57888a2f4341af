"""Lyapunov exponents beside measured gradient decay: the theory's prediction against the measurement.

Backpropagation multiplies the gradient by one state-to-state Jacobian per
step, so over many steps its size changes at the rate of the largest Lyapunov
exponent lambda_1 (natural log per step). The gradient's measured decay per
step is the slope of log10 of the first-to-last ratio over the T - 1 steps
between them. In the same units the prediction is lambda_1 / ln 10 decades
per step; :func:`exponent_vs_slope` pairs the two run by run.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gradlab.analysis.stats import first_to_last_ratio, mean_interval


def spectrum_stages(lyapunov: pd.DataFrame) -> pd.DataFrame:
    """The first layer's forward spectrum of each run at initialisation and at its last recording.

    Returns:
        Rows of ``lyapunov`` with a ``stage`` column (``initialisation`` or ``trained``);
        runs recorded only at step 0 have no ``trained`` rows.
    """
    first = lyapunov[(lyapunov["layer"] == 0) & (lyapunov["direction"] == "forward")]
    keys = ["sweep", "run_id"] if "sweep" in first.columns else ["run_id"]
    last = first.groupby(keys, observed=True)["step"].transform("max")
    init = first[first["step"] == 0].assign(stage="initialisation")
    trained = first[(first["step"] == last) & (last > 0)].assign(stage="trained")
    return pd.concat([init, trained], ignore_index=True)


def exponent_vs_slope(lyapunov: pd.DataFrame, gradients: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per run at initialisation: the largest exponent (in decades per step) and the gradient's measured decay.

    Returns:
        One row per run with ``cell``, ``seed``, ``seq_len``, ``predicted``
        (lambda_1 / ln 10) and ``measured`` (log10 first-to-last ratio / (T - 1));
        runs whose ratio underflowed to 0 have ``measured`` = -inf.
    """
    keys = ["sweep", "run_id"] if "sweep" in lyapunov.columns else ["run_id"]
    init = lyapunov[(lyapunov["step"] == 0) & (lyapunov["layer"] == 0) & (lyapunov["direction"] == "forward")
                    & (lyapunov["index"] == 0)]
    predicted = init[keys + ["exponent"]].assign(predicted=lambda frame: frame["exponent"] / math.log(10))
    ratios = first_to_last_ratio(gradients, summary, stage="init")
    with np.errstate(divide="ignore"):
        measured = ratios.assign(measured=np.log10(ratios["ratio"].astype(float)) / (ratios["seq_len"] - 1))
    pairs = measured.merge(predicted[keys + ["predicted"]], on=keys, how="inner")
    return pairs[[*keys, "cell", "seed", "seq_len", "predicted", "measured"]]


def agreement(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per cell and length: mean predicted and measured decay, and their difference with its interval.

    Runs whose gradient underflowed are counted (``underflowed``) and left out.
    """
    rows = []
    for (cell, length), part in pairs.groupby(["cell", "seq_len"], observed=True, sort=True):
        finite = part[np.isfinite(part["measured"])]
        difference = (finite["measured"] - finite["predicted"]).to_numpy()
        low, high = mean_interval(difference) if len(difference) > 1 else (np.nan, np.nan)
        rows.append({"cell": cell, "seq_len": int(length), "seeds": len(finite),
                     "underflowed": int(len(part) - len(finite)),
                     "predicted": finite["predicted"].mean(), "measured": finite["measured"].mean(),
                     "difference": difference.mean() if len(difference) else np.nan,
                     "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)
