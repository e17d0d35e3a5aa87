"""What the tests share: the tiny experiment, copies of the workflow to run, fake inputs (dumps, data
folders, checkpoints) and readers of what runs write.

Tests import it as `helpers`: pyproject's `[tool.pytest.ini_options] pythonpath` puts tests/ (and
workflow/, for distdyn) on sys.path.
"""
import copy
import gzip
import json
import math
import os
import pickle
import re
import shlex
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- tiny configs

TINY = {
    "seeds": [0],
    "data": {"source": "synthetic", "synthetic": {"num_classes": 4, "size": 160, "channels": 1, "img_size": 8}},
    "probe": {"size": 16},
    "teacher": {
        "model": "vit_tiny_patch16_224",
        "overrides": {"img_size": 8, "patch_size": 2, "embed_dim": 16, "depth": 3, "num_heads": 2},
        "train": {"epochs": 2, "batch_size": 32, "checkpoint_every": 0, "warmup_epochs": 0},
    },
    "student": {
        "model": "vit_tiny_patch16_224",
        "overrides": {"img_size": 8, "patch_size": 2, "embed_dim": 8, "depth": 2, "num_heads": 1},
        "train": {"epochs": 2, "batch_size": 32, "checkpoint_every": 1, "warmup_epochs": 0},
    },
    "settings": [
        {"name": "baseline", "method": "none"},
        {"name": "logit", "method": "logit"},
        {"name": "spectral_last", "method": "spectral", "layers": "last"},
        {"name": "projector_first", "method": "projector", "layers": "first"},
    ],
    "metrics": {"bootstrap": 20},
}
"""The tiny test experiment, before validation (conftest's tiny_raw fixture gives a fresh copy per test)."""

TINY_VIT = {"model": "vit_tiny_patch16_224",
            "overrides": {"img_size": 8, "patch_size": 2, "embed_dim": 16, "depth": 2, "num_heads": 2}}
"""A model config of a two-block ViT on TINY's 8x8 one-channel images."""

# ---------------------------------------------------------------- subprocesses

COPY = ("Snakefile", "workflow", "profiles", "envs", "examples")


def make_workdir(tmp: Path, config: dict) -> Path:
    """A copy of the workflow with `config` as its config.yaml."""
    tmp.mkdir(parents=True, exist_ok=True)
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tmp / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, tmp / name)
    (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return tmp


def job_env() -> dict[str, str]:
    """The environment with this interpreter's bin directory first on PATH (Snakemake's jobs run `python`)."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def package_env(**extra: str) -> dict[str, str]:
    """The environment for `python -m distdyn...`: the checkout's workflow/ on PYTHONPATH, and `extra`."""
    return {**os.environ, "PYTHONPATH": str(ROOT / "workflow"), **extra}


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run `python -m snakemake ARGS` in workdir with this interpreter."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, env=job_env(), capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule -> job count of a dry run (`snakemake -n`)."""
    out = snakemake(workdir, "-n", "--cores", "2", "--quiet", "rules", *args).stdout
    counts, table = {}, False
    for line in out.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            table = True
            continue
        if table and len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts


def two_at_a_time(run, cases) -> dict:
    """{case: run(case)}, two cases at a time (a snakemake run is mostly one process importing torch and timm)."""
    from concurrent.futures import ThreadPoolExecutor

    cases = list(cases)
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(cases, pool.map(run, cases)))


def command_argv(command: str) -> list[str]:
    """A documented command's words, with `snakemake` / `.venv/bin/snakemake` run by this interpreter."""
    words = shlex.split(command)
    assert Path(words[0]).name == "snakemake", command
    return [sys.executable, "-m", "snakemake", *words[1:]]


def run_command(workdir: Path, command: str, *extra: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """A documented snakemake command (with `extra` arguments) run in workdir; its status is not checked.
    `extra` goes first: after the command's words it would join a list (--configfile a b) or the targets (`--`)."""
    python, m, snakemake, *words = command_argv(command)
    return subprocess.run([python, m, snakemake, *extra, *words], cwd=workdir, env=job_env(), capture_output=True,
                          text=True, timeout=timeout)


# ---------------------------------------------------------------- the documents' commands

DOCS = ("README.md", "docs/*.md")


def documents() -> list[tuple[str, str]]:
    """(path, text) of the README and the pages under docs/."""
    paths = [p for pattern in DOCS for p in sorted(ROOT.glob(pattern))]
    return [(str(p.relative_to(ROOT)), p.read_text()) for p in paths]


def readme_python_snippets() -> list[str]:
    """The `python -c "..."` lines of the documents' ```bash blocks (steps a reader runs before a command)."""
    return [line.strip() for _, text in documents() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
            for line in block.splitlines() if line.strip().startswith("python -c ")]


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for every snakemake command in the README and in the presets' headers, verbatim.

    README: lines of ```bash blocks and `inline code` that start with `snakemake` or `.venv/bin/snakemake`
    (a trailing `# comment` dropped, `\\` continuations joined). Presets: header comment lines `#   snakemake ...`.
    """
    found = []
    for where, text in documents():
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if re.match(r"(\.venv/bin/)?snakemake\s", line):
                    found.append((where, " ".join(line.split())))
        for span in re.findall(r"`((?:\.venv/bin/)?snakemake\s[^`]+)`", text):
            found.append((where, " ".join(span.split())))
    for preset in sorted((ROOT / "presets").glob("*.yaml")):
        header = []
        for line in preset.read_text().splitlines():
            if not line.startswith("#"):
                break
            header.append(line.lstrip("#").strip())
        joined = "\n".join(header).replace("\\\n", " ")
        for line in joined.splitlines():
            if line.startswith("snakemake "):
                found.append((f"presets/{preset.name}", " ".join(line.split())))
    return list(dict.fromkeys(found))


# ---------------------------------------------------------------- training: checkpoints and logs

def train_teacher(cfg: dict, out: Path, epochs: int | None = None) -> Path:
    """Train the configured teacher into `out` (for `epochs`, if given); its final.pt."""
    from distdyn import train
    from distdyn.config import teacher_spec

    spec = teacher_spec(cfg)
    if epochs is not None:
        spec["train"]["epochs"] = epochs
    train.run(spec, out)
    return out / "final.pt"


TIMING = ("seconds", "images_per_s")  # the log keys that differ between two identical runs


def student_reference(raw: dict, tmp: Path, setting: str = "spectral_last") -> tuple[dict, Path]:
    """`setting`'s seed-0 spec of the config `raw`, and its teacher trained into tmp/teacher; the student trained
    without interruption into tmp/reference (what a killed, resumed or segmented run must end equal to)."""
    from distdyn import train
    from distdyn.config import load_config, student_spec

    cfg = load_config(copy.deepcopy(raw))
    teacher = train_teacher(cfg, tmp / "teacher")
    spec = student_spec(cfg, setting, 0)
    train.run(spec, tmp / "reference", teacher_path=str(teacher))
    return spec, teacher


def train_command(spec: dict, out: Path, teacher: Path, resume: Path) -> list[str]:
    """`python -m distdyn.train` of one student with a resume file, as its rule runs it."""
    return [sys.executable, "-m", "distdyn.train", "--spec", json.dumps(spec), "--out", str(out),
            "--teacher", str(teacher), "--resume", str(resume)]


def log_lines(path: Path, drop=()) -> list[dict]:
    """The records of a log.jsonl, without the keys in `drop`."""
    lines = Path(path).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in lines]


def weights(path: Path) -> dict:
    """A distdyn checkpoint's state dict."""
    from distdyn.models import load_checkpoint

    return load_checkpoint(path)["model"]


def same_weights(a: Path, b: Path) -> bool:
    """Two checkpoints hold the same tensors, bit for bit, under the same names."""
    import torch

    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def assert_close_weights(got: Path, want: Path, rtol: float, atol: float, what: str = "") -> None:
    """Every tensor of checkpoint `want` is close to the one of that name in `got`."""
    import torch

    g, w = weights(got), weights(want)
    for k in w:
        torch.testing.assert_close(g[k], w[k], rtol=rtol, atol=atol, msg=f"{what}{': ' if what else ''}{k}")


# ---------------------------------------------------------------- activation dumps

def write_fake_dump(path, blocks, grads=None, **attrs):
    """A dump in distdyn's layout from a raw [L, B, N, C] array."""
    import h5py

    L, B, N, C = blocks.shape
    side = int(math.isqrt(N))
    with h5py.File(path, "w") as f:
        f.create_dataset("blocks", data=blocks, chunks=(1, min(B, 7), N, C))
        f["labels"] = np.arange(B) % 3
        f["probe_indices"] = np.arange(B)
        f["logits"] = np.zeros((B, 3), np.float32)
        f["grad_magnitude"] = grads if grads is not None else np.ones((L, B), np.float32)
        f.attrs.update({"grid_h": side, "grid_w": N // side, "model": attrs.get("model", "teacher"),
                        "role": attrs.get("role", "teacher"), "setting": attrs.get("setting", "teacher"),
                        "seed": 0, "epoch": attrs.get("epoch", 5), "checkpoint": attrs.get("checkpoint", "final"),
                        "layer_names": [f"blocks.{i}" for i in range(L)],
                        "config_hash": "x", "distdyn_version": "test"})
    return path


def numpy_entropy(tokens, lo, hi, bins=100):
    """Per token (rows of `tokens`): the base-2 entropy of its np.histogram over [lo, hi] in float32."""
    out = []
    for t in tokens:
        counts, _ = np.histogram(t, bins=bins, range=(np.float32(lo), np.float32(hi)))
        p = counts[counts > 0] / len(t)
        out.append(-(p * np.log2(p)).sum())
    return np.array(out)


# ---------------------------------------------------------------- data folders

def idx_bytes(arr: np.ndarray) -> bytes:
    """`arr` as an unsigned-byte IDX file (Fashion-MNIST's format)."""
    header = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def fake_fashion(root: Path, train: int = 40, test: int = 20, gz: bool = True) -> Path:
    """Fashion-MNIST's four IDX files (gzipped, or not) of random 28x28 images, labels 0..9 in turn."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", train), ("t10k", test)):
        for kind, arr in (("images-idx3", rng.integers(0, 255, (n, 28, 28))), ("labels-idx1", np.arange(n) % 10)):
            data = idx_bytes(arr)
            if gz:
                with gzip.open(root / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                    f.write(data)
            else:
                (root / f"{prefix}-{kind}-ubyte").write_bytes(data)
    return root


def fake_cifar10(root: Path, per_batch: int = 20, test: int = 20) -> Path:
    """root/cifar-10-batches-py: five training batches of `per_batch` random images and a test batch of
    `test`, labels 0..9 in turn."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                         b"labels": [i % 10 for i in range(n)]}, f)
    return root


def fake_cifar100(root: Path) -> Path:
    """root/cifar-100-python: 200 random training images and 1000 test images, fine labels 0..99 in turn."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", 200), ("test", 1000)):
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                         b"fine_labels": list(np.arange(n) % 100)}, f)
    return root


def fake_imagefolder(root: Path, classes=("n01", "n02", "n03"), per_class=(4, 2), size=(256, 240)) -> Path:
    """train/ and val/ class folders of random JPEGs larger than 224, so the DeiT transforms really crop."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for part, n in zip(("train", "val"), per_class):
        for c in classes:
            (root / part / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / part / c / f"{i}.JPEG")
    return root


def photo_imagefolder(root: Path, classes=("n01", "n02"), per_class=(2, 20), seed: int = 0) -> Path:
    """train/ and val/ class folders of smooth, photo-like JPEGs larger than 256 px, of several sizes and aspect
    ratios: soft colour blobs and a wavy texture (periods of 6-40 px) on a colour gradient, so that bilinear and
    bicubic resizing give different images (random noise would hide the filters' difference)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = [(320, 288), (300, 400), (480, 270), (257, 300)]
    for part, n in zip(("train", "val"), per_class):
        for c in classes:
            (root / part / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = sizes[i % len(sizes)]
                yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
                img = rng.uniform(0, 1, 3)[:, None, None] + rng.uniform(-0.5, 0.5, 3)[:, None, None] * (xx + yy)
                for _ in range(8):
                    cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.02, 0.2)
                    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
                    img = img + rng.uniform(-0.8, 0.8, 3)[:, None, None] * blob
                for _ in range(3):
                    period, angle = rng.uniform(6, 40) / max(w, h), rng.uniform(0, np.pi)
                    wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
                    img = img + rng.uniform(-0.25, 0.25, 3)[:, None, None] * wave
                pixels = (255 * np.clip(img, 0, 1)).round().astype(np.uint8).transpose(1, 2, 0)
                Image.fromarray(pixels).save(root / part / c / f"{i}.JPEG", quality=90)
    return root


# ---------------------------------------------------------------- literal definitions (references)


def channel_spectrum(x):
    """|FFT over channels| / C for every token: [b, N, C] -> [b, N, C] (float64; the plain definition)."""
    import torch

    return torch.fft.fft(x.double(), dim=-1).abs() / x.shape[-1]


def token_sep_curves(x):
    """Each token's SEP curve c(d) = 100 sum_{k<d} e_k / sum e_k, e = |unnormalised FFT over channels|^2: [..., D]
    (the literal definition; the engine uses the equivalent sep_moment form)."""
    import torch

    e = torch.fft.fft(x.double(), dim=-1).abs().square()
    return 100 * e.cumsum(-1) / e.sum(-1, keepdim=True)
