"""The metric engine's per-token work on the CPU: a small C kernel and a library FFT.

`_kernels.c` computes each token's histogram entropies and |x| sums (and the per-channel |x|
sums) in one pass; the channel spectrum comes from scipy.fft's float32 rfft on the same tokens.
Both run on `torch.get_num_threads()` threads, each on its own images (ctypes and scipy.fft
release the GIL). Every size and buffer is checked here before C sees it.

Built once: `python -m distdyn.kernels` (the workflow's local rule build_kernels, before any
metric job) compiles the source with the system C compiler (`$CC`, else `cc`) into
`$DISTDYN_CACHE` (default `$XDG_CACHE_HOME/distdyn`, else `~/.cache/distdyn`) under a name
holding the hash of the source, compiler, flags and platform. A library at that name is never
rebuilt or replaced (a new source gets a new name); of builders that race, the first to link
its file into place wins and the others discard theirs. `DISTDYN_KERNELS` chooses: `c` (the
default) builds on first use if needed, `torch` uses the torch path, anything else is the path
of a library built before, loaded as it is (the workflow's metric jobs, which never compile).
Without a compiler, or with `DISTDYN_KERNELS=torch`, the metric engine uses its torch path,
which gives the same numbers more slowly.
"""
from __future__ import annotations

import argparse
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
import scipy.fft
import torch

from .io import write_text

FINGERPRINT_FILES = ("_kernels.c",)  # non-Python files this module loads: part of its code fingerprint
SOURCE = Path(__file__).with_name(FINGERPRINT_FILES[0])
FLAGS = ["-O3", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math"]  # IEEE results kept; lets loops vectorise
ABI = 2  # distdyn_kernels_abi() of a library built from this source
FFT_BLOCK = 1 << 18  # values per rfft call: its spectrum stays in cache until it is summed
INT32_MAX = 2**31 - 1  # the kernel counts channels and histogram slots in int32


def cache_dir() -> Path:
    if os.environ.get("DISTDYN_CACHE"):
        return Path(os.environ["DISTDYN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "distdyn"


def library_path(compiler: str | None = None) -> Path:
    """Where the library built from the present source with `compiler` lives (built or not)."""
    cc = compiler or os.environ.get("CC") or "cc"
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join([cc, *FLAGS, platform.machine(),
                                                         *platform.libc_ver()]).encode())
    return cache_dir() / f"_kernels-{key.hexdigest()[:16]}.so"


def build(compiler: str | None = None) -> Path:
    """Compile the kernels unless a library of this source is there, and return its path."""
    cc = compiler or os.environ.get("CC") or "cc"
    lib = library_path(cc)
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
        os.chmod(tmp, 0o755)  # mkstemp's 0600 would keep other users' jobs from loading a shared library
        _publish(Path(tmp), lib)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return lib


def _publish(tmp: Path, lib: Path) -> None:
    """Give the finished library `tmp` its name `lib`, unless another builder got there first: a
    hard link never replaces a file (os.replace would; what is at a hash's name must never change
    under the processes using it), and the loser's `tmp` is discarded. Where the file system has no
    hard links, rename if still absent."""
    try:
        os.link(tmp, lib)
    except FileExistsError:
        pass
    except OSError:
        if not lib.exists():
            os.rename(tmp, lib)
    finally:
        tmp.unlink(missing_ok=True)


def _open(path: Path) -> ctypes.CDLL:
    """Load a built library, after checking that it is one of this source's interface."""
    lib = ctypes.CDLL(str(Path(path).resolve()))
    try:
        abi = lib.distdyn_kernels_abi
    except AttributeError:
        raise OSError(f"{path} is not a distdyn kernel library (no distdyn_kernels_abi; an older build?)") from None
    abi.restype, abi.argtypes = ctypes.c_int, []
    if abi() != ABI:
        raise OSError(f"{path} was built from another version of _kernels.c (interface {abi()}, not {ABI})")
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.token_metrics_f32.restype = ctypes.c_int
    lib.token_metrics_f32.argtypes = [ptr, i64, i64, i64, i64, ptr, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr]
    return lib


def _chosen() -> Path | None:
    """The library DISTDYN_KERNELS asks for (building it if `c`), or None for the torch path."""
    mode = os.environ.get("DISTDYN_KERNELS", "c")
    if mode == "torch":
        return None
    if mode == "c":
        return build()
    if not Path(mode).is_file():
        raise OSError(f"DISTDYN_KERNELS={mode}: no such library (build it with `python -m distdyn.kernels`)")
    return Path(mode)


@functools.lru_cache(maxsize=1)
def load() -> ctypes.CDLL | None:
    """The compiled kernels, or None (torch path) when disabled or no library can be built or loaded."""
    try:
        path = _chosen()
        return None if path is None else _open(path)
    except OSError as e:
        warnings.warn(f"distdyn: C kernels unavailable ({e}); metrics use the slower torch path", stacklevel=2)
        return None


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
        raise ValueError("distdyn kernel refused its sizes (channels, positions and bins must be at least 1)")
    if any(codes):
        raise MemoryError("distdyn kernel could not allocate its buffers")


def _vector(name: str, values, dtype, length: int | None = None, at_least: int = 0) -> np.ndarray:
    """A contiguous 1-D `dtype` copy (or view) of `values`, of exactly `length` or at least `at_least` values."""
    a = np.ascontiguousarray(values, dtype=dtype)
    if a.ndim != 1:
        raise ValueError(f"distdyn kernel: {name} must be one-dimensional, not of shape {a.shape}")
    if length is not None and len(a) != length:
        raise ValueError(f"distdyn kernel: {name} has {len(a)} values, the kernel reads {length}")
    if len(a) < at_least:
        raise ValueError(f"distdyn kernel: {name} has {len(a)} values, needs at least {at_least}")
    return a


def _edges(name: str, values) -> np.ndarray:
    e = _vector(name, values, np.float32)
    if len(e) < 2:
        raise ValueError(f"distdyn kernel: the histogram needs at least one bin ({name} has {len(e)} values)")
    if len(e) - 1 > INT32_MAX:
        raise ValueError(f"distdyn kernel: {len(e) - 1} bins, at most {INT32_MAX}")
    if not np.isfinite(e).all() or not (np.diff(e) >= 0).all() or not e[0] < e[-1]:
        raise ValueError(f"distdyn kernel: {name} must be finite, non-decreasing and span a range, "
                         f"not {e[0]} .. {e[-1]}")
    return e


def _address(name: str, a: np.ndarray, dtype, shape: tuple[int, ...]) -> int:
    """The address of a buffer C reads or writes, after checking that it is a contiguous `dtype`
    array of exactly `shape` (writable where C writes it)."""
    if a.dtype != dtype or a.shape != shape or not a.flags.c_contiguous:
        raise ValueError(f"distdyn kernel: {name} must be a contiguous {np.dtype(dtype)} array of shape {shape}, "
                         f"not {a.dtype} {a.shape}{'' if a.flags.c_contiguous else ' (strided)'}")
    return a.ctypes.data


class TokenMetrics(NamedTuple):
    spectrum: np.ndarray  # [images, C//2 + 1]: sum over positions of |FFT over channels| (not divided by C)
    entropy: np.ndarray  # [images, N]: each token's histogram entropy on `edges`
    abs_sum: np.ndarray  # [images, N]: each token's sum |x|
    entropy2: np.ndarray | None  # [images, N]: the entropy on `edges2`, None without them
    channel_abs: np.ndarray  # [images, C]: sum over positions of |x|, per channel


def token_metrics(lib: ctypes.CDLL, x: np.ndarray, edges: np.ndarray, nlog2n: np.ndarray,
                  edges2: np.ndarray | None = None, bounds: tuple[float, float] | None = None) -> TokenMetrics:
    """One pass over a float32 [images, N, C] array: the sum over positions of |FFT over channels|
    in bins 0..C//2 (scipy.fft's float32 rfft, |.| summed in float64), each token's histogram
    entropy (on `edges`, and on `edges2` if given, with as many bins) and sum |x|, and each image's
    sum over positions of |x| per channel. `nlog2n`: k log2 k for k = 0..C.

    `bounds` (lo, hi): the least and greatest value in x, e.g. the layer's recorded range. Only a
    hint: where it spans few bins of a histogram (a range much wider than this layer's values), the
    kernel counts that histogram by comparisons instead of scattering; the numbers do not change,
    and a token with values outside the bounds is counted the usual way.

    Raises ValueError, before calling C, for any shape the kernel cannot take."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"distdyn kernel: tokens must be [images, N, C], not of shape {x.shape}")
    images, N, C = x.shape
    if C < 1:
        raise ValueError(f"distdyn kernel: tokens need at least one channel (shape {x.shape})")
    if images < 1 or N < 1:
        raise ValueError(f"distdyn kernel: no tokens (shape {x.shape}); needs at least one image and position")
    if C > INT32_MAX:
        raise ValueError(f"distdyn kernel: {C} channels, at most {INT32_MAX}")
    edges = _edges("edges", edges)
    bins = len(edges) - 1
    nlog2n = _vector("nlog2n", nlog2n, np.float64, length=C + 1)
    e2 = None if edges2 is None else _edges("edges2", edges2)
    if e2 is not None and len(e2) != len(edges):
        raise ValueError(f"edges2 has {len(e2) - 1} bins, edges {bins}")
    hint = None if bounds is None else _vector("bounds", bounds, np.float32, length=2)
    spec, h, a = np.empty((images, C // 2 + 1)), np.empty((images, N)), np.empty((images, N))
    chan = np.empty((images, C))
    h2 = None if e2 is None else np.empty((images, N))
    f32, f64 = np.float32, np.float64
    px = _address("x", x, f32, (images, N, C))
    args = (N, C, _address("edges", edges, f32, (bins + 1,)), bins, _address("nlog2n", nlog2n, f64, (C + 1,)),
            _address("entropy", h, f64, (images, N)), _address("abs_sum", a, f64, (images, N)),
            None if e2 is None else _address("edges2", e2, f32, (bins + 1,)),
            None if h2 is None else _address("entropy2", h2, f64, (images, N)),
            _address("channel_abs", chan, f64, (images, C)),
            None if hint is None else _address("bounds", hint, f32, (2,)))
    _address("spectrum", spec, f64, (images, C // 2 + 1))
    step = max(1, FFT_BLOCK // (N * C))  # images per rfft call

    def work(i0: int, i1: int) -> int:
        code = lib.token_metrics_f32(px, i0, i1, *args)
        if code != 0:
            return code
        for b0 in range(i0, i1, step):
            b1 = min(b0 + step, i1)
            np.abs(scipy.fft.rfft(x[b0:b1], axis=-1, workers=1)).sum(1, dtype=np.float64, out=spec[b0:b1])
        return 0

    _parallel(work, images)
    return TokenMetrics(spec, h, a, h2, chan)


def token_entropy(lib: ctypes.CDLL, x: np.ndarray, edges: np.ndarray, nlog2n: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per-token histogram entropy and sum |x| of a float32 [tokens, C] array (token_metrics on one image)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"distdyn kernel: tokens must be [tokens, C], not of shape {x.shape}")
    _, h, a, _, _ = token_metrics(lib, x[None], edges, nlog2n)
    return h[0], a[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distdyn.kernels",
                                description="Build the metric kernels now (unless built) and print what "
                                            "DISTDYN_KERNELS should be: the library's path, or `torch`.")
    p.add_argument("--out", help="also write it to this file (the workflow's build_kernels rule)")
    a = p.parse_args(argv)
    try:
        path = _chosen()
        choice = "torch" if path is None else str(path)
        if path is not None:
            _open(path)  # a library the metric jobs could not load is found here, once
    except OSError as e:
        print(f"distdyn: C kernels unavailable ({e}); metrics use the slower torch path", file=sys.stderr)
        choice = "torch"
    if a.out:
        write_text(choice + "\n", a.out)
    print(choice)
    return 0


if __name__ == "__main__":  # python -m distdyn.kernels [--out FILE]: build now and say where
    sys.exit(main())
