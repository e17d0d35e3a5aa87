"""Fused C kernels for the metric engine, compiled on first use and cached.

The source (`_kernels.c`) is built with the system C compiler (`$CC`, else `cc`) into
`$DISTDYN_CACHE` (default `$XDG_CACHE_HOME/distdyn`, else `~/.cache/distdyn`), under a
name holding the source's hash, written to a temporary file and renamed, so concurrent
jobs never see half a library. Without a compiler, or with `DISTDYN_KERNELS=torch`, the
metric engine uses its torch path, which gives the same numbers more slowly.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

FINGERPRINT_FILES = ("_kernels.c",)  # non-Python files this module loads: part of its code fingerprint
SOURCE = Path(__file__).with_name(FINGERPRINT_FILES[0])
FLAGS = ["-O3", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math"]  # IEEE results kept; lets loops vectorise


def cache_dir() -> Path:
    if os.environ.get("DISTDYN_CACHE"):
        return Path(os.environ["DISTDYN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "distdyn"


def build(compiler: str | None = None) -> Path:
    """Compile the kernels (if not cached) and return the shared library's path."""
    cc = compiler or os.environ.get("CC") or "cc"
    src = SOURCE.read_bytes()
    key = hashlib.sha256(src + " ".join([cc, *FLAGS, platform.machine(), *platform.libc_ver()]).encode()).hexdigest()[:16]
    lib = cache_dir() / f"_kernels-{key}.so"
    if lib.is_file():
        return lib
    if shutil.which(cc) is None:
        raise OSError(f"no C compiler ({cc!r} not found)")
    lib.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{lib.name}.", suffix=".tmp", dir=lib.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cc, *FLAGS, "-o", tmp, str(SOURCE), "-lm"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise OSError(f"{cc} failed on {SOURCE}: {proc.stderr.strip()}")
        os.replace(tmp, lib)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return lib


@functools.lru_cache(maxsize=1)
def load() -> ctypes.CDLL | None:
    """The compiled kernels, or None (torch path) when disabled or no compiler is available."""
    if os.environ.get("DISTDYN_KERNELS", "c") == "torch":
        return None
    try:
        lib = ctypes.CDLL(str(build()))
    except OSError as e:
        warnings.warn(f"distdyn: C kernels unavailable ({e}); metrics use the slower torch path", stacklevel=2)
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.token_metrics_f32.argtypes = [ptr, i64, i64, i64, i64, ptr, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr]
    return lib


def _split(n: int, parts: int) -> list[tuple[int, int]]:
    step = -(-n // parts)
    return [(a, min(a + step, n)) for a in range(0, n, step)]


@functools.lru_cache(maxsize=4)
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="distdyn-kernel")


def _parallel(fn, n: int) -> None:
    """Run fn(start, stop) over [0, n) in torch.get_num_threads() threads (ctypes drops the GIL)."""
    threads = max(1, min(torch.get_num_threads(), n))
    if threads == 1:
        codes = [fn(0, n)]
    else:
        codes = list(_pool(threads).map(lambda r: fn(*r), _split(n, threads)))
    if -2 in codes:
        raise ValueError("distdyn kernel: tokens need at least one channel and the histogram at least one bin")
    if any(codes):
        raise MemoryError("distdyn kernel could not allocate its buffers")


class TokenMetrics(NamedTuple):
    spectrum: np.ndarray  # [images, C//2 + 1]: sum over positions of |FFT over channels| (not divided by C)
    entropy: np.ndarray  # [images, N]: each token's histogram entropy on `edges`
    abs_sum: np.ndarray  # [images, N]: each token's sum |x|
    entropy2: np.ndarray | None  # [images, N]: the entropy on `edges2`, None without them
    channel_abs: np.ndarray  # [images, C]: sum over positions of |x|, per channel


def token_metrics(lib: ctypes.CDLL, x: np.ndarray, edges: np.ndarray, nlog2n: np.ndarray,
                  edges2: np.ndarray | None = None, bounds: tuple[float, float] | None = None) -> TokenMetrics:
    """One pass over a float32 [images, N, C] array: the sum over positions of |FFT over channels|
    in bins 0..C//2, each token's histogram entropy (on `edges`, and on `edges2` if given, with as
    many bins) and sum |x|, and each image's sum over positions of |x| per channel.

    `bounds` (lo, hi): the least and greatest value in x, e.g. the layer's recorded range. Only a
    hint: where it spans few bins of a histogram (a range much wider than this layer's values), the
    kernel counts that histogram by comparisons instead of scattering; the numbers do not change,
    and a token with values outside the bounds is counted the usual way."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    edges = np.ascontiguousarray(edges, dtype=np.float32)
    nlog2n = np.ascontiguousarray(nlog2n, dtype=np.float64)
    images, N, C = x.shape
    spec, h, a = np.empty((images, C // 2 + 1)), np.empty((images, N)), np.empty((images, N))
    chan = np.empty((images, C))
    h2, e2 = None, None
    if edges2 is not None:
        e2 = np.ascontiguousarray(edges2, dtype=np.float32)
        if len(e2) != len(edges):
            raise ValueError(f"edges2 has {len(e2) - 1} bins, edges {len(edges) - 1}")
        h2 = np.empty((images, N))
    hint = None if bounds is None else np.asarray(bounds, dtype=np.float32)
    args = (N, C, edges.ctypes.data, len(edges) - 1, nlog2n.ctypes.data, h.ctypes.data, a.ctypes.data, spec.ctypes.data,
            None if e2 is None else e2.ctypes.data, None if h2 is None else h2.ctypes.data, chan.ctypes.data,
            None if hint is None else hint.ctypes.data)
    _parallel(lambda i0, i1: lib.token_metrics_f32(x.ctypes.data, i0, i1, *args), images)
    return TokenMetrics(spec, h, a, h2, chan)


def token_entropy(lib: ctypes.CDLL, x: np.ndarray, edges: np.ndarray, nlog2n: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per-token histogram entropy and sum |x| of a float32 [tokens, C] array (token_metrics on one image)."""
    _, h, a, _, _ = token_metrics(lib, np.asarray(x)[None], edges, nlog2n)
    return h[0], a[0]


if __name__ == "__main__":  # python -m distdyn.kernels: build now and say where
    print(build())
    sys.exit(0)
