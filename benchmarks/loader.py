"""Images per second one ImageFolder loader worker decodes and augments: `resources.throughput.loader_worker`.

    python benchmarks/loader.py [--root IMAGEFOLDER] [--images 300] [--augment rand-m9-mstd0.5-inc1]

Times one process (as one DataLoader worker is) reading JPEGs and applying the training transform the
paper preset uses (timm's create_transform at 224: random resized crop, flip, RandAugment, random erasing).
Without --root it writes ImageNet-like JPEGs (500 x 375, quality 90, noise-free gradients with texture)
to a temporary folder. Prints the best of 3 passes.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_images(root: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        y, x = np.mgrid[0:375, 0:500]
        base = np.stack([(x + 40 * i) % 256, (y * 2) % 256, (x + y) % 256], -1).astype(np.float32)
        pixels = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        paths.append(root / f"{i}.JPEG")
        Image.fromarray(pixels).save(paths[-1], quality=90)
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, help="a folder of JPEGs (searched recursively)")
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--augment", default="rand-m9-mstd0.5-inc1")
    args = p.parse_args()
    import torch
    from timm.data import create_transform

    torch.set_num_threads(1)  # a loader worker runs its transforms on one thread
    transform = create_transform(224, is_training=True, auto_augment=args.augment, re_prob=0.25)
    with tempfile.TemporaryDirectory() as tmp:
        paths = sorted(args.root.rglob("*.JPEG"))[:args.images] if args.root else write_images(Path(tmp), args.images)
        best = 0.0
        for _ in range(3):
            t0 = time.perf_counter()
            for path in paths:
                with open(path, "rb") as f:
                    transform(Image.open(f).convert("RGB"))
            best = max(best, len(paths) / (time.perf_counter() - t0))
    print(f"loader_worker: {best:.0f} images/s ({len(paths)} images, best of 3, one process)")


if __name__ == "__main__":
    main()
