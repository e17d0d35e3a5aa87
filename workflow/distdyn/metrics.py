"""Per-layer metrics of activation dumps (paper.md section 2), streamed in chunks.

    python -m distdyn.metrics DUMP.h5 [DUMP.h5 ...] --out DIR [--entropy-range global|per_layer]
                              [--outlier-multiple K]
    python -m distdyn.metrics gather --layers A.csv ... --spectra A.csv ... --out DIR
    python -m distdyn.metrics accuracy --logs LOG.jsonl ... --out A.csv ... [--finals F.pt ... --correct C.npz]

Definitions (the authors' code is the reference):
  frequency_intensity  FFT over channels / C, mean |.| over images and positions, mean over all C bins
  spectrum S(k)        the same mean |.| per bin, for k < C/2
  entropy              per token, a `bins`-bin histogram of its C values over the min/max of the whole
                       file (all layers), p = counts / C, -sum p log2 p; mean over images and positions
                       (with entropy_range per_layer: over the layer's own min/max)
  entropy_global       the entropy on the whole file's min/max, whatever entropy_range says
  entropy_per_layer    the entropy on the layer's own min/max, whatever entropy_range says
  activation_magnitude mean |block output|
  gradient_magnitude   mean |d logit_target / d block output| (from the dump)
  outlier_ratio        m_c = mean |x| of channel c over images and positions; max_c m_c / median_c m_c
  outlier_channels     the number of channels with m_c > K * median_c m_c (K: --outlier-multiple)

A dump is read one layer and `chunk_images` images at a time, so memory stays
bounded whatever the file size. The entropy range is the per-layer min/max the dump
recorded when written (older dumps: a first streaming pass). Binning reproduces
np.histogram exactly with float32 arithmetic plus an exact check of values near edges.
The per-token work runs in distdyn.kernels (a C pass for the entropies and |x| sums, scipy.fft's
float32 rfft for the spectrum), or in torch.
The outlier metrics' interval resamples images like the others: each resample's channel means
are the weighted means of the per-image channel means.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import kernels
from .dumps import ValueRange, check_identity, non_finite, open_dump, stored_value_range
from .errors import LogError, TableError, check_complete, cli, read_table, remedy
from .io import chunks, write_csv, write_npz
from .jobenv import granted_device, visible_gpus
from .schema import schema_default
from .tables import LAYER_COLUMNS, SPECTRA_COLUMNS, bootstrap_ci, percentiles, resample_indices

SCALAR_METRICS = ("frequency_intensity", "entropy", "entropy_global", "entropy_per_layer", "activation_magnitude",
                  "gradient_magnitude")  # means over images of per-image values
OUTLIER_METRICS = ("outlier_ratio", "outlier_channels")  # from channel means over all images
LAYER_METRICS = SCALAR_METRICS + OUTLIER_METRICS


@dataclass
class DumpMetrics:
    meta: dict
    per_image: dict[str, np.ndarray]  # metric -> [L, B], each image's value (mean over its positions)
    spectra: np.ndarray  # [L, C // 2]
    channels: int
    channel_abs: np.ndarray  # [L, B, C], each image's mean |x| per channel (over its positions)

    @property
    def num_layers(self) -> int:
        return self.spectra.shape[0]


# ---------------------------------------------------------------- kernels (one chunk: [b, N, C])


def half_spectrum(x: torch.Tensor) -> torch.Tensor:
    """|FFT over channels| / C for bins 0..C//2 of real tokens: [b, N, C] -> [b, N, C//2 + 1].

    A real signal's spectrum is conjugate-symmetric, so the other bins repeat these;
    `fold_weights` counts each kept bin as often as it occurs in the full spectrum.
    """
    return torch.fft.rfft(x, dim=-1).abs() / x.shape[-1]


def fold_weights(channels: int) -> torch.Tensor:
    """Multiplicity of each rfft bin in the full C-bin spectrum (1 for DC and Nyquist, else 2)."""
    w = torch.full((channels // 2 + 1,), 2.0, dtype=torch.float64)
    w[0] = 1.0
    if channels % 2 == 0:
        w[-1] = 1.0
    return w


def histogram_edges(lo: float, hi: float, bins: int) -> torch.Tensor:
    """The bin edges numpy's np.histogram uses for float32 data on range (lo, hi)."""
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return torch.from_numpy(np.linspace(np.float32(lo), np.float32(hi), bins + 1, dtype=np.float32))


@functools.lru_cache(maxsize=8)
def _nlog2n(n: int, device: str = "cpu") -> torch.Tensor:
    k = torch.arange(n + 1, dtype=torch.float64, device=device)
    return torch.where(k > 0, k * torch.log2(k.clamp_min(1)), torch.zeros_like(k))


def histogram_bins(x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """np.histogram's bin of each float32 value (int32): bin i holds edges[i] <= v < edges[i+1],
    the last bin also its right edge. Values outside the edges are the caller's business.

    Float32 arithmetic puts every value within `tol` bins of its exact position, so only
    the few values that close to an edge are compared against the float32 edges.
    """
    bins = len(edges) - 1
    lo, hi = float(edges[0]), float(edges[-1])
    inner = edges[1:-1].contiguous()
    tol = 64 * bins * float(np.finfo(np.float32).eps) * (1 + max(abs(lo), abs(hi)) / (hi - lo))
    if tol > 0.05:  # a range far from zero relative to its width: search every value
        return torch.bucketize(x, inner, right=True, out_int32=True)
    pos = (x - lo).mul_(bins / (hi - lo))
    idx = pos.floor()
    frac = pos.sub_(idx)
    near = ((frac < tol) | (frac > 1 - tol)).view(-1).nonzero().squeeze(1)
    idx = idx.clamp_(0, bins - 1).to(torch.int32)
    idx.view(-1)[near] = torch.bucketize(x.reshape(-1)[near], inner, right=True, out_int32=True)
    return idx


def token_entropy(x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (bits) of each token's channel-value histogram: [..., C] -> [...].

    Binning is np.histogram's (`histogram_bins`); values outside the range are dropped
    and still count in p = counts / C, as in the authors' code. With n_b the counts,
    H = (sum n_b / C) log2 C - (1/C) sum n_b log2 n_b.
    """
    bins, C = len(edges) - 1, x.shape[-1]
    lead = x.shape[:-1]
    x = x.float().reshape(-1, C)
    tokens = x.shape[0]
    slots = tokens * bins
    itype = torch.int32 if slots < 2**31 - 1 else torch.int64
    idx = histogram_bins(x, edges).to(itype)
    # one bincount over (token, bin) pairs
    idx += torch.arange(0, slots, bins, dtype=itype, device=x.device).unsqueeze(1)
    vmin, vmax = torch.aminmax(x) if x.numel() else (edges[0], edges[0])
    if vmin < edges[0] or vmax > edges[-1]:
        inside = (x >= edges[0]) & (x <= edges[-1])
        idx = torch.where(inside, idx, slots)  # a spare slot for dropped values
        total = inside.sum(-1, dtype=torch.float64)
    else:
        total = torch.full((tokens,), float(C), dtype=torch.float64, device=x.device)
    counts = torch.bincount(idx.view(-1), minlength=slots + 1)[:slots].view(tokens, bins)
    h = total / C * np.log2(C) - _nlog2n(C, str(x.device)).take(counts).sum(-1) / C
    return h.view(lead)


# ---------------------------------------------------------------- the engine


def chunk_metrics(x: np.ndarray, edges: torch.Tensor, lib=None, edges2: torch.Tensor | None = None,
                  bounds: tuple[float, float] | None = None):
    """One chunk [b, N, C]: |FFT| / C summed over positions [b, C//2 + 1] (float64), each image's
    mean token entropy [b] (and on `edges2` [b], else None), sum |x| [b] and sum |x| per channel
    over positions [b, C]. `lib`: the C kernels (with the library FFT; `bounds`, limits of the chunk's
    values such as its layer's min/max, only speed up a histogram much wider than the values), or
    None for torch on the device of `edges`."""
    b, N, C = x.shape
    if lib is None:
        xt = torch.from_numpy(x).to(edges.device)
        mag = half_spectrum(xt).sum(1, dtype=torch.float64).cpu()
        entropy = token_entropy(xt, edges).mean(1).cpu().numpy()
        entropy2 = None if edges2 is None else token_entropy(xt, edges2).mean(1).cpu().numpy()
        ax = xt.abs()
        return (mag, entropy, ax.sum((1, 2), dtype=torch.float64).cpu().numpy(), entropy2,
                ax.sum(1, dtype=torch.float64).cpu().numpy())
    r = kernels.token_metrics(lib, x, edges.numpy(), _nlog2n(C).numpy(),
                              None if edges2 is None else edges2.numpy(), bounds)
    return (torch.from_numpy(r.spectrum) / C, r.entropy.mean(1), r.abs_sum.sum(1),
            None if r.entropy2 is None else r.entropy2.mean(1), r.channel_abs)


def read_chunk(blocks, layer: int, b0: int, b1: int, buf: np.ndarray) -> np.ndarray:
    """blocks[layer, b0:b1] as float32, read (and converted by HDF5) into the reused `buf`."""
    out = buf[: b1 - b0]
    blocks.read_direct(out, np.s_[layer, b0:b1], np.s_[0:b1 - b0])
    return out


def value_range(blocks, chunk_images: int, buf: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer min and max of a [L, B, N, C] dataset, streamed (for dumps that did not record them);
    `buf`: a float32 [chunk_images, N, C] buffer to read into."""
    L, B, N, C = blocks.shape
    found = ValueRange(L)
    buf = np.empty((chunk_images, N, C), dtype=np.float32) if buf is None else buf
    for layer in range(L):
        for b0, b1 in chunks(B, chunk_images):
            found.update(read_chunk(blocks, layer, b0, b1, buf), layer)
    return found.lo, found.hi


def compute_dump(path: str | Path, *, entropy_range: str = "global", bins: int = 100,
                 chunk_images: int = 256, stored_range: bool = True, use_kernels: bool = True,
                 device: str | torch.device = "cpu", expect: dict | None = None) -> DumpMetrics:
    """All layer metrics of one dump, never holding more than one chunk of it in memory.

    On the CPU with `use_kernels` (and a C compiler) the per-token work runs in
    distdyn.kernels, else in torch (on `device`); all give the same numbers.

    The entropy range comes from the min/max the dump recorded when written; without
    them (or with `stored_range=False`) a first streaming pass finds it. Both entropies
    (file-wide and per-layer range) are computed in the same pass; `entropy` is the one
    `entropy_range` names. `expect`: the identifying attributes the dump must have (model, role,
    setting, seed, epoch; DumpError otherwise). NaN or Inf anywhere is a DumpError naming the layer.
    """
    if entropy_range not in ("global", "per_layer"):
        raise ValueError(f"entropy_range must be 'global' or 'per_layer', not {entropy_range!r}")
    with open_dump(path) as f:
        meta = check_identity(f, path, expect)
        blocks = f["blocks"]
        L, B, N, C = blocks.shape
        chunk_images = max(1, min(chunk_images, B))
        buf = np.empty((chunk_images, N, C), dtype=np.float32)  # reused: a fresh one would page-fault every chunk
        recorded = stored_value_range(f) if stored_range else None
        lo, hi = recorded if recorded is not None else value_range(blocks, chunk_images, buf)
        for layer in np.flatnonzero(~(np.isfinite(lo) & np.isfinite(hi))):
            raise non_finite(path, int(layer), "its value range")
        glo, ghi = float(lo.min()), float(hi.max())
        device = torch.device(device)
        lib = kernels.load() if use_kernels and device.type == "cpu" else None
        per_image = {m: np.zeros((L, B)) for m in SCALAR_METRICS if m != "entropy"}
        channel_abs = np.zeros((L, B, C))
        spectra = np.zeros((L, C // 2))
        weights = fold_weights(C)
        for layer in range(L):
            llo, lhi = float(lo[layer]), float(hi[layer])
            edges = histogram_edges(glo, ghi, bins).to(device)
            same = (llo, lhi) == (glo, ghi)  # this layer holds both extremes: one histogram serves both
            edges_layer = None if same else histogram_edges(llo, lhi, bins).to(device)
            spec_sum = torch.zeros(C // 2 + 1, dtype=torch.float64)
            for b0, b1 in chunks(B, chunk_images):
                x = read_chunk(blocks, layer, b0, b1, buf)
                mag, entropy, abs_sum, entropy_layer, chan = chunk_metrics(x, edges, lib, edges_layer, (llo, lhi))
                if not np.isfinite(abs_sum).all():  # NaN and Inf propagate into the sum of |x|: a free check
                    raise non_finite(path, layer, f"images {b0}..{b1 - 1}")
                spec_sum += mag.sum(0)
                per_image["frequency_intensity"][layer, b0:b1] = (mag @ weights / (N * C)).numpy()
                per_image["entropy_global"][layer, b0:b1] = entropy
                per_image["entropy_per_layer"][layer, b0:b1] = entropy if same else entropy_layer
                per_image["activation_magnitude"][layer, b0:b1] = abs_sum / (N * C)
                channel_abs[layer, b0:b1] = chan / N
            spectra[layer] = (spec_sum[: C // 2] / (B * N)).numpy()
        per_image["gradient_magnitude"] = np.asarray(f["grad_magnitude"], dtype=np.float64)
        for layer in np.flatnonzero(~np.isfinite(per_image["gradient_magnitude"]).all(1)):
            raise non_finite(path, int(layer), "/grad_magnitude")
        per_image["entropy"] = per_image["entropy_global" if entropy_range == "global" else "entropy_per_layer"]
    return DumpMetrics(meta, {m: per_image[m] for m in SCALAR_METRICS}, spectra, C, channel_abs)


def compute_in_memory(blocks: np.ndarray, grad_magnitude: np.ndarray | None = None, *, entropy_range: str = "global",
                      bins: int = 100, outlier_multiple: float | None = None) -> dict[str, np.ndarray]:
    """The same per-layer means from a whole [L, B, N, C] array at once (reference for the engine and tests);
    also `channel_abs` [L, C] (mean |x| per channel) and, with `outlier_multiple`, the outlier metrics."""
    x = torch.from_numpy(np.asarray(blocks, dtype=np.float32))
    ranges = {"global": ([x.min().item()] * len(x), [x.max().item()] * len(x)),
              "per_layer": (x.amin((1, 2, 3)).tolist(), x.amax((1, 2, 3)).tolist())}
    C = x.shape[-1]
    mag = half_spectrum(x).double()  # [L, B, N, C//2 + 1]
    out = {"frequency_intensity": (mag @ fold_weights(C)).mean((1, 2)).numpy() / C,
           "activation_magnitude": x.double().abs().mean((1, 2, 3)).numpy(),
           "spectra": mag.mean((1, 2))[:, : C // 2].numpy(),
           "channel_abs": x.double().abs().mean((1, 2)).numpy()}
    for name, (lo, hi) in ranges.items():
        out[f"entropy_{name}"] = np.array([token_entropy(x[i], histogram_edges(lo[i], hi[i], bins)).mean().item()
                                           for i in range(len(x))])
    out["entropy"] = out[f"entropy_{entropy_range}"]
    if outlier_multiple is not None:
        out["outlier_ratio"], out["outlier_channels"] = outlier_stats(out["channel_abs"], outlier_multiple)
    if grad_magnitude is not None:
        out["gradient_magnitude"] = np.asarray(grad_magnitude, dtype=np.float64).mean(1)
    return out


# ---------------------------------------------------------------- statistics


def outlier_stats(channel_means: np.ndarray, multiple: float) -> tuple[np.ndarray, np.ndarray]:
    """From mean |x| per channel [..., C]: the largest channel's over the median channel's, and the
    number of channels above `multiple` times the median (float). NaN where the median is 0."""
    m = np.asarray(channel_means, dtype=np.float64)
    med = np.median(m, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(med > 0, m.max(axis=-1) / med, np.nan)
    count = np.where(med > 0, (m > multiple * med[..., None]).sum(axis=-1), np.nan)
    return ratio, count.astype(np.float64)


def bootstrap_outliers(channel_abs: np.ndarray, multiple: float, resamples: int, level: float = 0.95,
                       seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Percentile bootstrap intervals of outlier_ratio and outlier_channels per layer from each
    image's channel means [L, B, C], resampling images as `bootstrap_ci` does: a resample's channel
    means are the count-weighted mean of its images' (one matrix product per layer)."""
    L, B, C = channel_abs.shape
    if resamples <= 0:
        nan = np.full(L, np.nan)
        return (nan, nan), (nan, nan)
    idx = resample_indices(B, resamples, seed)
    weights = np.zeros((resamples, B))
    np.add.at(weights, (np.arange(resamples)[:, None], idx), 1.0 / B)
    ratio, count = np.empty((L, resamples)), np.empty((L, resamples))
    for layer in range(L):
        ratio[layer], count[layer] = outlier_stats(weights @ channel_abs[layer], multiple)
    return percentiles(ratio, level), percentiles(count, level)


# ---------------------------------------------------------------- tables


def layer_rows(m: DumpMetrics, resamples: int = 0, level: float = 0.95,
               outlier_multiple: float | None = None) -> pd.DataFrame:
    """Tidy rows (model, role, setting, seed, epoch, layer, metric, value, ci_low, ci_high), layer 1-based.
    `outlier_multiple` None: the schema's default."""
    multiple = schema_default("metrics.outlier_multiple") if outlier_multiple is None else float(outlier_multiple)
    layer = np.arange(1, m.num_layers + 1)
    frames = []
    for metric in SCALAR_METRICS:
        values = m.per_image[metric]
        low, high = bootstrap_ci(values, resamples, level)
        frames.append(pd.DataFrame({**m.meta, "layer": layer, "metric": metric,
                                    "value": values.mean(1), "ci_low": low, "ci_high": high}))
    stats = outlier_stats(m.channel_abs.mean(1), multiple)
    for metric, value, (low, high) in zip(OUTLIER_METRICS, stats,
                                          bootstrap_outliers(m.channel_abs, multiple, resamples, level)):
        frames.append(pd.DataFrame({**m.meta, "layer": layer, "metric": metric, "value": value,
                                    "ci_low": low, "ci_high": high}))
    return pd.concat(frames, ignore_index=True)[LAYER_COLUMNS]


def spectra_rows(m: DumpMetrics) -> pd.DataFrame:
    L, K = m.spectra.shape
    freqs = np.fft.fftfreq(m.channels)[:K]
    return pd.DataFrame({**m.meta, "layer": np.repeat(np.arange(1, L + 1), K), "freq": np.tile(freqs, L),
                         "intensity": m.spectra.ravel()})[SPECTRA_COLUMNS]


def entropy_wide(layers: pd.DataFrame) -> pd.DataFrame:
    """The authors' layout: rows = checkpoints in epoch order then final, columns Layer_1..Layer_L."""
    e = layers[layers.metric == "entropy"].copy()
    e["is_final"] = e.checkpoint == "final"
    wide = e.pivot_table(index=["is_final", "epoch", "checkpoint"], columns="layer", values="value")
    wide = wide.sort_index().reset_index(level=["is_final", "epoch"], drop=True)
    wide.columns = [f"Layer_{c}" for c in wide.columns]
    return wide.reset_index()


def compute_tables(dumps: list[str], *, entropy_range: str = "global", bins: int = 100, chunk_images: int = 256,
                   bootstrap: int = 0, ci: float = 0.95, device: str | torch.device = "cpu",
                   outlier_multiple: float | None = None, expect: list[dict] | None = None
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Layer and spectra rows of `dumps`; `expect`: one dict of identifying attributes per dump (compute_dump)."""
    layers, spectra = [], []
    for path, want in zip(dumps, expect or [None] * len(dumps)):
        m = compute_dump(path, entropy_range=entropy_range, bins=bins, chunk_images=chunk_images, device=device,
                         expect=want)
        layers.append(layer_rows(m, bootstrap, ci, outlier_multiple))
        spectra.append(spectra_rows(m))
    return pd.concat(layers, ignore_index=True), pd.concat(spectra, ignore_index=True)


# ---------------------------------------------------------------- accuracy


LOG_COLUMNS = ("epoch", "test_acc1", "test_acc5")


def read_log(path: str | Path) -> pd.DataFrame:
    """A training log, one JSON object per line with at least LOG_COLUMNS; LogError naming the file and line."""
    try:
        with open(path) as f:
            lines = [(i, line) for i, line in enumerate(f, 1) if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise LogError(path, f"cannot be read ({type(e).__name__}: {e}); {remedy(path)}") from None
    if not lines:
        raise LogError(path, f"is empty: no epoch was logged; {remedy(path)}")
    records = []
    for i, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise LogError(path, f"line {i} is not JSON ({e.msg}: column {e.colno}); "
                                 f"truncated or edited? {remedy(path)}") from None
        missing = [c for c in LOG_COLUMNS if not isinstance(record, dict) or c not in record]
        if missing:
            raise LogError(path, f"line {i} is not an epoch record (no {', '.join(missing)}); {remedy(path)}")
        records.append(record)
    epochs = [r["epoch"] for r in records]
    if epochs != sorted(set(epochs)):
        raise LogError(path, f"its epochs {epochs} are not increasing (lines of two runs?); {remedy(path)}")
    return pd.DataFrame(records)


def accuracy_table(logs: list[str], names: list[str], seeds: list[int], roles: list[str]) -> pd.DataFrame:
    """Final and best top-1/top-5 and the epoch of the best, per run."""
    rows = []
    for path, name, seed, role in zip(logs, names, seeds, roles):
        log = read_log(path)
        best = log.loc[log.test_acc1.idxmax()]
        last = log.iloc[-1]
        rows.append({"role": role, "setting": name, "seed": seed, "final_acc1": last.test_acc1,
                     "final_acc5": last.test_acc5, "best_acc1": best.test_acc1, "best_acc5": best.test_acc5,
                     "best_epoch": int(best.epoch), "epochs": int(last.epoch),
                     "final_train_loss_feat": last.get("train_loss_feat")})
    return pd.DataFrame(rows)


def training_curves(logs: list[str], names: list[str], seeds: list[int], roles: list[str]) -> pd.DataFrame:
    """Every epoch's log line, tagged with its run."""
    frames = [read_log(p).assign(role=r, setting=n, seed=s) for p, n, s, r in zip(logs, names, seeds, roles)]
    cols = ["role", "setting", "seed", "epoch", "lr", "train_loss", "train_loss_base", "train_loss_feat",
            "train_loss_dist", "test_loss", "test_acc1", "test_acc5", "seconds", "images_per_s"]
    return pd.concat(frames, ignore_index=True).reindex(columns=cols)


def val_correct(finals: list[str], names: list[str], seeds: list[int], roles: list[str]) -> dict[str, np.ndarray]:
    """Each student's final per-image correctness on the validation split (its final.pt's `val_correct`, in
    the split's order), by '{setting}/seed_{seed}': what the claims' McNemar test of two one-seed models reads.
    A final.pt without it (an imported model) is left out."""
    from .checkpoints import load_checkpoint

    out = {}
    for path, name, seed, role in zip(finals, names, seeds, roles):
        if role != "student":
            continue
        correct = load_checkpoint(path).get("val_correct")
        if correct is not None:
            out[f"{name}/seed_{seed}"] = np.asarray(correct, dtype=bool)
    return out


def accuracy_summary(acc: pd.DataFrame, reference: str = "logit") -> pd.DataFrame:
    """Per setting: mean and standard deviation over seeds, and the difference to `reference`."""
    students = acc[acc.role == "student"]
    g = students.groupby("setting", sort=False)
    out = pd.DataFrame({"n_seeds": g.size(), "final_acc1_mean": g.final_acc1.mean(),
                        "final_acc1_std": g.final_acc1.std(ddof=1),
                        "best_acc1_mean": g.best_acc1.mean(), "best_acc1_std": g.best_acc1.std(ddof=1),
                        "final_acc5_mean": g.final_acc5.mean()}).reset_index()
    ref = out.set_index("setting").final_acc1_mean.get(reference, np.nan)
    out[f"delta_vs_{reference}"] = out.final_acc1_mean - ref
    return out


# ---------------------------------------------------------------- CLI


def _compute_main(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m distdyn.metrics", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dumps", nargs="+", help="activation dumps (HDF5)")
    p.add_argument("--out", required=True, help="directory for layers.csv and spectra.csv")
    # Defaults are the config schema's (metrics.*), their one home.
    p.add_argument("--entropy-range", default=schema_default("metrics.entropy_range"), choices=["global", "per_layer"])
    p.add_argument("--bins", type=int, default=schema_default("metrics.bins"))
    p.add_argument("--chunk-images", type=int, default=schema_default("metrics.chunk_images"))
    p.add_argument("--bootstrap", type=int, default=schema_default("metrics.bootstrap"),
                   help="bootstrap resamples for ci_low/ci_high (0: none; default %(default)s)")
    p.add_argument("--ci", type=float, default=schema_default("metrics.ci"))
    p.add_argument("--outlier-multiple", type=float, default=schema_default("metrics.outlier_multiple"),
                   help="outlier_channels counts channels whose mean |x| exceeds this many times the median "
                        "channel's (default %(default)s)")
    p.add_argument("--entropy-wide", help="also write the authors' wide entropy CSV here")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--gpu", type=int, default=0, help="GPUs granted to this job (0: the CPU's C kernels)")
    p.add_argument("--expect", help="JSON list, one object per dump, of the attributes it must have "
                                    "(model, role, setting, seed, epoch): another run's file is refused")
    a = p.parse_args(argv)
    expect = json.loads(a.expect) if a.expect else None
    if expect is not None and len(expect) != len(a.dumps):
        p.error(f"--expect lists {len(expect)} dumps, {len(a.dumps)} are given")
    torch.set_num_threads(a.threads)
    device = granted_device(a.gpu)  # cuda: the torch path; cpu: the C kernels
    print(f"metric engine on {device}{visible_gpus()}", file=sys.stderr)
    layers, spectra = compute_tables(a.dumps, entropy_range=a.entropy_range, bins=a.bins, chunk_images=a.chunk_images,
                                     bootstrap=a.bootstrap, ci=a.ci, device=device, outlier_multiple=a.outlier_multiple,
                                     expect=expect)
    write_csv(layers, Path(a.out) / "layers.csv")
    write_csv(spectra, Path(a.out) / "spectra.csv")
    if a.entropy_wide:
        write_csv(entropy_wide(layers), a.entropy_wide)
    return 0


def _gather_main(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m distdyn.metrics gather")
    p.add_argument("--tables", nargs="+", required=True, help="CSV files with the same columns")
    p.add_argument("--out", required=True)
    p.add_argument("--expect", help="JSON list, one entry per table, of the rows it must hold: "
                                    '{"keys": [[column, [values]], ...], "per_group": n} (errors.check_complete)')
    a = p.parse_args(argv)
    expect = json.loads(a.expect) if a.expect else [None] * len(a.tables)
    if len(expect) != len(a.tables):
        p.error(f"--expect lists {len(expect)} tables, {len(a.tables)} are given")
    frames = []
    for path, want in zip(a.tables, expect):
        df = read_table(path)
        if frames and list(df.columns) != list(frames[0].columns):
            raise TableError(path, f"has the columns {', '.join(df.columns)}, {a.tables[0]} has "
                                   f"{', '.join(frames[0].columns)}; {remedy(path)}")
        if want is not None:
            check_complete(df, path, [want])
        frames.append(df)
    write_csv(pd.concat(frames, ignore_index=True), a.out)
    return 0


def _accuracy_main(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m distdyn.metrics accuracy")
    p.add_argument("--logs", nargs="+", required=True)
    p.add_argument("--names", nargs="+", required=True)
    p.add_argument("--seeds", nargs="+", type=int, required=True)
    p.add_argument("--roles", nargs="+", required=True)
    p.add_argument("--out", required=True, help="accuracy.csv")
    p.add_argument("--summary", required=True, help="accuracy_summary.csv")
    p.add_argument("--curves", required=True, help="curves.csv (every epoch of every run)")
    p.add_argument("--finals", nargs="+", default=[], help="each run's final.pt, in the order of --logs")
    p.add_argument("--correct", help="with --finals: the students' per-image correctness (.npz)")
    a = p.parse_args(argv)
    if bool(a.finals) != bool(a.correct) or a.finals and len(a.finals) != len(a.logs):
        p.error("--finals (one per --logs) and --correct go together")
    acc = accuracy_table(a.logs, a.names, a.seeds, a.roles)
    write_csv(acc, a.out)
    write_csv(accuracy_summary(acc), a.summary)
    write_csv(training_curves(a.logs, a.names, a.seeds, a.roles), a.curves)
    if a.correct:
        write_npz(val_correct(a.finals, a.names, a.seeds, a.roles), a.correct)
    return 0


@cli
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"gather": _gather_main, "accuracy": _accuracy_main}
    if argv and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    return _compute_main(argv)


if __name__ == "__main__":
    sys.exit(main())
