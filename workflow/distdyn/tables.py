"""The tables' columns and the bootstrap every interval in them comes from."""
from __future__ import annotations

import numpy as np

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
