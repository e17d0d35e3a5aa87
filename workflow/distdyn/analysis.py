"""Follow-up analyses of activation dumps: CKA, phases of the entropy profile, encoding width.

    python -m distdyn.analysis cka --student S.h5 [S2.h5 ...] --teacher T.h5 --out cka.csv
    python -m distdyn.analysis phases --layers layers.csv --out phases.csv
    python -m distdyn.analysis encoding DUMP.h5 [DUMP.h5 ...] --out encoding.csv [--permutations 100]

Definitions:
  cka          linear CKA (Kornblith et al. 2019) between every student and teacher layer; the
               examples are all tokens of all probe images when both dumps have the same number
               of tokens, else one mean-pooled token per image
  phases       where the compress-then-expand profile (paper.md C1) has its minimum, and whether
               it is u_shaped: the minimum interior and its CI below both end layers' CIs
  encoding     paper.md 2.5 / C13 on one layer: per-image SVD dims and dataset-PCA dims (99th
               percentile over images), SEP threshold dims and their shift under random channel
               permutations

Dumps are read one layer and `chunk_images` images at a time, never the whole /blocks.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .dumps import DumpError, check_identity, non_finite, open_dump
from .errors import cli, read_table
from .io import chunks, write_csv
from .schema import schema_default
from .tables import CKA_COLUMNS, ENCODING_COLUMNS, LAYER_COLUMNS, bootstrap_ci, phases

ENERGY_TAUS = (0.80, 0.90, 0.95, 0.99)  # SVD / PCA energy fractions (the follow-up's table)
SEP_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9)  # SEP curve levels, as fractions of 100 %


def _read(blocks, layer: int, b0: int, b1: int) -> torch.Tensor:
    """One layer's images b0:b1 as float64 [b, N, C] (float16 dumps widen exactly)."""
    return torch.from_numpy(np.asarray(blocks[layer, b0:b1], dtype=np.float64))


# ---------------------------------------------------------------- CKA


def _cka_from_moments(xy: torch.Tensor, xx: torch.Tensor, yy: torch.Tensor) -> float:
    """||X_c^T Y_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F) from centred cross-moments; NaN if a side is constant."""
    den = torch.linalg.matrix_norm(xx) * torch.linalg.matrix_norm(yy)
    return float(xy.square().sum() / den) if den > 0 else float("nan")


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between x [n, d1] and y [n, d2], rows being the same examples (float64)."""
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"need [n, d1] and [n, d2] with the same n, got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x - x.mean(0), y - y.mean(0)
    # The feature-space form: d x d products, cheap when n (tokens) >> d (channels).
    return _cka_from_moments(x.T @ y, x.T @ x, y.T @ y)


def _examples(x: torch.Tensor, pool: bool) -> torch.Tensor:
    """[b, N, C] -> [n, C]: every token as an example, or one mean-pooled token per image."""
    return x.mean(1) if pool else x.reshape(-1, x.shape[-1])


def _check_same_probe(fs, ft, student_dump, teacher_dump) -> None:
    ps, pt = np.asarray(fs["probe_indices"]), np.asarray(ft["probe_indices"])
    if ps.shape != pt.shape or not np.array_equal(ps, pt):
        raise DumpError(student_dump, f"it and {teacher_dump} have different probe_indices; "
                                      "CKA needs the same images in the same order")


def cka_matrix(student_dump: str | Path, teacher_dump: str | Path, chunk_images: int = 64,
               expect: tuple[dict | None, dict | None] = (None, None)) -> np.ndarray:
    """Linear CKA between every student and teacher layer, streamed: [L_s, L_t].

    Accumulates X^T X, Y^T Y, X^T Y and column sums in float64 over image chunks, then
    centres algebraically (X_c^T Y_c = X^T Y - n mu_x mu_y^T), so no chunk needs the
    global means. Memory: one chunk of every student layer (in its stored dtype) plus the
    [L_s, L_t, C_s, C_t] cross-moments (170 MB for 12 x 24 layers of 192 x 384 channels).
    `expect`: the identifying attributes the student and the teacher dump must have (DumpError otherwise).
    """
    with open_dump(student_dump) as fs, open_dump(teacher_dump) as ft:
        check_identity(fs, student_dump, expect[0])
        check_identity(ft, teacher_dump, expect[1])
        _check_same_probe(fs, ft, student_dump, teacher_dump)
        xs_all, yt_all = fs["blocks"], ft["blocks"]
        Ls, B, Ns, Cs = xs_all.shape
        Lt, _, Nt, Ct = yt_all.shape
        pool = Ns != Nt  # token grids differ: only the images correspond, not the tokens
        f64 = dict(dtype=torch.float64)
        xx, sx = torch.zeros(Ls, Cs, Cs, **f64), torch.zeros(Ls, Cs, **f64)
        yy, sy = torch.zeros(Lt, Ct, Ct, **f64), torch.zeros(Lt, Ct, **f64)
        xy = torch.zeros(Ls, Lt, Cs, Ct, **f64)
        n = 0
        for b0, b1 in chunks(B, max(1, chunk_images)):
            # The student chunk is read once and kept in its stored dtype (pooled ones are
            # small); widening it again per teacher layer costs ~1/C_t of the product.
            xs = [torch.from_numpy(np.asarray(xs_all[i, b0:b1])) for i in range(Ls)]
            xs = [_examples(x.double(), True) if pool else x.reshape(-1, Cs) for x in xs]
            for i in range(Ls):
                x = xs[i].double()
                xx[i] += x.T @ x
                sx[i] += x.sum(0)
            for j in range(Lt):
                y = _examples(_read(yt_all, j, b0, b1), pool)
                yy[j] += y.T @ y
                sy[j] += y.sum(0)
                for i in range(Ls):
                    xy[i, j] += xs[i].double().T @ y
            n += y.shape[0]
    for sums, path in ((sx, student_dump), (sy, teacher_dump)):  # NaN and Inf propagate into the column sums
        for layer in torch.nonzero(~torch.isfinite(sums).all(1)).flatten().tolist():
            raise non_finite(path, layer)
    xx -= sx.unsqueeze(2) * sx.unsqueeze(1) / n
    yy -= sy.unsqueeze(2) * sy.unsqueeze(1) / n
    out = np.zeros((Ls, Lt))
    for i in range(Ls):
        for j in range(Lt):
            out[i, j] = _cka_from_moments(xy[i, j] - torch.outer(sx[i], sy[j]) / n, xx[i], yy[j])
    return out


def cka_rows(student_dump: str | Path, teacher_dump: str | Path, chunk_images: int = 64,
             expect: tuple[dict | None, dict | None] = (None, None)) -> pd.DataFrame:
    """Tidy CKA table, one row per (student layer, teacher layer), layers 1-based, ids from the student."""
    m = cka_matrix(student_dump, teacher_dump, chunk_images, expect)
    with open_dump(student_dump) as f:
        meta = check_identity(f, student_dump, expect[0])
    Ls, Lt = m.shape
    return pd.DataFrame({**meta, "student_layer": np.repeat(np.arange(1, Ls + 1), Lt),
                         "teacher_layer": np.tile(np.arange(1, Lt + 1), Ls), "cka": m.ravel()})[CKA_COLUMNS]


# ---------------------------------------------------------------- encoding width (paper.md 2.5)


def first_reaching(cum: torch.Tensor, levels) -> torch.Tensor:
    """1-based first index where a non-decreasing `cum` [..., K] reaches each level: [..., T].

    searchsorted (left) + 1, as the follow-up code does; capped at K so rounding just
    below the top level cannot run past the end.
    """
    cum = cum.contiguous()
    lv = torch.as_tensor(levels, dtype=cum.dtype).expand(*cum.shape[:-1], -1).contiguous()
    return (torch.searchsorted(cum, lv) + 1).clamp_(max=cum.shape[-1])


def _dims_or_nan(cum: torch.Tensor, total: torch.Tensor, levels) -> torch.Tensor:
    d = first_reaching(cum, levels).double()
    d[total <= 0] = float("nan")  # an all-zero image needs no dimensions; leave it out of the percentile
    return d


def svd_dims(x: torch.Tensor, taus=ENERGY_TAUS) -> torch.Tensor:
    """Per image [b, N, C] (uncentred): dims of its own SVD needed for each energy fraction, [b, T]."""
    s2 = torch.linalg.svdvals(x.double()).square()
    total = s2.sum(-1, keepdim=True)
    return _dims_or_nan(s2.cumsum(-1) / total, total.squeeze(-1), taus)


def pca_basis(second_moment: torch.Tensor) -> torch.Tensor:
    """Eigenvectors of a symmetric [C, C] moment as columns, by descending eigenvalue."""
    _, vecs = torch.linalg.eigh(second_moment.double())
    return vecs.flip(-1)


def pca_dims(x: torch.Tensor, basis: torch.Tensor, taus=ENERGY_TAUS) -> torch.Tensor:
    """Per image [b, N, C]: leading basis vectors needed to capture each fraction of ||X||_F^2, [b, T]."""
    x = x.double()
    captured = (x @ basis).square().sum(1)  # [b, C]: ||X v_k||^2 for each basis vector
    total = x.square().sum((1, 2))
    return _dims_or_nan(captured.cumsum(-1) / total.unsqueeze(-1), total, taus)


def sep_moment(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum over tokens of x x^T / ||x||^2 ([D, D], float64) and the number of tokens; all-zero tokens are skipped.

    A token's bin fraction e_k / sum e = |f_k . x|^2 / (D ||x||^2) (Parseval) is linear in
    x x^T / ||x||^2, so the mean SEP curve, under any channel permutation, follows from
    this one moment: permutations cost O(D^2) each instead of a pass over the data.
    """
    t = x.double().reshape(-1, x.shape[-1])
    norm = t.norm(dim=-1)
    t = t[norm > 0] / norm[norm > 0].unsqueeze(-1)
    return t.T @ t, t.shape[0]


def sep_mean_curve(moment: torch.Tensor, perm=None) -> torch.Tensor:
    """Mean SEP curve (percent, [D]) from a mean normalised moment G; `perm` permutes channels, x'[c] = x[perm[c]]."""
    D = moment.shape[0]
    idx = torch.arange(D) if perm is None else torch.as_tensor(perm, dtype=torch.long)
    j = torch.arange(D)
    # diag(F G F^H)_k = sum_m r_m w^{km} with r_m = sum_j G'[(j+m) % D, j], G' = G[perm][:, perm].
    r = moment[idx[(j + j.unsqueeze(1)) % D], idx[j]].sum(1)
    frac = torch.fft.fft(r).real / D
    return 100 * frac.cumsum(0)


def sep_dims(moment: torch.Tensor, levels=SEP_LEVELS, perm=None) -> np.ndarray:
    """SEP threshold dims d (1-based) where the mean curve first reaches each level (fractions): [T]."""
    curve = sep_mean_curve(moment, perm)
    return first_reaching(curve, 100 * torch.as_tensor(levels, dtype=torch.float64)).numpy()


def sep_permutation_shifts(moment: torch.Tensor, levels=SEP_LEVELS, permutations: int = 100,
                           seed: int = 0) -> np.ndarray:
    """d/D under each of `permutations` seeded random channel permutations minus the original d/D: [P, T]."""
    D = moment.shape[0]
    base = sep_dims(moment, levels) / D
    rng = np.random.default_rng(seed)
    shifts = [sep_dims(moment, levels, rng.permutation(D)) / D - base for _ in range(permutations)]
    return np.array(shifts).reshape(permutations, len(levels))


def encoding_width(dump_path: str | Path, layer: int = -1, *, permutations: int = 100, seed: int = 0,
                   chunk_images: int = 64, expect: dict | None = None) -> dict:
    """Per-image SVD/PCA dims, the SEP moment and permutation shifts for one layer (0-based; negative from the end).

    Two passes over the layer's images: the first gathers SVD dims, the uncentred second
    moment M and the SEP moment; the second measures each image against M's eigenbasis.
    """
    with open_dump(dump_path) as f:
        meta = check_identity(f, dump_path, expect)
        blocks = f["blocks"]
        L, B, N, C = blocks.shape
        layer = range(L)[layer]  # IndexError for a layer the dump lacks
        chunk_images = max(1, chunk_images)
        second = torch.zeros(C, C, dtype=torch.float64)
        sep = torch.zeros(C, C, dtype=torch.float64)
        tokens, svd = 0, []
        for b0, b1 in chunks(B, chunk_images):
            x = _read(blocks, layer, b0, b1)
            if not torch.isfinite(x).all():
                raise non_finite(dump_path, layer)
            svd.append(svd_dims(x))
            t = x.reshape(-1, C)
            second += t.T @ t
            m, k = sep_moment(x)
            sep += m
            tokens += k
        basis = pca_basis(second / (B * N))
        pca = [pca_dims(_read(blocks, layer, b0, b1), basis) for b0, b1 in chunks(B, chunk_images)]
    sep = sep / max(tokens, 1)
    return {"meta": meta, "layer": layer + 1, "channels": C, "svd_dims": torch.cat(svd).numpy(),
            "pca_dims": torch.cat(pca).numpy(), "sep_moment": sep, "sep_dims": sep_dims(sep),
            "sep_shifts": sep_permutation_shifts(sep, SEP_LEVELS, permutations, seed)}


def encoding_rows(dump_path: str | Path, layer: int = -1, permutations: int = 100, seed: int = 0, *,
                  percentile: float = 99.0, resamples: int = 1000, level: float = 0.95,
                  chunk_images: int = 64, expect: dict | None = None) -> pd.DataFrame:
    """Tidy encoding-width table for one layer of one dump (layer in the output is 1-based).

    svd_dim / pca_dim: the `percentile` over images of d_tau, by np.nanpercentile's default
    linear interpolation (so it can fall between integers); all-zero images are left out.
    sep_perm_shift: mean over permutations of the change in d/D, with a percentile
    bootstrap CI of that mean over the permutations (seeded).
    """
    w = encoding_width(dump_path, layer, permutations=permutations, seed=seed, chunk_images=chunk_images,
                       expect=expect)
    C, nan = w["channels"], np.nan
    rows = []
    for name in ("svd_dims", "pca_dims"):
        for tau, d in zip(ENERGY_TAUS, np.nanpercentile(w[name], percentile, axis=0)):
            rows.append((name[:-1], tau, float(d), nan, nan))
    shifts = w["sep_shifts"]
    if len(shifts):
        mean = shifts.mean(0)
        low, high = bootstrap_ci(shifts.T, resamples, level, seed)
    else:
        mean = low = high = np.full(len(SEP_LEVELS), nan)
    for i, lv in enumerate(SEP_LEVELS):
        d = float(w["sep_dims"][i])
        rows += [("sep_dim", lv, d, nan, nan), ("sep_fraction", lv, d / C, nan, nan),
                 ("sep_perm_shift", lv, float(mean[i]), float(low[i]), float(high[i]))]
    df = pd.DataFrame(rows, columns=["measure", "threshold", "value", "ci_low", "ci_high"])
    df = df.assign(**w["meta"], layer=w["layer"])
    return df[ENCODING_COLUMNS]


# ---------------------------------------------------------------- CLI


def _cka_main(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m distdyn.analysis cka")
    p.add_argument("--student", nargs="+", required=True, help="student dumps (HDF5)")
    p.add_argument("--teacher", required=True, help="teacher dump (HDF5), same probe set")
    p.add_argument("--out", required=True, help="cka.csv")
    p.add_argument("--chunk-images", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--expect", help="JSON list of the attributes each student dump, then the teacher dump, must "
                                    "have (model, role, setting, seed, epoch)")
    a = p.parse_args(argv)
    expect = _expect(p, a.expect, len(a.student) + 1)
    torch.set_num_threads(a.threads)
    write_csv(pd.concat([cka_rows(s, a.teacher, a.chunk_images, (want, expect[-1]))
                         for s, want in zip(a.student, expect)], ignore_index=True), a.out)
    return 0


def _expect(parser, text: str | None, n: int) -> list:
    """--expect: a JSON list of n attribute dicts (or n Nones without it)."""
    if not text:
        return [None] * n
    expect = json.loads(text)
    if len(expect) != n:
        parser.error(f"--expect lists {len(expect)} dumps, {n} are given")
    return expect


def _phases_main(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m distdyn.analysis phases")
    p.add_argument("--layers", required=True, help="layers.csv from distdyn.metrics")
    p.add_argument("--out", required=True, help="phases.csv")
    p.add_argument("--metric", default="entropy")
    a = p.parse_args(argv)
    write_csv(phases(read_table(a.layers, LAYER_COLUMNS), a.metric), a.out)
    return 0


def _encoding_main(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m distdyn.analysis encoding")
    p.add_argument("dumps", nargs="+", help="activation dumps (HDF5)")
    p.add_argument("--out", required=True, help="encoding.csv")
    p.add_argument("--layer", type=int, default=-1, help="0-based block index, negative from the end (default: last)")
    p.add_argument("--permutations", type=int, default=schema_default("analysis.permutations"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for the permutation shift")
    p.add_argument("--chunk-images", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--expect", help="JSON list, one object per dump, of the attributes it must have")
    a = p.parse_args(argv)
    expect = _expect(p, a.expect, len(a.dumps))
    torch.set_num_threads(a.threads)
    frames = [encoding_rows(d, a.layer, a.permutations, a.seed, resamples=a.resamples, chunk_images=a.chunk_images,
                            expect=want) for d, want in zip(a.dumps, expect)]
    write_csv(pd.concat(frames, ignore_index=True), a.out)
    return 0


COMMANDS = {"cka": _cka_main, "phases": _phases_main, "encoding": _encoding_main}


@cli
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
