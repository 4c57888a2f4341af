"""The gated cells' carry paths: measured gradient against the product of their gates.

LSTM: ``c_t = f_t * c_{t-1} + i_t * g_t``, so dc_t/dc_{t-1} contains
``diag(f_t)``: along the cell state, the gradient reaching ``d`` steps back
from the loss is scaled by the product of the ``d`` forget gates it crosses,
with no weight matrix and no activation derivative in between (the other
paths, through h and the gates, add to it). GRU (torch's convention):
``h_t = (1 - z_t) * n_t + z_t * h_{t-1}``, so dh_t/dh_{t-1} contains
``diag(z_t)`` (``1 - z_t`` in Cho et al.'s convention), the GRU's carry gate.

:func:`carry_profile` puts the measured first-to-distance gradient ratio
beside the product of the measured gates' means (mean over batch and units of
the diagnostics batch): the product of means is not the mean of products, so
it is the first-order prediction of the direct path, not an identity.
Torch-free: reads gradients, gates and summary tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradlab.analysis.stats import select_stages

#: The state each gated cell carries and the gate that scales it per step.
CARRY: dict[str, tuple[str, str]] = {"LSTM": ("c", "f"), "GRU": ("h", "z")}


def carry_profile(gradients: pd.DataFrame, gates: pd.DataFrame, summary: pd.DataFrame, *,
                  stage: str = "init", layer: int = 0) -> pd.DataFrame:
    """Per gated run and distance ``d`` from the loss: measured ratios and the carry gates' product.

    Args:
        gradients, gates, summary: the runs' tables (forward direction is used).
        stage: ``init`` or ``late`` (:func:`gradlab.analysis.stats.select_stages`).
        layer: which layer.

    Returns:
        Run keys, ``cell``, ``seed``, ``seq_len``, ``distance`` (0 at the last
        step), ``carried`` (|dL/ds_{T-1-d}| / |dL/ds_{T-1}| of the carried
        state s: c for the LSTM, h for the GRU), ``hidden`` (the same ratio of
        dL/dh; equals ``carried`` for the GRU) and ``gate_product`` (product
        of the carry gate's mean over the d steps crossed).
    """
    keys = ["sweep", "run_id"] if "sweep" in gradients.columns else ["run_id"]
    columns = [*keys, "cell", "seed", "seq_len", "distance", "carried", "hidden", "gate_product"]
    parts = []
    for cell, (state, gate) in CARRY.items():
        grads = gradients[(gradients["cell"] == cell) & (gradients["layer"] == layer)
                          & (gradients["direction"] == "forward") & gradients["state"].isin([state, "h"])]
        opens = gates[(gates["cell"] == cell) & (gates["layer"] == layer) & (gates["direction"] == "forward")
                      & (gates["gate"] == gate) & (gates["stat"] == "mean")]
        if grads.empty or opens.empty:
            continue
        grads = select_stages(grads)
        grads = grads[grads["stage"] == stage]
        opens = select_stages(opens)
        opens = opens[opens["stage"] == stage]
        for key, run in grads.groupby(keys, sort=True, observed=True):
            key = key if isinstance(key, tuple) else (key,)
            run_gates = opens
            for column, value in zip(keys, key):
                run_gates = run_gates[run_gates[column] == value]
            if run_gates.empty:
                continue
            norms = run.pivot_table(index="timestep", columns="state", values="grad_norm", observed=True)
            last = norms.index.max()
            means = run_gates.groupby("timestep")["value"].mean().reindex(norms.index)
            # Crossing from step t+1 back to t multiplies by gate_{t+1}: distance d crosses gates T-d .. T-1.
            products = np.concatenate([[1.0], np.cumprod(means.to_numpy()[::-1][:-1])])  # (T,) by distance
            distance = (last - norms.index.to_numpy())
            order = np.argsort(distance)
            parts.append(pd.DataFrame({
                **{column: value for column, value in zip(keys, key)},
                "cell": cell, "seed": int(run["seed"].iloc[0]), "seq_len": int(last) + 1,
                "distance": distance[order],
                "carried": (norms[state] / norms.loc[last, state]).to_numpy()[order],
                "hidden": (norms["h"] / norms.loc[last, "h"]).to_numpy()[order],
                "gate_product": products,
            }))
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]
