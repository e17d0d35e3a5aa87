"""The tables' columns, the bootstrap every interval in them comes from, and the phases of a profile
(phases.csv; the claims' C1 reads them too, so they live here, away from analysis's torch)."""
from __future__ import annotations

import numpy as np
import pandas as pd

ID_COLUMNS = ["model", "role", "setting", "seed", "epoch", "checkpoint"]  # checkpoint: final or epoch_E
LAYER_COLUMNS = [*ID_COLUMNS, "layer", "metric", "value", "ci_low", "ci_high"]
SPECTRA_COLUMNS = [*ID_COLUMNS, "layer", "freq", "intensity"]
CKA_COLUMNS = [*ID_COLUMNS, "student_layer", "teacher_layer", "cka"]
PHASE_COLUMNS = [*ID_COLUMNS, "num_layers", "min_layer", "h_first", "h_min", "h_last", "drop", "rise",
                 "interior", "u_shaped"]
ENCODING_COLUMNS = [*ID_COLUMNS, "layer", "measure", "threshold", "value", "ci_low", "ci_high"]


def resample_indices(images: int, count: int, seed: int) -> np.ndarray:
    """The bootstrap's image indices [resamples, images]; every metric of a dump gets the same ones."""
    return np.random.default_rng(seed).integers(0, images, size=(count, images))


def percentiles(stats: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    tail = 100 * (1 - level) / 2
    return np.percentile(stats, tail, axis=1), np.percentile(stats, 100 - tail, axis=1)


def bootstrap_ci(values: np.ndarray, resamples: int, level: float = 0.95,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean over the last axis (images), for each row."""
    values = np.atleast_2d(values)
    if resamples <= 0:
        nan = np.full(values.shape[0], np.nan)
        return nan, nan
    idx = resample_indices(values.shape[1], resamples, seed)
    return percentiles(values[:, idx].mean(-1), level)  # means: [rows, resamples]


def phases(layers: pd.DataFrame, metric: str = "entropy") -> pd.DataFrame:
    """Compress-then-expand shape of each model's profile of `metric` over depth (paper.md C1).

    `u_shaped` asks that the minimum be interior and its CI lie wholly below both end layers' CIs; a
    missing CI (NaN) can never separate, so without a bootstrap it is always False.
    """
    sel = layers[layers.metric == metric]
    rows = []
    for key, g in sel.groupby(ID_COLUMNS, sort=False, dropna=False):
        g = g.sort_values("layer")
        v = g.value.to_numpy(dtype=float)
        lo = g.ci_low.to_numpy(dtype=float) if "ci_low" in g else np.full(len(g), np.nan)
        hi = g.ci_high.to_numpy(dtype=float) if "ci_high" in g else np.full(len(g), np.nan)
        k = int(np.nanargmin(v))  # the first layer of a tie: a flat start is not a dip
        interior = 0 < k < len(v) - 1
        # NaN comparisons are False, which is what a missing CI should give.
        u_shaped = bool(interior and hi[k] < lo[0] and hi[k] < lo[-1])
        rows.append({**dict(zip(ID_COLUMNS, key)), "num_layers": len(v), "min_layer": int(g.layer.iloc[k]),
                     "h_first": v[0], "h_min": v[k], "h_last": v[-1], "drop": v[0] - v[k], "rise": v[-1] - v[k],
                     "interior": interior, "u_shaped": u_shaped})
    return pd.DataFrame(rows, columns=PHASE_COLUMNS)
