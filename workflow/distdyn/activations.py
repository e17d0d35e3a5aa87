"""Activation dumps: every block's raw output on the fixed probe set, to HDF5.

    python -m distdyn.activations probe --data JSON --probe JSON --out probe_indices.csv
    python -m distdyn.activations dump CKPT.pt --data JSON --probe-file CSV --out FILE.h5 [--setting S] ...

The layout of a dump and its readers are in `distdyn.dumps` (which imports no model code, so that
the metric jobs that read dumps start without timm and torchvision).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch

from . import __version__
from .data import TensorSplit, image_folder, load_tensor_splits, probe_indices
from .errors import CheckpointError, TableError, cli, first_line, read_table, remedy
from .io import atomic_path, read_spec, write_csv
from .jobenv import granted_device, stamp, visible_gpus
from .dumps import ValueRange
from .schema import tuned
from .models import block_tokens, build_from_checkpoint, checkpoint_record, forward_with_blocks

# ---------------------------------------------------------------- probe set


def val_split(data_cfg: dict, img_size: int | None = None, probe_mode: str = "balanced"):
    """The validation split as an indexable dataset of (image, label); an ImageFolder's images through the
    authors' analysis transform for probe mode `authors`, DeiT's evaluation transform otherwise."""
    if data_cfg["source"] == "imagefolder":
        return image_folder(data_cfg, False, data_cfg["img_size"] or img_size or 224,
                            "authors" if probe_mode == "authors" else "deit")
    return load_tensor_splits(data_cfg)[1]


def val_labels(split) -> np.ndarray:
    if isinstance(split, TensorSplit):
        return split.labels.numpy()
    return np.asarray(split.targets)


def write_probe(data_cfg: dict, probe_cfg: dict, out: str | Path) -> pd.DataFrame:
    """Choose the probe set and save it as CSV (index into the validation split, label)."""
    labels = val_labels(val_split(data_cfg))
    idx = probe_indices(labels, probe_cfg["size"], probe_cfg["seed"], probe_cfg["mode"])
    df = pd.DataFrame({"index": idx, "label": labels[idx]})
    write_csv(df, out)
    return df


def read_probe(path: str | Path, split) -> pd.DataFrame:
    """The probe set's CSV, checked against the validation split it indexes; TableError naming it."""
    probe = read_table(path, ["index", "label"])
    if probe.empty:
        raise TableError(path, f"holds no probe images; {remedy(path)}")
    if not all(pd.api.types.is_integer_dtype(probe[c]) for c in ("index", "label")):
        raise TableError(path, f"has non-integer index or label values; {remedy(path)}")
    n, labels = len(split), val_labels(split)
    bad = probe[(probe["index"] < 0) | (probe["index"] >= n)]
    if len(bad):
        raise TableError(path, f"index {int(bad['index'].iloc[0])} is out of range: the validation split has {n} "
                               f"images (0..{n - 1}); {remedy(path)}")
    wrong = int((labels[probe["index"].to_numpy()] != probe["label"].to_numpy()).sum())
    if wrong:
        raise TableError(path, f"{wrong} of its {len(probe)} labels differ from the validation split's: the probe set "
                               f"of other data; {remedy(path)}")
    return probe


def probe_batches(split, indices: np.ndarray, batch_size: int):
    for i in range(0, len(indices), batch_size):
        idx = indices[i:i + batch_size]
        if isinstance(split, TensorSplit):
            idx = torch.from_numpy(np.array(idx, dtype=np.int64))
            yield split.images[idx], split.labels[idx]
        else:
            items = [split[int(j)] for j in idx]
            yield torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


# ---------------------------------------------------------------- dumping


def block_outputs_and_grads(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    """Block outputs [L, B, N, C], logits [B, K] and grad magnitudes [L, B] for one batch.

    Forward hooks hold each block's whole output (prefix tokens included), which is
    what the authors' backward hooks differentiate; the images are independent, so
    the gradient of the summed target logits gives every image's own gradient.
    """
    held = []
    hooks = [blk.register_forward_hook(lambda _m, _i, out: held.append(out)) for blk in model.blocks]
    try:
        with torch.enable_grad():
            logits, feats = forward_with_blocks(model, x, None)
            target = logits.gather(1, y.view(-1, 1)).sum()
            grads = torch.autograd.grad(target, held)
    finally:
        for h in hooks:
            h.remove()
    blocks = block_tokens([f.detach() for f in feats])
    grad_mag = torch.stack([g.abs().flatten(1).mean(1) for g in grads])
    return blocks, logits.detach(), grad_mag.detach(), feats[0].shape[-2:]
def dump(ckpt_path: str | Path, out: str | Path, *, data_cfg: dict, probe_file: str | Path, meta: dict,
         dtype: str = "float32", compression: str = "lzf", chunk_images: int = 64, batch_size: int = 128,
         device: str = "cpu", probe_mode: str = "balanced") -> Path:
    """Run the probe set through a checkpoint and write the dump atomically (temp file, then rename).
    `meta`: model, role, setting, seed, and checkpoint (final, the default, or epoch_E); `probe_mode`:
    probe.mode, which picks an ImageFolder's transform (val_split)."""
    ckpt = checkpoint_record(ckpt_path)
    try:
        model = build_from_checkpoint(ckpt, device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise CheckpointError(ckpt_path, f"its weights do not fit its own architecture record ({first_line(e)}); "
                                         f"{remedy(ckpt_path)}") from None
    model.requires_grad_(True)
    split = val_split(data_cfg, ckpt["overrides"].get("img_size"), probe_mode)
    probe = read_probe(probe_file, split)
    indices = probe["index"].to_numpy()
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as f:
            start = 0
            for x, y in probe_batches(split, indices, batch_size):
                blocks, logits, grad_mag, (gh, gw) = block_outputs_and_grads(model, x.to(device), y.to(device))
                if start == 0:
                    L, _, N, C = blocks.shape
                    B = len(indices)
                    f.create_dataset("blocks", shape=(L, B, N, C), dtype=dtype, chunks=(1, min(chunk_images, B), N, C),
                                     compression=None if compression == "none" else compression)
                    f.create_dataset("logits", shape=(B, logits.shape[1]), dtype="float32")
                    f.create_dataset("grad_magnitude", shape=(L, B), dtype="float32")
                    f.attrs.update({"grid_h": int(gh), "grid_w": int(gw),
                                    "layer_names": [f"blocks.{i}" for i in range(L)]})
                    value_range = ValueRange(L)
                stop = start + len(y)
                computed = blocks.cpu().numpy()
                stored = computed.astype(dtype)
                refuse_non_finite(computed, stored, grad_mag.cpu().numpy(), ckpt_path, start)
                f["blocks"][:, start:stop] = stored
                value_range.update(stored)
                f["logits"][start:stop] = logits.cpu().numpy()
                f["grad_magnitude"][:, start:stop] = grad_mag.cpu().numpy()
                start = stop
            value_range.write(f)
            f.create_dataset("labels", data=probe["label"].to_numpy().astype(np.int64))
            f.create_dataset("probe_indices", data=indices.astype(np.int64))
            f.attrs.update({"model": meta["model"], "role": meta["role"], "setting": meta["setting"],
                            "seed": int(meta["seed"]), "epoch": int(ckpt["epoch"]),
                            "checkpoint": meta.get("checkpoint", "final"),
                            "config_hash": str(ckpt.get("spec_hash", "")), "distdyn_version": __version__,
                            "arch": ckpt["arch"], "test_acc1": float(ckpt.get("test_acc1", float("nan")))})
    return Path(out)


def refuse_non_finite(blocks: np.ndarray, stored: np.ndarray, grad_mag: np.ndarray, ckpt_path,
                      first_image: int) -> None:
    """A dump never holds NaN or Inf (its entropy would read as 0): CheckpointError naming the checkpoint and the layer.

    `blocks`: one batch's block outputs [L, b, N, C] as computed, `stored`: as they would be stored. The block
    outputs come first: a NaN in one layer makes the gradients of every layer before it NaN too."""
    broken = "the checkpoint's weights are broken (diverged training?)"
    checks = [("block output", blocks, broken), ("gradient magnitude", grad_mag, broken)]
    if stored.dtype != blocks.dtype:
        checks.insert(1, ("block output", stored,
                          f"the values overflow dump.dtype {stored.dtype}; set dump.dtype: float32"))
    for what, values, cause in checks:
        for layer in range(len(values)):
            bad = ~np.isfinite(values[layer])
            if bad.any():
                image = first_image + int(np.argwhere(bad)[0][0])
                raise CheckpointError(ckpt_path, f"layer {layer + 1} (blocks.{layer}) gives a non-finite {what} "
                                                 f"({int(np.isnan(values[layer]).sum())} NaN, "
                                                 f"{int(np.isinf(values[layer]).sum())} Inf, the first at probe image "
                                                 f"{image}), so no dump is written: {cause}")

# ---------------------------------------------------------------- CLI


@cli
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distdyn.activations", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("probe", help="choose the probe set")
    pp.add_argument("--data", required=True, help="data config (JSON or file)")
    pp.add_argument("--data-root", help="the data folder (default: the config's data.root)")
    pp.add_argument("--num-workers", type=int, help="(accepted as the training jobs' flag; the probe reads no images)")
    pp.add_argument("--probe", required=True, help="probe config (JSON or file)")
    pp.add_argument("--out", required=True)
    pd_ = sub.add_parser("dump", help="dump one or more checkpoints")
    pd_.add_argument("checkpoints", nargs="+")
    pd_.add_argument("--out", nargs="+", required=True, help="one HDF5 path per checkpoint")
    pd_.add_argument("--data", required=True)
    pd_.add_argument("--data-root", help="the data folder (default: the config's data.root)")
    pd_.add_argument("--num-workers", type=int, help="(accepted as the training jobs' flag; dumps read in the process)")
    pd_.add_argument("--probe-file", required=True)
    pd_.add_argument("--probe-mode", default="balanced", choices=["balanced", "authors"],
                     help="probe.mode: authors reads an ImageFolder through the authors' analysis transform")
    pd_.add_argument("--dump", default="{}", help="dump config (JSON): dtype, compression, chunk_images")
    pd_.add_argument("--model-names", nargs="+", required=True, help="model identifier per checkpoint")
    pd_.add_argument("--checkpoint-labels", nargs="+", help="per checkpoint: final or epoch_E (default: final)")
    pd_.add_argument("--role", required=True, choices=["teacher", "student", "model"])
    pd_.add_argument("--setting", default="teacher")
    pd_.add_argument("--seed", type=int, default=0)
    pd_.add_argument("--threads", type=int, default=1)
    pd_.add_argument("--gpu", type=int, default=0)
    args = p.parse_args(argv)
    # The folder and loader workers are no part of the rules' params (distdyn.schema.TUNING): flags.
    data_cfg = tuned({"data": read_spec(args.data)}, root=args.data_root or None, num_workers=args.num_workers)["data"]
    if args.cmd == "probe":
        write_probe(data_cfg, read_spec(args.probe), args.out)
        return 0
    labels = args.checkpoint_labels or ["final"] * len(args.checkpoints)
    if not len(args.checkpoints) == len(args.out) == len(args.model_names) == len(labels):
        p.error("give one --out, --model-names and --checkpoint-labels entry per checkpoint")
    torch.set_num_threads(args.threads)
    device = granted_device(args.gpu)
    print(f"{stamp()} dumping on {device}{visible_gpus()}", file=sys.stderr, flush=True)
    opts = read_spec(args.dump)
    for ckpt, out, name, label in zip(args.checkpoints, args.out, args.model_names, labels):
        dump(ckpt, out, data_cfg=data_cfg, probe_file=args.probe_file,
             meta={"model": name, "role": args.role, "setting": args.setting, "seed": args.seed,
                   "checkpoint": label},
             dtype=opts.get("dtype", "float32"), compression=opts.get("compression", "lzf"),
             chunk_images=opts.get("chunk_images", 64), device=device, probe_mode=args.probe_mode)
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
