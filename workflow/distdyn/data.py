"""Datasets, batching and the fixed probe set.

Small sources (digits, Fashion-MNIST, CIFAR, synthetic) are held in memory as
normalised tensors and augmented on the tensor, so batching is deterministic
and fast; `imagefolder` streams from disk through a torch DataLoader.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DistdynError, first_line

FASHION_MNIST_DEFAULT = "/usr/share/datasets/fashion-mnist"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DataError(DistdynError):
    """A data source is missing or malformed; `where` is the config key or the file."""


@dataclass
class TensorSplit:
    """Normalised images [N, C, H, W] (float32) and labels [N] (int64)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DataInfo:
    num_classes: int
    in_chans: int
    img_size: int
    train_size: int
    val_size: int
    content: str | None = None  # content_digest: the data's identity in a run's key, in place of its path


# ---------------------------------------------------------------- readers


IDX_FIX = "replace it with a complete copy (data.root names the folder of the four IDX files)"


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX array of `ndim` dimensions; a damaged file is a DataError naming it."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(path, f"cannot be read ({first_line(e)}); {IDX_FIX}") from None
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DataError(path, f"is empty or truncated: {len(raw)} bytes, shorter than an IDX header; {IDX_FIX}")
    zero, dtype_code, dims = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or dims != ndim:
        raise DataError(path, f"is not a {ndim}-dimensional unsigned-byte IDX file (its header reads "
                              f"{raw[:4].hex()}); {IDX_FIX}")
    shape = struct.unpack(">" + "I" * ndim, raw[4:head])
    need = int(np.prod(shape, dtype=np.int64))
    if len(raw) - head != need:
        raise DataError(path, f"{'is truncated' if len(raw) - head < need else 'has trailing bytes'}: its header "
                              f"gives shape {'x'.join(map(str, shape))} = {need} bytes of data, the file has "
                              f"{len(raw) - head}; {IDX_FIX}")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DataError("data.root", f"{root} has no {stem}[.gz] (expected the four Fashion-MNIST IDX files)")


def _fashion_mnist(root: Path):
    out = []
    for prefix in ("train", "t10k"):
        x = _read_idx(images := _find(root, f"{prefix}-images-idx3-ubyte"), 3)
        y = _read_idx(labels := _find(root, f"{prefix}-labels-idx1-ubyte"), 1)
        if len(x) != len(y):
            raise DataError(labels, f"has {len(y)} labels for the {len(x)} images of {images}; {IDX_FIX}")
        if y.size and y.max() >= 10:
            raise DataError(labels, f"holds label {int(y.max())}; Fashion-MNIST has the labels 0..9; {IDX_FIX}")
        out.append((x[:, None].astype(np.float32) / 255.0, y.astype(np.int64)))
    return out, 10


CIFAR_FIX = "replace it with the file from the CIFAR python version (data.root names its folder)"


def _cifar_batch(path: Path, key: bytes, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images [n, 3, 32, 32] and labels of one CIFAR python-pickle file; a damaged file is a DataError naming it."""
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except Exception as e:  # noqa: BLE001 - unpickling garbage raises almost any type
        raise DataError(path, f"is not a readable CIFAR pickle ({first_line(e)}); {CIFAR_FIX}") from None
    if not isinstance(d, dict) or b"data" not in d or key not in d:
        raise DataError(path, f"is not a CIFAR batch: expected a dict with b'data' and {key!r}; {CIFAR_FIX}")
    try:
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(d[key], dtype=np.int64).reshape(-1)
    except (ValueError, TypeError) as e:
        raise DataError(path, f"holds no 32x32 RGB images ({first_line(e)}); {CIFAR_FIX}") from None
    if len(x) != len(y) or (y.size and (y.min() < 0 or y.max() >= classes)):
        raise DataError(path, f"has {len(y)} labels in {y.min() if y.size else '-'}..{y.max() if y.size else '-'} "
                              f"for {len(x)} images (expected one label in 0..{classes - 1} per image); {CIFAR_FIX}")
    return x, y


def _cifar_files(root: Path, fine: bool) -> tuple[list[Path], list[Path]]:
    """The training and test files of the CIFAR python-pickle folder in (or at) `root`."""
    folder = root / ("cifar-100-python" if fine else "cifar-10-batches-py")
    if not folder.is_dir():
        folder = root
    names = (["train"], ["test"]) if fine else ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"])
    return [folder / n for n in names[0]], [folder / n for n in names[1]]


def _cifar(root: Path, fine: bool):
    key = b"fine_labels" if fine else b"labels"
    out = []
    for paths in _cifar_files(root, fine):
        xs, ys = [], []
        for path in paths:
            if not path.is_file():
                raise DataError("data.root", f"{path} not found (the CIFAR python-pickle folder)")
            x, y = _cifar_batch(path, key, 100 if fine else 10)
            xs.append(x)
            ys.append(y)
        out.append((np.concatenate(xs).astype(np.float32) / 255.0, np.concatenate(ys)))
    return out, 100 if fine else 10


def _digits(val_fraction: float, seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    xtr, xva, ytr, yva = train_test_split(x, y, test_size=val_fraction, stratify=y, random_state=seed)
    return [(xtr, ytr), (xva, yva)], 10


def _synthetic(cfg: dict, val_fraction: float, seed: int):
    """Class prototypes (smooth random images) plus Gaussian noise."""
    from sklearn.model_selection import train_test_split

    k, n, c, s = cfg["num_classes"], cfg["size"], cfg["channels"], cfg["img_size"]
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(k, c, s, s)).astype(np.float32)
    y = np.arange(n) % k
    x = protos[y] + cfg["noise"] * rng.normal(size=(n, c, s, s)).astype(np.float32)
    xtr, xva, ytr, yva = train_test_split(x, y.astype(np.int64), test_size=val_fraction, stratify=y, random_state=seed)
    return [(xtr, ytr), (xva, yva)], k


def _root(cfg: dict) -> Path:
    root = cfg["root"] or (FASHION_MNIST_DEFAULT if cfg["source"] == "fashion_mnist" else None)
    if root is None:
        raise DataError("data.root", f"must be set for data.source={cfg['source']}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError("data.root", f"directory {root} does not exist")
    return root


def source_files(cfg: dict) -> list[Path]:
    """The files an in-memory source reads (none for digits and synthetic, whose data the config determines)."""
    source = cfg["source"]
    if source == "fashion_mnist":
        root = _root(cfg)
        return [_find(root, f"{p}-{kind}-idx{n}-ubyte") for p in ("train", "t10k")
                for kind, n in (("images", 3), ("labels", 1))]
    if source in ("cifar10", "cifar100"):
        train, test = _cifar_files(_root(cfg), source == "cifar100")
        return train + test
    return []


def _digest_lines(lines) -> str:
    import hashlib

    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode() + b"\n")
    return h.hexdigest()[:20]


def content_digest(cfg: dict, listing: list[str] | None = None) -> str | None:
    """What identifies the data a run reads, wherever it lies: the sha256 of the files an in-memory source
    reads (tens of MB), or of an ImageFolder's `listing` (its files' relative paths and sizes: hashing
    150 GB of ImageNet is out of the question, so a file rewritten in place with the same size goes
    unnoticed); None for digits and synthetic data, which the config alone determines."""
    import hashlib

    if listing is not None:
        return "listing:" + _digest_lines(sorted(listing))
    files = source_files(cfg)
    if not files:
        return None
    parts = []
    for f in files:
        with open(f, "rb") as fh:
            parts.append(f"{f.name} {hashlib.file_digest(fh, 'sha256').hexdigest()}")
    return "sha256:" + _digest_lines(parts)


def _read_source(cfg: dict):
    source = cfg["source"]
    if source == "digits":
        return _digits(cfg["val_fraction"], cfg["split_seed"])
    if source == "synthetic":
        return _synthetic(cfg["synthetic"], cfg["val_fraction"], cfg["split_seed"])
    if source == "fashion_mnist":
        return _fashion_mnist(_root(cfg))
    if source in ("cifar10", "cifar100"):
        return _cifar(_root(cfg), fine=source == "cifar100")
    raise DataError("data.source", f"{source} is not an in-memory source")


# ---------------------------------------------------------------- subsets


def balanced_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n indices with near-equal counts per class (the first classes take the remainder).

    Within a class the choice is a seeded permutation; the result is sorted so
    that file order is kept.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if n > len(labels):
        raise DataError("probe.size", f"asked for {n} images, the split has {len(labels)}")
    rng = np.random.default_rng(seed)
    pools = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    # Water-filling: equal shares, a class smaller than its share hands the rest to the others.
    quota, remaining = {c: 0 for c in classes}, n
    while remaining:
        open_ = [c for c in classes if quota[c] < len(pools[c])]
        share, extra = divmod(remaining, len(open_))
        for i, c in enumerate(open_):
            add = min(len(pools[c]) - quota[c], share + (i < extra))
            quota[c] += add
            remaining -= add
    return np.sort(np.concatenate([pools[c][: quota[c]] for c in classes]))


def probe_indices(val_labels, size: int, seed: int, mode: str = "balanced") -> np.ndarray:
    """Indices into the validation split of the fixed probe set."""
    if mode == "authors":
        return np.arange(size)
    return balanced_subset(val_labels, size, seed)


# ---------------------------------------------------------------- building


def _to_split(x: np.ndarray, y: np.ndarray, cfg: dict, stats) -> TensorSplit:
    t = torch.from_numpy(np.ascontiguousarray(x))
    if cfg["grayscale"] == "rgb" and t.shape[1] == 1:
        t = t.repeat(1, 3, 1, 1)
    size = cfg["img_size"]
    if size and size != t.shape[-1]:
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=size < t.shape[-1])
    mean, std = stats
    t = (t - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    return TensorSplit(t.contiguous(), torch.from_numpy(np.asarray(y, dtype=np.int64)))


def load_tensor_splits(cfg: dict) -> tuple[TensorSplit, TensorSplit, int]:
    """(train, val, num_classes) for an in-memory source, normalised by train statistics."""
    ((xtr, ytr), (xva, yva)), k = _cached_arrays(cfg)
    if cfg["train_subset"]:
        idx = balanced_subset(ytr, min(cfg["train_subset"], len(ytr)), subset_seed(cfg, True))
        xtr, ytr = xtr[idx], ytr[idx]
    if cfg["val_subset"]:
        idx = balanced_subset(yva, min(cfg["val_subset"], len(yva)), subset_seed(cfg, False))
        xva, yva = xva[idx], yva[idx]
    channels = 3 if cfg["grayscale"] == "rgb" else xtr.shape[1]
    mean = torch.from_numpy(xtr.mean(axis=(0, 2, 3), dtype=np.float64).astype(np.float32))
    std = torch.from_numpy(xtr.std(axis=(0, 2, 3), dtype=np.float64).astype(np.float32)).clamp_min(1e-6)
    if channels != len(mean):
        mean, std = mean.repeat(channels), std.repeat(channels)
    return _to_split(xtr, ytr, cfg, (mean, std)), _to_split(xva, yva, cfg, (mean, std)), k


_ARRAY_CACHE: dict = {}


def _cached_arrays(cfg: dict):
    """The raw splits and class count, parsed once per process (config checks and training share them)."""
    key = repr(sorted((k, v) for k, v in cfg.items() if k in ("source", "root", "val_fraction", "split_seed",
                                                              "synthetic")))
    if key not in _ARRAY_CACHE:
        _ARRAY_CACHE.clear()
        _ARRAY_CACHE[key] = _read_source(cfg)
    return _ARRAY_CACHE[key]


# The evaluation transform of an ImageFolder is Resize(size / 0.875) then CenterCrop(size) (256 -> 224), with
# DeiT's bicubic resize (training and evaluation), or with torchvision's default bilinear one, which the
# authors' released analysis script uses (its Resize(256); paper.md 2.1): probe.mode authors.
EVAL_INTERPOLATION = {"deit": "bicubic", "authors": "bilinear"}


def image_folder(cfg: dict, train: bool, img_size: int, eval_transform: str = "deit"):
    """torchvision ImageFolder over root/train or root/val with timm transforms (`eval_transform`: a key of
    EVAL_INTERPOLATION, for val)."""
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    root = _root(cfg) / ("train" if train else "val")
    if not root.is_dir():
        raise DataError("data.root", f"{root} does not exist (imagefolder needs train/ and val/)")
    aug = cfg["augment"]
    if train and aug["timm"]:
        # The DeiT recipe: RandomResizedCrop, flip, RandAugment, pixel-mode random erasing.
        tf = create_transform(img_size, is_training=True, auto_augment=aug["auto_augment"], re_prob=aug["re_prob"],
                              re_mode="pixel", hflip=0.5 if aug["hflip"] else 0.0, color_jitter=0.4,
                              interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    else:
        tf = create_transform(img_size, is_training=False, interpolation=EVAL_INTERPOLATION[eval_transform],
                              crop_pct=0.875, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return subset_of(ImageFolder(str(root), transform=tf), cfg, train)


def subset_seed(cfg: dict, train: bool) -> int:
    """The seed of data.train_subset's (split_seed) or data.val_subset's (split_seed + 1) choice."""
    return cfg["split_seed"] + (0 if train else 1)


def subset_of(folder, cfg: dict, train: bool):
    """`folder` (an ImageFolder) cut to data.train_subset / val_subset images, the class-balanced seeded
    choice the in-memory sources make (balanced_subset), in file order; unchanged without a subset."""
    n = cfg.get("train_subset" if train else "val_subset")
    if not n or n >= len(folder.samples):
        return folder
    idx = balanced_subset(np.asarray(folder.targets), n, subset_seed(cfg, train))
    folder.samples = folder.imgs = [folder.samples[i] for i in idx]
    folder.targets = [s[1] for s in folder.samples]
    return folder


class SeededAugment(torch.utils.data.Dataset):
    """A dataset whose random transforms draw from (epoch seed, index) alone.

    Each image gets the same crop, RandAugment ops and erasing whatever the number of DDP
    processes or loader workers that read it, and the model's own RNG (dropout) is left untouched.
    """

    def __init__(self, base):
        self.base, self.epoch_seed = base, 0
        self.classes, self.targets = base.classes, base.targets

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        import random

        # timm's transforms draw from all three: random (crops, ops), numpy (RandAugment's choice), torch (erasing).
        seed = int(np.random.SeedSequence([self.epoch_seed, int(i)]).generate_state(1, np.uint64)[0])
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            try:
                return self.base[i]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


def describe(cfg: dict) -> DataInfo:
    """Sizes, classes and channels of the configured data, for config checks and model shapes."""
    if cfg["source"] == "imagefolder":
        root = _root(cfg)
        for part in ("train", "val"):
            if not (root / part).is_dir():
                raise DataError("data.root", f"{root / part} does not exist (imagefolder needs train/ and val/)")
        classes = sorted(d.name for d in os.scandir(root / "train") if d.is_dir())
        listing = {"train": [], "val": []}
        for part, files in listing.items():
            for folder, _, names in os.walk(root / part):
                rel = os.path.relpath(folder, root)
                files.extend(f"{rel}/{n} {os.stat(os.path.join(folder, n)).st_size}" for n in names)
        n_tr, n_va = len(listing["train"]), len(listing["val"])  # cut as subset_of cuts the ImageFolders
        return DataInfo(len(classes), 3, cfg["img_size"] or 224, min(n_tr, cfg["train_subset"] or n_tr),
                        min(n_va, cfg["val_subset"] or n_va), content_digest(cfg, listing["train"] + listing["val"]))
    ((xtr, ytr), (xva, yva)), k = _cached_arrays(cfg)
    channels = 3 if cfg["grayscale"] == "rgb" else xtr.shape[1]
    n_tr = min(len(ytr), cfg["train_subset"] or len(ytr))
    n_va = min(len(yva), cfg["val_subset"] or len(yva))
    return DataInfo(k, channels, cfg["img_size"] or xtr.shape[-1], n_tr, n_va, content_digest(cfg))


# ---------------------------------------------------------------- batching


def draw_augment(n: int, aug: dict, gen: torch.Generator, device) -> dict[str, torch.Tensor]:
    """Random crop offsets and flips for n images, drawn from the CPU generator (the same stream
    on any device) and moved to `device` in one copy, so a GPU epoch never waits on the host."""
    pad = aug["crop_padding"]
    draws = {}
    if pad:
        draws["dy"] = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        draws["dx"] = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    if aug["hflip"]:
        draws["flip"] = torch.rand(n, generator=gen) < 0.5
    return {k: v.to(device) for k, v in draws.items()}


def apply_augment(x: torch.Tensor, aug: dict, draws: dict[str, torch.Tensor]) -> torch.Tensor:
    """Random crop after zero padding and random horizontal flip, per image, on x's device."""
    pad, dev = aug["crop_padding"], x.device
    if pad:
        b, _, h, w = x.shape
        xp = F.pad(x, (pad, pad, pad, pad))
        rows = (draws["dy"].view(b, 1) + torch.arange(h, device=dev)).view(b, 1, h, 1)
        cols = (draws["dx"].view(b, 1) + torch.arange(w, device=dev)).view(b, 1, 1, w)
        x = xp[torch.arange(b, device=dev).view(b, 1, 1, 1), torch.arange(x.shape[1], device=dev).view(1, -1, 1, 1),
               rows, cols]
    if aug["hflip"]:
        x = torch.where(draws["flip"].view(-1, 1, 1, 1), x.flip(-1), x)
    return x


def tensor_batches(split: TensorSplit, batch_size: int, *, shuffle: bool = False, gen: torch.Generator | None = None,
                   aug: dict | None = None, drop_last: bool = False, shard: tuple[int, int] = (0, 1)
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images, labels) batches; `shard=(rank, world)` takes every world-th image of each batch."""
    n = len(split)
    dev = split.images.device
    order = (torch.randperm(n, generator=gen) if shuffle else torch.arange(n)).to(dev)
    draws = draw_augment(n, aug, gen, dev) if aug is not None else None
    stop = n - n % batch_size if drop_last else n
    rank, world = shard
    for i in range(0, stop, batch_size):
        idx = order[i:i + batch_size][rank::world]
        x = split.images[idx]
        if draws is not None:
            x = apply_augment(x, aug, {k: v[i:i + batch_size][rank::world] for k, v in draws.items()})
        yield x, split.labels[idx]
