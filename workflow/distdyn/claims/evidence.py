"""What the claims read from the run's tables (layers.csv, accuracy.csv, curves.csv)."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..tables import ID_COLUMNS, phases

# The columns each claim reads; a table without one (or no table at all) reads as "no rows".
LAYER_NEEDS = ["model", "role", "setting", "seed", "epoch", "layer", "metric", "value", "ci_low", "ci_high"]
ACCURACY_NEEDS = ["role", "setting", "seed", "final_acc1", "final_train_loss_feat"]
CURVE_NEEDS = ["role", "setting", "seed", "epoch", "test_acc1", "train_loss_feat"]


def with_columns(df: pd.DataFrame | None, columns: list[str]) -> pd.DataFrame:
    """The table with any missing column added (empty), so that an absent table reads as 'no rows'."""
    df = pd.DataFrame() if df is None else df
    return df.reindex(columns=list(dict.fromkeys([*df.columns, *columns])))


def _students(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["role"] == "student"] if "role" in df.columns else df


def per_seed(df: pd.DataFrame, setting: str, column: str) -> pd.Series:
    """One value per seed (the last row per seed), NaN dropped."""
    if df is None or not {"setting", "seed", column} <= set(df.columns):
        return pd.Series(dtype=float)
    rows = _students(df)
    rows = rows[rows["setting"] == setting]
    return rows.groupby("seed")[column].last().astype(float).dropna()


def early_top1(curves: pd.DataFrame, setting: str, fraction: float) -> tuple[pd.Series, int, int]:
    """Per seed: mean test top-1 over epochs 1..ceil(fraction * E); also the window length and E."""
    if curves is None or not {"setting", "seed", "epoch", "test_acc1"} <= set(curves.columns):
        return pd.Series(dtype=float), 0, 0
    rows = _students(curves)
    rows = rows[(rows["setting"] == setting) & (rows["epoch"] >= 1)].dropna(subset=["test_acc1"])
    out, windows, totals = {}, [], []
    for seed, run in rows.groupby("seed"):
        total = int(run["epoch"].max())
        n = max(1, math.ceil(fraction * total))
        out[seed] = float(run.loc[run["epoch"] <= n, "test_acc1"].mean())
        windows.append(n)
        totals.append(total)
    return pd.Series(out, dtype=float), (max(windows) if windows else 0), (max(totals) if totals else 0)


def final_feature_loss(accuracy: pd.DataFrame, curves: pd.DataFrame, setting: str) -> pd.Series:
    """Per seed: `final_train_loss_feat` from accuracy.csv, else the last epoch's `train_loss_feat`."""
    values = per_seed(accuracy, setting, "final_train_loss_feat")
    needed = {"setting", "seed", "epoch", "train_loss_feat"}
    if len(values) == 0 and curves is not None and needed <= set(curves.columns):
        rows = _students(curves)
        rows = rows[rows["setting"] == setting].sort_values("epoch")
        values = rows.groupby("seed")["train_loss_feat"].last().astype(float).dropna()
    return values


def entropy_profiles(layers: pd.DataFrame, setting: str, checkpoint: str = "final") -> dict:
    """{seed: Series(layer -> entropy)} of a student setting's final (or earliest) checkpoint."""
    rows = layers[(layers["role"] == "student") & (layers["setting"] == setting) & (layers["metric"] == "entropy")]
    if checkpoint == "final":
        rows = rows[rows["checkpoint"] == "final"]
    else:
        rows = rows[rows["checkpoint"] != "final"]
    out = {}
    for seed, run in rows.groupby("seed"):
        if checkpoint != "final":
            run = run[run["epoch"] == run["epoch"].min()]
        prof = run.groupby("layer")["value"].mean().sort_index().dropna()
        if len(prof):
            out[seed] = prof
    return out


def earliest_epoch(layers: pd.DataFrame, setting: str) -> int:
    """The epoch of a student setting's earliest checkpoint (what `entropy_profiles(..., 'earliest')` reads)."""
    rows = layers[(layers.setting == setting) & (layers.role == "student") & (layers.checkpoint != "final")]
    return int(rows.epoch.min())


def teacher_entropy(layers: pd.DataFrame, metric: str = "entropy") -> pd.DataFrame:
    """The teacher's final profile of `metric` (default the entropy): layer, value, ci_low, ci_high, by layer."""
    rows = layers[(layers["role"] == "teacher") & (layers["metric"] == metric)]
    if len(rows) == 0:
        return rows
    final = rows[rows["checkpoint"] == "final"]
    rows = final if len(final) else rows[rows["epoch"] == rows["epoch"].max()]
    cols = [c for c in ("value", "ci_low", "ci_high") if c in rows.columns]
    return rows.groupby("layer")[cols].mean().sort_index().reset_index()


def teacher_phase(profile: pd.DataFrame) -> dict:
    """distdyn.tables.phases on one `teacher_entropy` profile: num_layers, min_layer, h_first, h_min, h_last,
    drop, rise, interior, u_shaped."""
    # One group: the profile as C1 reads it (final checkpoint, duplicate rows averaged), whatever its ids were.
    rows = profile.assign(metric="profile", **dict.fromkeys(ID_COLUMNS, "teacher"))
    return phases(rows, "profile").iloc[0].to_dict()


def has_ci(profile: pd.DataFrame) -> bool:
    """Every layer of the profile has its bootstrap interval."""
    return {"ci_low", "ci_high"} <= set(profile.columns) and not profile[["ci_low", "ci_high"]].isna().any().any()


def profile_stats(prof: pd.Series) -> dict:
    """min, argmin layer, mean, first, last and the U depth (lower end minus minimum, 0 if monotone)."""
    v = prof.to_numpy(dtype=float)
    i = int(np.argmin(v))
    return {"min": float(v[i]), "argmin": int(prof.index[i]), "mean": float(v.mean()), "first": float(v[0]),
            "last": float(v[-1]), "u_depth": float(min(v[0], v[-1]) - v[i]), "layers": len(v)}


# ---------------------------------------------------------------- the quantities a claim compares


def _final_min_entropy(tables: dict, setting: str, fraction: float) -> pd.Series:
    profiles = entropy_profiles(tables["layers"], setting)
    return pd.Series({seed: float(p.min()) for seed, p in profiles.items()}, dtype=float)


@dataclass(frozen=True)
class Quantity:
    """One number per seed that a claim compares between two settings (claims.yaml's `quantity`)."""

    label: str  # as the evidence writes it
    unit: str
    digits: int
    source: str  # what a setting without it lacks, for the not-testable reason
    read: Callable[[dict, str, float], pd.Series]  # (tables, setting, early_fraction) -> value per seed


QUANTITIES = {
    "final_acc1": Quantity("final top-1", "pts", 2, "a final top-1 in accuracy.csv",
                           lambda t, s, f: per_seed(t["accuracy"], s, "final_acc1")),
    "early_mean_acc1": Quantity("early mean top-1", "pts", 2, "epochs in curves.csv",
                                lambda t, s, f: early_top1(t["curves"], s, f)[0]),
    "final_train_loss_feat": Quantity("final weighted feature loss", "", 4,
                                      "a final feature loss in accuracy.csv or curves.csv",
                                      lambda t, s, f: final_feature_loss(t["accuracy"], t["curves"], s)),
    "final_min_entropy": Quantity("final minimum entropy", "bits", 3, "final student entropy rows in layers.csv",
                                  _final_min_entropy),
}
