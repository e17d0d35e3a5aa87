"""Benchmark distdyn's streaming metric engine against the authors' straightforward analysis.

    python benchmarks/metrics.py                         # L=12 B=256 N=64 C=192 float32 (the target shape)
    python benchmarks/metrics.py --L 24 --B 2000 --N 196 --C 384 --dtype float16 --skip-reference
                                                         # the paper's teacher on 2,000 images (~7 GB)

Builds a synthetic dump in distdyn's layout, then times, each in a fresh process:
  read       reading every chunk of /blocks once (the floor for any engine),
  engine     distdyn.metrics.compute_dump (peak RSS reported), with the value range the dump
             recorded when written, and again with a first streaming pass for it (older dumps),
  reference  the authors' analysis: the whole array in memory, numpy FFT over channels, and one
             np.histogram per (layer, image, position) with the file-wide range.
It checks that engine and reference agree to 1e-5 relative and prints the times, the ratios and the
engine's peak RSS. Read and engine runs alternate `--repeat` times and the best of each is printed
(a shared 2-core VM varies by ~30 % between runs); the reference runs once. The C kernels are
compiled before anything is timed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))


def build_dump(path: Path, L: int, B: int, N: int, C: int, dtype: str, compression: str, chunk: int = 64) -> None:
    """Activation-like data: per-layer scale, heavy tails, a few outlier channels in late layers."""
    from distdyn.dumps import ValueRange

    rng = np.random.default_rng(0)
    side = int(np.sqrt(N))
    value_range = ValueRange(L)
    with h5py.File(path, "w") as f:
        d = f.create_dataset("blocks", shape=(L, B, N, C), dtype=dtype, chunks=(1, min(chunk, B), N, C),
                             compression=None if compression == "none" else compression)
        for layer in range(L):
            scale = 0.5 + 2.0 * (layer / max(L - 1, 1) - 0.5) ** 2
            for b0 in range(0, B, chunk):
                b1 = min(b0 + chunk, B)
                z = rng.standard_normal(size=(b1 - b0, N, C), dtype=np.float32)
                x = (z + 0.2 * z ** 3) * scale  # heavy-tailed, and quick to draw for a 7 GB dump
                if layer >= L - 2:
                    x[..., :2] *= 20.0  # "massive activations" in a couple of channels
                stored = x.astype(dtype)
                d[layer, b0:b1] = stored
                value_range.update(stored, layer)  # as distdyn's writer records it
        value_range.write(f)
        f["labels"] = np.arange(B) % 10
        f["probe_indices"] = np.arange(B)
        f["logits"] = np.zeros((B, 10), np.float32)
        f["grad_magnitude"] = rng.random((L, B)).astype(np.float32)
        f.attrs.update({"grid_h": side, "grid_w": N // side, "model": "bench", "role": "teacher",
                        "setting": "teacher", "seed": 0, "epoch": 0, "layer_names": [f"blocks.{i}" for i in range(L)],
                        "config_hash": "bench", "distdyn_version": "bench"})


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_read(path: str, chunk: int) -> dict:
    from distdyn.metrics import read_chunk

    t0 = time.perf_counter()
    with h5py.File(path, "r") as f:
        blocks = f["blocks"]
        L, B, N, C = blocks.shape
        buf = np.empty((min(chunk, B), N, C), dtype=np.float32)  # the engine's way of reading
        for layer in range(L):
            for b0 in range(0, B, chunk):
                read_chunk(blocks, layer, b0, min(b0 + chunk, B), buf)
    return {"seconds": time.perf_counter() - t0, "peak_rss_mib": peak_rss_mib()}


def run_engine(path: str, chunk: int, out: str, stored_range: str = "yes", device: str = "cpu") -> dict:
    from distdyn.metrics import compute_dump

    t0 = time.perf_counter()
    m = compute_dump(path, chunk_images=chunk, stored_range=stored_range == "yes", device=device)
    seconds = time.perf_counter() - t0
    np.savez(out, spectra=m.spectra, **{k: v.mean(1) for k, v in m.per_image.items()})
    return {"seconds": seconds, "peak_rss_mib": peak_rss_mib()}


def run_reference(path: str, out: str, bins: int = 100) -> dict:
    """The authors' spectrum_and_entrop_analysis.py, on an [L, B, C, N] array."""
    t0 = time.perf_counter()
    with h5py.File(path, "r") as f:
        F = np.transpose(np.asarray(f["blocks"], dtype=np.float32), (0, 1, 3, 2))
    L, B, C, N = F.shape
    X = np.abs(np.fft.fft(F, axis=2) / C)
    S = X.mean(axis=(1, 3))
    del X
    data_min, data_max = F.min(), F.max()
    H = np.zeros(L)
    for l in range(L):
        vals = []
        for b in range(B):
            for n in range(N):
                counts, _ = np.histogram(F[l, b, :, n], bins=bins, range=(data_min, data_max))
                p = counts / C
                p = p[p > 0]
                vals.append(-np.sum(p * np.log2(p)))
        H[l] = np.mean(vals)
    act = np.abs(F).mean(axis=(1, 2, 3))
    seconds = time.perf_counter() - t0
    np.savez(out, spectra=S[:, : C // 2], frequency_intensity=S.mean(1), entropy=H, activation_magnitude=act)
    return {"seconds": seconds, "peak_rss_mib": peak_rss_mib()}


def child(args: list[str]) -> dict:
    """Run one measurement in a fresh interpreter so that timings and peak RSS are its own."""
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--L", type=int, default=12)
    p.add_argument("--B", type=int, default=256)
    p.add_argument("--N", type=int, default=64)
    p.add_argument("--C", type=int, default=192)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    p.add_argument("--compression", default="lzf", choices=["lzf", "gzip", "none"])
    p.add_argument("--chunk", type=int, default=256, help="engine chunk (images)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: the engine's torch path on the GPU")
    p.add_argument("--repeat", type=int, default=3, help="runs of read and engine; the best is printed")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--dir", help="where to build the dump (default: a temporary directory)")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        import torch

        torch.set_num_threads(a.threads)
        kind, path, *rest = a.child
        fn = {"read": lambda: run_read(path, int(rest[0])), "engine": lambda: run_engine(path, int(rest[0]), *rest[1:]),
              "reference": lambda: run_reference(path, rest[0])}[kind]
        print(json.dumps(fn()))
        return 0

    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        path = Path(tmp) / "bench.h5"
        t0 = time.perf_counter()
        build_dump(path, a.L, a.B, a.N, a.C, a.dtype, a.compression)
        size = path.stat().st_size / 2**20
        print(f"dump L={a.L} B={a.B} N={a.N} C={a.C} {a.dtype} {a.compression}: {size:,.0f} MiB on disk "
              f"(built in {time.perf_counter() - t0:.1f} s); {a.threads} threads; engine on {a.device}")
        from distdyn import kernels

        kernels.build()
        common = ["--threads", str(a.threads)]
        runs = {"read": [], "engine": [], "two_pass": []}
        for _ in range(max(1, a.repeat)):
            runs["read"].append(child(["read", str(path), str(a.chunk)] + common))
            runs["engine"].append(child(["engine", str(path), str(a.chunk), f"{tmp}/engine.npz", "yes",
                                         a.device] + common))
            runs["two_pass"].append(child(["engine", str(path), str(a.chunk), f"{tmp}/engine2.npz", "no", a.device]
                                          + common))
        read, engine, two_pass = (min(r, key=lambda m: m["seconds"]) for r in runs.values())
        print(f"best of {max(1, a.repeat)} runs each; all runs (s): "
              + "; ".join(f"{k} " + " ".join(f"{m['seconds']:.3f}" for m in r) for k, r in runs.items()))
        print(f"read only       {read['seconds']:9.3f} s")
        print(f"distdyn engine  {engine['seconds']:9.3f} s   peak RSS {engine['peak_rss_mib']:,.0f} MiB   "
              f"{engine['seconds'] / read['seconds']:.2f}x the read time   (range recorded in the dump)")
        print(f"  with a pass   {two_pass['seconds']:9.3f} s   peak RSS {two_pass['peak_rss_mib']:,.0f} MiB   "
              f"{two_pass['seconds'] / read['seconds']:.2f}x the read time   (a first pass finds the range)")
        if a.skip_reference:
            return 0
        ref = child(["reference", str(path), f"{tmp}/ref.npz"] + common)
        print(f"reference       {ref['seconds']:9.3f} s   peak RSS {ref['peak_rss_mib']:,.0f} MiB")
        print(f"speed-up        {ref['seconds'] / engine['seconds']:9.1f}x   "
              f"(with a pass: {ref['seconds'] / two_pass['seconds']:.1f}x)")
        e, r, e2 = np.load(f"{tmp}/engine.npz"), np.load(f"{tmp}/ref.npz"), np.load(f"{tmp}/engine2.npz")
        same = all(np.array_equal(e[k], e2[k]) for k in e.files)
        print(f"recorded range and first pass give identical numbers: {'yes' if same else 'NO'}")
        worst = 0.0
        for key in ("spectra", "frequency_intensity", "entropy", "activation_magnitude"):
            rel = np.max(np.abs(e[key] - r[key]) / np.abs(r[key]))
            worst = max(worst, rel)
            print(f"  max relative difference {key:22s} {rel:.2e}")
        ok = worst <= 1e-5 and same
        print(f"agreement to 1e-5 relative: {'yes' if ok else 'NO'}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
