"""Per-step gradient decay, its first-principles prediction, saturation and exploding gradients.

Backpropagation through time multiplies dL/dh_t by one Jacobian per step,
``W_hh^T diag(f'(a_{t+1}))``. For a weight matrix with i.i.d. entries of
variance ``s^2`` and a vector ``v`` independent of it, ``E ||W^T D v||^2 =
H s^2 ||D v||^2``, so the gradient's norm shrinks per step by about

    gain x slope_rms,   gain = sqrt(H s^2),   slope_rms = sqrt(mean f'(a)^2).

torch's default init draws ``W_hh`` from U(-1/sqrt(H), 1/sqrt(H)), of variance
1/(3H): gain 1/sqrt(3) = 0.577, which is also the circular law's spectral
radius of that matrix. An orthogonal matrix preserves norms and mixes units:
gain 1. The identity (IRNN) does not mix units, so the same relu units stay
active step after step and the gradient along them is not reduced at all:
the i.i.d. argument does not apply and no prediction is made (measured decay
close to 1, against 0.76 that gain x slope_rms would say). ``slope_rms`` is
measured by the gate statistics at every timestep (``gates`` table, gate
``h``, stat ``slope_rms``), so the prediction uses no
gradient measurement at all.

The measured decay is ``(|dL/dh_0| / |dL/dh_{T-1}|)^(1/(T-1))`` of the top
layer, where the loss attaches only at the last step and the recurrence is the
only path (a lower layer also receives gradient from the layer above at every
step). Torch-free: reads gradients, gates, history and summary tables.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gradlab.analysis.stats import first_to_last_ratio, select_stages

#: Norm gain of W_hh^T per step at initialisation, by init scheme (see the module docstring).
INIT_GAIN: dict[str, float] = {"default": 1.0 / math.sqrt(3.0), "orthogonal": 1.0}
#: What the gates table calls saturated, in terms of the derivative (gradlab.nn.cells.SATURATION_THRESHOLD).
SATURATION_RULE = ("pre-activation beyond 1.325 for tanh and 2.65 for sigmoid, where the derivative is below a "
                   "quarter of its peak (tanh' < 0.25, sigmoid' < 0.0625)")
#: A step's gradient norm counts as a spike when it exceeds this multiple of the median of the
#: :data:`SPIKE_WINDOW` steps before it: a burst against the recent level, not the large norms of the
#: first updates, which every cell has while its loss is still high.
SPIKE_FACTOR = 10.0
SPIKE_WINDOW = 20


def _top_layer(summary: pd.DataFrame) -> pd.DataFrame:
    keys = ["sweep", "run_id"] if "sweep" in summary.columns else ["run_id"]
    return summary[[*keys, "num_layers"]].assign(top=lambda frame: frame["num_layers"].astype(int) - 1)[[*keys, "top"]]


def measured_decay(gradients: pd.DataFrame, summary: pd.DataFrame, stage: str = "init") -> pd.DataFrame:
    """Per run, the gradient's per-step factor of the top layer (forward, h) at ``stage``.

    Returns:
        Run keys, ``cell``, ``seed``, ``seq_len`` and ``decay`` (geometric mean
        factor per step; below 1 vanishes).
    """
    keys = ["sweep", "run_id"] if "sweep" in gradients.columns else ["run_id"]
    tops = _top_layer(summary)
    parts = []
    for top, runs in tops.groupby("top"):
        chosen = gradients.merge(runs[keys], on=keys)
        ratios = first_to_last_ratio(chosen, summary, stage=stage, layer=int(top))
        parts.append(ratios)
    if not parts:
        return pd.DataFrame(columns=[*keys, "cell", "seed", "seq_len", "decay"])
    ratios = pd.concat(parts, ignore_index=True)
    steps = (ratios["seq_len"] - 1).clip(lower=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios["decay"] = np.power(ratios["ratio"].astype(float), 1.0 / steps)
    return ratios[[*keys, "cell", "seed", "seq_len", "decay"]]


def predicted_decay(gates: pd.DataFrame, summary: pd.DataFrame, stage: str = "init") -> pd.DataFrame:
    """Per RNN run, ``gain x slope_rms`` at ``stage`` (module docstring), beside its parts.

    ``slope_rms`` is the geometric mean over timesteps 1..T-1 (the steps the
    gradient crosses) of the top layer's measured root-mean-square derivative;
    ``gain`` comes from the run's init (:data:`INIT_GAIN`; at ``stage`` other
    than init the weights have moved, so only the init prediction has a gain).

    Returns:
        Run keys, ``cell``, ``seed``, ``slope_rms``, ``slope`` (mean f'),
        ``saturated`` (fraction, mean over timesteps; NaN for non-saturating
        activations), ``gain`` and ``predicted`` (NaN without a gain).
    """
    keys = ["sweep", "run_id"] if "sweep" in gates.columns else ["run_id"]
    columns = [*keys, "cell", "seed", "slope_rms", "slope", "saturated", "gain", "predicted"]
    chosen = gates[(gates["gate"] == "h") & (gates["direction"] == "forward") & (gates["timestep"] > 0)]
    chosen = chosen.merge(_top_layer(summary), on=keys)
    chosen = chosen[chosen["layer"] == chosen["top"]]
    if chosen.empty:
        return pd.DataFrame(columns=columns)
    staged = select_stages(chosen)
    staged = staged[staged["stage"] == stage]
    wide = staged.pivot_table(index=[*keys, "cell", "seed", "timestep"], columns="stat", values="value",
                              observed=True).reset_index()
    if "slope_rms" not in wide.columns:
        return pd.DataFrame(columns=columns)
    with np.errstate(divide="ignore"):
        wide["log_slope_rms"] = np.log(wide["slope_rms"])
    aggregations = {"slope_rms": ("log_slope_rms", "mean"), "slope": ("slope", "mean")}
    if "saturated" in wide.columns:
        aggregations["saturated"] = ("saturated", "mean")
    table = wide.groupby([*keys, "cell", "seed"], observed=True).agg(**aggregations).reset_index()
    table["slope_rms"] = np.exp(table["slope_rms"])
    if "saturated" not in table.columns:
        table["saturated"] = np.nan
    inits = summary[[*keys, "init"]] if "init" in summary.columns else summary[keys].assign(init="default")
    table = table.merge(inits, on=keys, how="left")
    table["gain"] = table["init"].map(INIT_GAIN) if stage == "init" else np.nan
    table["predicted"] = table["gain"] * table["slope_rms"]
    return table[columns]


def clipping_and_spikes(history: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per run: how often norm clipping acted, and gradient-norm spikes (exploding gradients).

    Uses the training history's ``grad_norm`` (the global norm before clipping).

    Returns:
        Run keys, ``cell``, ``seed``, ``clip_grad_norm``, ``steps``,
        ``clipped`` (fraction of steps whose norm exceeded the clip limit; NaN
        for an unclipped run), ``spikes`` (steps above :data:`SPIKE_FACTOR` x
        the median of the :data:`SPIKE_WINDOW` steps before them) and
        ``max_over_median`` (the largest such ratio).
    """
    keys = ["sweep", "run_id"] if "sweep" in history.columns else ["run_id"]
    norms = history[(history["split"] == "train") & (history["metric"] == "grad_norm")]
    limits = summary[[*keys, "clip_grad_norm"]] if "clip_grad_norm" in summary.columns else summary[keys].assign(
        clip_grad_norm=np.nan)
    rows = []
    for key, run in norms.groupby(keys, sort=True, observed=True):
        values = run["value"].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        if len(values) == 0:
            continue
        recent = pd.Series(values).rolling(SPIKE_WINDOW).median().shift(1).to_numpy()  # causal baseline
        ratios = np.divide(values, recent, out=np.full(len(values), np.nan), where=recent > 0)
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(keys, key)), "cell": run["cell"].iloc[0], "seed": int(run["seed"].iloc[0]),
                     "steps": len(values), "_values": values,
                     "spikes": int(np.nansum(ratios > SPIKE_FACTOR)),
                     "max_over_median": float(np.nanmax(ratios)) if np.isfinite(ratios).any() else np.nan})
    if not rows:
        return pd.DataFrame(columns=[*keys, "cell", "seed", "clip_grad_norm", "steps", "clipped", "spikes",
                                     "max_over_median"])
    table = pd.DataFrame(rows).merge(limits, on=keys, how="left")
    table["clipped"] = [float((values > limit).mean()) if pd.notna(limit) else np.nan
                        for values, limit in zip(table.pop("_values"), table["clip_grad_norm"])]
    return table[[*keys, "cell", "seed", "clip_grad_norm", "steps", "clipped", "spikes", "max_over_median"]]
