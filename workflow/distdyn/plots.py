"""Figures from the metric tables (PNG, one style).

    python -m distdyn.plots --metrics DIR --out DIR [--settings NAME ...] [--models NAME ...]

Reads layers.csv, spectra.csv and encoding.csv from the metrics directory, and with
settings also accuracy.csv, accuracy_summary.csv, curves.csv and cka.csv. Writes, per
analysed model (the teacher, extra models), {model}_{kind}.png for kind in MODEL_FIGURES;
the study figures (entropy_profiles, encoding, and with settings accuracy, accuracy_curves);
and per setting an entropy heatmap (entropy_heatmap_{setting}.png) and a CKA heatmap
(cka_{setting}.png).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .errors import cli, read_table  # noqa: E402
from .io import atomic_path  # noqa: E402

MODEL_FIGURES = ("entropy", "intensity", "spectra", "magnitudes", "outliers")
STYLE = {"figure.dpi": 120, "savefig.dpi": 120, "font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11,
         "legend.fontsize": 9, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
         "axes.spines.right": False}


def save(fig, path: Path) -> None:
    """Save atomically: a killed job leaves no half-written PNG."""
    try:
        with atomic_path(path, suffix=path.suffix) as tmp:
            fig.savefig(tmp, bbox_inches="tight")
    finally:
        plt.close(fig)


def _final_rows(layers: pd.DataFrame) -> pd.DataFrame:
    return layers[layers.checkpoint == "final"]


def _model(layers: pd.DataFrame, model: str, metric: str) -> pd.DataFrame:
    """The rows of one analysed model (the teacher or an extra model), in layer order."""
    return layers[(layers.model == model) & (layers.role != "student") & (layers.metric == metric)].sort_values("layer")


def _title(model: str) -> str:
    return "Teacher" if model == "teacher" else model


def _band(ax, df: pd.DataFrame, x, **kw):
    line = ax.plot(x, df.value, marker="o", ms=4, **kw)[0]
    if df.ci_low.notna().all():
        ax.fill_between(x, df.ci_low, df.ci_high, color=line.get_color(), alpha=0.2, lw=0)
    return line


def model_bars(layers: pd.DataFrame, model: str, metric: str, ylabel: str, title: str, log: bool = False):
    t = _model(layers, model, metric)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    err = None
    if t.ci_low.notna().all():
        err = np.vstack([t.value - t.ci_low, t.ci_high - t.value]).clip(min=0)
    ax.bar(t.layer, t.value, yerr=err, color="#4c72b0", capsize=2)
    ax.set(xlabel="block (1-based)", ylabel=ylabel, title=f"{_title(model)} {title}", xticks=t.layer)
    if log:
        ax.set_yscale("log")
    return fig


def model_spectra(spectra: pd.DataFrame, model: str):
    t = spectra[(spectra.model == model) & (spectra.role != "student")]
    layers = sorted(t.layer.unique())
    cols = min(4, len(layers))
    rows = -(-len(layers) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.3 * rows), sharex=True, squeeze=False)
    for ax, layer in zip(axes.flat, layers):
        d = t[t.layer == layer]
        ax.plot(d.freq, d.intensity, color="#4c72b0", lw=1.2)
        ax.set_title(f"block {layer}", fontsize=10)
        ax.set_yscale("log")
    for ax in axes.flat[len(layers):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("channel frequency k/C")
    for ax in axes[:, 0]:
        ax.set_ylabel("mean |FFT|/C")
    fig.suptitle(f"{_title(model)} channel spectra per block")
    fig.tight_layout()
    return fig


def model_magnitudes(layers: pd.DataFrame, model: str):
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6))
    for ax, metric, label in zip(axes, ("activation_magnitude", "gradient_magnitude"),
                                 ("mean |activation|", "mean |d logit / d activation|")):
        t = _model(layers, model, metric)
        _band(ax, t, t.layer, color="#c44e52")
        ax.set(xlabel="block (1-based)", ylabel=label, xticks=t.layer)
    axes[0].set_title(f"{_title(model)}: activation magnitude")
    axes[1].set_title(f"{_title(model)}: gradient magnitude")
    fig.tight_layout()
    return fig


def model_outliers(layers: pd.DataFrame, model: str, settings: list[str]):
    """Left: the largest channel's mean |x| over the median channel's per block (the model, with the number
    of channels above the multiple written at each point; for the teacher also every setting's final student,
    mean over seeds). Right: the model's entropy on the file-wide range and on each layer's own range
    (paper.md 2.3, quirk 2)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    t = _model(layers, model, "outlier_ratio")
    n = _model(layers, model, "outlier_channels").set_index("layer").value
    depth = t.layer.max()
    _band(ax, t, t.layer / depth, color="black", lw=2.5, label=model)
    for x, y, layer in zip(t.layer / depth, t.value, t.layer):
        if layer in n.index and np.isfinite(n[layer]):
            ax.annotate(f"{int(n[layer])}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    final = _final_rows(layers[(layers.metric == "outlier_ratio") & (layers.role == "student")])
    cmap = plt.get_cmap("tab10")
    for i, s in enumerate(settings if model == "teacher" else []):
        d = final[final.setting == s].groupby("layer").value.mean()
        if len(d):
            ax.plot(d.index / d.index.max(), d.values, color=cmap(i % 10), lw=1, marker=".", label=s)
    ax.set_yscale("log")
    ax.set(xlabel="relative depth (block / number of blocks)", ylabel="max / median channel mean |x|",
           title=f"Outlier channels ({model}: number above the multiple)")
    ax.legend(ncol=2, frameon=False, fontsize=7)
    ax = axes[1]
    for metric, label, color, ls in (("entropy_global", "file-wide range (the authors')", "#4c72b0", "-"),
                                     ("entropy_per_layer", "each layer's own range", "#dd8452", "--")):
        e = _model(layers, model, metric)
        if len(e):
            _band(ax, e, e.layer, color=color, ls=ls, label=label)
    ax.set(xlabel="block (1-based)", ylabel="entropy (bits)", title=f"{_title(model)} entropy by histogram range",
           xticks=t.layer)
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def entropy_heatmap(layers: pd.DataFrame, setting: str):
    """Checkpoint x layer entropy, mean over seeds."""
    e = layers[(layers.setting == setting) & (layers.metric == "entropy")].copy()
    e["checkpoint"] = np.where(e.checkpoint == "final", "final", "epoch " + e.epoch.astype(str))
    e["order"] = np.where(e.checkpoint == "final", np.inf, e.epoch)
    grid = e.groupby(["order", "checkpoint", "layer"]).value.mean().unstack("layer").sort_index()
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * grid.shape[1], 0.9 + 0.45 * grid.shape[0]))
    im = ax.imshow(grid.values, aspect="auto", cmap="viridis")
    ax.set(xlabel="student block (1-based)", ylabel="checkpoint", title=f"Entropy (bits): {setting}")
    return _annotate(fig, ax, im, grid.values, grid.columns, grid.index.get_level_values("checkpoint"),
                     light_below=np.nanmean(grid.values), fontsize=8, unit="bits")


def _annotate(fig, ax, im, values, xticks, yticks, light_below: float, fontsize: int, unit: str):
    """Tick labels, each cell's value (white on the dark cells) and a colour bar for a heatmap."""
    ax.set_xticks(range(values.shape[1]), xticks)
    ax.set_yticks(range(values.shape[0]), yticks)
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=fontsize,
                color="white" if v < light_below else "black")
    ax.grid(False)
    fig.colorbar(im, ax=ax, label=unit)
    fig.tight_layout()
    return fig


def entropy_profiles(layers: pd.DataFrame, settings: list[str], models: list[str]):
    """Final entropy vs relative depth for every setting, with the teacher's and every extra model's."""
    final = _final_rows(layers[layers.metric == "entropy"])
    fig, ax = plt.subplots(figsize=(7.5, 4.3))
    greys = plt.get_cmap("Greys")
    for j, m in enumerate(models):
        t = final[(final.model == m) & (final.role != "student")].sort_values("layer")
        ax.plot(t.layer / t.layer.max(), t.value,
                color="black" if m == "teacher" else greys(0.45 + 0.5 * j / len(models)),
                lw=2.5, marker="s", ls="-" if m == "teacher" else "--", label=m)
    cmap = plt.get_cmap("tab10")
    for i, s in enumerate(settings):
        d = final[final.setting == s].groupby("layer")[["value", "ci_low", "ci_high"]].mean().reset_index()
        if len(d):
            _band(ax, d, d.layer / d.layer.max(), color=cmap(i % 10), label=s)
    ax.set(xlabel="relative depth (block / number of blocks)", ylabel="entropy (bits)",
           title="Final per-layer entropy")
    ax.legend(ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def accuracy_bars(acc: pd.DataFrame, summary: pd.DataFrame, settings: list[str]):
    s = summary.set_index("setting").reindex(settings)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(settings)), 4.2))
    err = s.final_acc1_std.fillna(0).values if (s.n_seeds > 1).any() else None
    colors = ["#55a868" if d >= 0 else "#c44e52" for d in s.delta_vs_logit.fillna(0)]
    ax.bar(range(len(s)), s.final_acc1_mean, yerr=err, color=colors, capsize=3)
    teacher = acc[acc.role == "teacher"]
    if len(teacher):
        ax.axhline(teacher.final_acc1.iloc[0], color="black", ls="--", lw=1, label="teacher")
        ax.legend(frameon=False, loc="lower right")
    for i, (m, d) in enumerate(zip(s.final_acc1_mean, s.delta_vs_logit)):
        ax.text(i, m, f"{d:+.2f}", ha="center", va="bottom", fontsize=9)
    lo = np.nanmin(s.final_acc1_mean) - 5
    ax.set_ylim(max(0, lo), min(100, np.nanmax([s.final_acc1_mean.max(),
                                                teacher.final_acc1.max() if len(teacher) else 0]) + 3))
    ax.set_xticks(range(len(s)), s.index, rotation=30, ha="right")
    ax.set(ylabel="final top-1 (%)", title="Student top-1 (label: difference to logit KD)")
    fig.tight_layout()
    return fig


def accuracy_curves(curves: pd.DataFrame, settings: list[str]):
    fig, ax = plt.subplots(figsize=(7.5, 4.3))
    cmap = plt.get_cmap("tab10")
    for i, s in enumerate(settings):
        d = curves[(curves.setting == s) & (curves.role == "student")].groupby("epoch").test_acc1.mean()
        ax.plot(d.index, d.values, color=cmap(i % 10), label=s, lw=1.5)
    ax.set(xlabel="epoch", ylabel="top-1 (%)", title="Student top-1 during training")
    ax.legend(ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def cka_heatmap(cka: pd.DataFrame, setting: str):
    """Linear CKA of every final student block against every teacher block, mean over seeds."""
    d = cka[(cka.setting == setting) & (cka.checkpoint == "final")]
    grid = d.groupby(["student_layer", "teacher_layer"]).cka.mean().unstack("teacher_layer")
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * grid.shape[1], 1.0 + 0.5 * grid.shape[0]))
    im = ax.imshow(grid.values, origin="lower", cmap="magma", vmin=0, vmax=1, aspect="auto")
    ax.set(xlabel="teacher block", ylabel="student block", title=f"Linear CKA, student vs teacher: {setting}")
    return _annotate(fig, ax, im, grid.values, grid.columns, grid.index, light_below=0.6, fontsize=7, unit="CKA")


def encoding_figure(enc: pd.DataFrame, settings: list[str], models: list[str]):
    """Last-layer encoding width: per-image SVD vs dataset PCA dims, and the SEP curve against the diagonal."""
    final = enc[enc.checkpoint == "final"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    cmap, greys = plt.get_cmap("tab10"), plt.get_cmap("Greys")
    models = [(m, final[(final.model == m) & (final.role != "student")],
               "black" if m == "teacher" else greys(0.45 + 0.5 * j / len(models))) for j, m in enumerate(models)]
    models += [(s, final[(final.setting == s) & (final.role == "student")], cmap(i % 10))
               for i, s in enumerate(settings)]
    for label, d, color in models:
        if d.empty:
            continue
        svd = d[d.measure == "svd_dim"].groupby("threshold").value.mean()
        pca = d[d.measure == "pca_dim"].groupby("threshold").value.mean()
        width = d[d.measure == "sep_dim"].value.iloc[0] / d[d.measure == "sep_fraction"].value.iloc[0]
        axes[0].plot(svd.index, svd / width, color=color, marker="o", label=f"{label} (per image)")
        axes[0].plot(pca.index, pca / width, color=color, marker="s", ls="--")
        sep = d[d.measure == "sep_fraction"].groupby("threshold").value.mean()
        axes[1].plot(sep.index, sep.values, color=color, marker="o", label=label)
    axes[0].set(xlabel="energy fraction", ylabel="dims / width (99th pct over images)",
                title="Per-image SVD (solid) vs dataset PCA (dashed)")
    axes[1].plot([0.5, 0.9], [0.5, 0.9], color="grey", lw=1, ls=":", label="flat spectrum")
    axes[1].set(xlabel="SEP energy level", ylabel="d / D", title="Token spectral energy pattern (SEP)")
    axes[0].legend(fontsize=7, frameon=False)
    axes[1].legend(fontsize=7, frameon=False, ncol=2)
    fig.tight_layout()
    return fig


def model_figures(layers: pd.DataFrame, spectra: pd.DataFrame, model: str, settings: list[str]) -> dict:
    """The per-model figures of one analysed model (the teacher or an extra model), by kind, each made
    when called."""
    return {
        "entropy": lambda: model_bars(layers, model, "entropy", "entropy (bits)", "per-layer entropy", log=True),
        "intensity": lambda: model_bars(layers, model, "frequency_intensity", "mean |FFT|/C",
                                        "frequency intensity per layer"),
        "spectra": lambda: model_spectra(spectra, model),
        "magnitudes": lambda: model_magnitudes(layers, model),
        "outliers": lambda: model_outliers(layers, model, settings),
    }


def make_figures(metrics_dir: str | Path, out_dir: str | Path, settings: list[str], models: list[str]) -> list[Path]:
    m, out = Path(metrics_dir), Path(out_dir)
    layers, spectra, enc = read_table(m / "layers.csv"), read_table(m / "spectra.csv"), read_table(m / "encoding.csv")
    # Each figure is made, saved and closed before the next: a study of many settings keeps one open.
    figs = {f"{model}_{kind}": make for model in models
            for kind, make in model_figures(layers, spectra, model, settings).items()}
    figs["entropy_profiles"] = lambda: entropy_profiles(layers, settings, models)
    figs["encoding"] = lambda: encoding_figure(enc, settings, models)
    if settings:
        acc, summary = read_table(m / "accuracy.csv"), read_table(m / "accuracy_summary.csv")
        curves, cka = read_table(m / "curves.csv"), read_table(m / "cka.csv")
        figs["accuracy"] = lambda: accuracy_bars(acc, summary, settings)
        figs["accuracy_curves"] = lambda: accuracy_curves(curves, settings)
        figs.update({f"entropy_heatmap_{s}": lambda s=s: entropy_heatmap(layers, s) for s in settings})
        figs.update({f"cka_{s}": lambda s=s: cka_heatmap(cka, s) for s in settings})
    written = []
    with plt.rc_context(STYLE):
        for name, make in figs.items():
            save(make(), out / f"{name}.png")
            written.append(out / f"{name}.png")
    return written


@cli
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distdyn.plots", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--metrics", required=True, help="directory with the metric tables")
    p.add_argument("--out", required=True, help="figure directory")
    p.add_argument("--settings", nargs="*", default=[], help="distillation settings (none: analysis only)")
    p.add_argument("--models", nargs="*", default=[], help="analysed models: the teacher, extra models")
    a = p.parse_args(argv)
    for path in make_figures(a.metrics, a.out, a.settings, a.models):
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
