"""timm models by name, their block outputs, and checkpoint I/O."""
from __future__ import annotations

import json
import os
from pathlib import Path

import timm
import torch
from torch import nn

from .checkpoints import atomic_save, load_checkpoint  # noqa: F401 - imported from here too
from .errors import CheckpointError, DistdynError, cli, remedy


def model_kwargs(model_cfg: dict, num_classes: int, in_chans: int) -> dict:
    """timm.create_model keyword arguments: the data's classes and channels, then the user's overrides."""
    return {"num_classes": num_classes, "in_chans": in_chans, **model_cfg.get("overrides", {})}


def create_model(model_cfg: dict, num_classes: int, in_chans: int, device: str | torch.device = "cpu") -> nn.Module:
    """Build `model_cfg["model"]` from scratch (no pretrained download, ever)."""
    with torch.device(device):
        return timm.create_model(model_cfg["model"], pretrained=False, **model_kwargs(model_cfg, num_classes, in_chans))


WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".npz")


def is_weights_file(pretrained) -> bool:
    """A `pretrained` value that names a local file (a path, or a name ending in a weights suffix)."""
    return isinstance(pretrained, str) and ("/" in pretrained or pretrained.endswith(WEIGHT_SUFFIXES))


def pretrained_args(model: str, pretrained) -> tuple[str, dict]:
    """timm.create_model's name and keyword arguments for a `pretrained` value.

    true: timm's default tag; "hf-hub:org/repo": a hub id; a path: that file, through
    `pretrained_cfg_overlay` (timm's own loading, filters and head adaptation); else a tag.
    """
    if pretrained is True:
        return model, {"pretrained": True}
    if is_weights_file(pretrained):
        return model, {"pretrained": True, "pretrained_cfg_overlay": {"file": str(pretrained)}}
    if pretrained.startswith("hf-hub:"):
        return pretrained, {"pretrained": True}
    return f"{model.split('.')[0]}.{pretrained}", {"pretrained": True}


def _file_classes(model: str, path: str) -> int | None:
    from timm.models import load_state_dict

    classifier = timm.models.get_pretrained_cfg(model.split(".")[0]).to_dict().get("classifier", "head")
    weight = load_state_dict(path).get(f"{classifier}.weight")
    return None if weight is None else int(weight.shape[0])


class PretrainedUnavailable(DistdynError):
    """timm's weights cannot be had, or a checkpoint of your own does not fit its model; `where` is the config key."""


def fetch_pretrained(model_cfg: dict, pretrained, num_classes: int, in_chans: int, key: str = "teacher") -> dict:
    """The model's weights from timm's published ones (hub cache, hub id or local file), as a plain state dict."""
    name, kwargs = pretrained_args(model_cfg["model"], pretrained)
    if is_weights_file(pretrained) and Path(pretrained).is_file():
        # timm keeps a file's classifier only if the file's class count is declared; it is read off the file.
        kwargs["pretrained_cfg_overlay"]["num_classes"] = _file_classes(model_cfg["model"], pretrained)
    try:
        model = timm.create_model(name, **kwargs, **model_kwargs(model_cfg, num_classes, in_chans))
    except Exception as e:  # noqa: BLE001 - hub, urllib and timm raise many types; the cause is kept below
        where = f"the file {pretrained}" if is_weights_file(pretrained) else "the Hugging Face hub or its cache"
        raise PretrainedUnavailable(
            f"{key}.pretrained", f"cannot load timm's weights for {name} from {where} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). Run the workflow once on a machine with internet "
            f"(the fetch_teacher_weights rule caches them), or download the weights file and set "
            f"{key}.pretrained: /path/to/weights.pth") from e
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


_SHAPES: dict[str, tuple[int, int, tuple[int, int] | None]] = {}


def _describe(model_cfg: dict, num_classes: int, in_chans: int) -> tuple[int, int, tuple[int, int] | None]:
    key = json.dumps([model_cfg, num_classes, in_chans], sort_keys=True, default=str)
    if key not in _SHAPES:
        model = create_model(model_cfg, num_classes, in_chans, device="meta")
        embed = getattr(model, "patch_embed", None)
        fixed = tuple(embed.img_size) if embed is not None and getattr(embed, "strict_img_size", False) else None
        _SHAPES[key] = (num_blocks(model), model.num_features, fixed)
    return _SHAPES[key]


def describe_model(model_cfg: dict, num_classes: int, in_chans: int) -> tuple[int, int]:
    """(depth, width) without allocating weights; memoised, since config checks and job specs both ask."""
    return _describe(model_cfg, num_classes, in_chans)[:2]


def model_footprint(model_cfg: dict, num_classes: int, in_chans: int) -> tuple[int, int, int, int]:
    """(parameters, blocks, tokens of a block's output without prefix tokens, width), without allocating weights."""
    model = create_model(model_cfg, num_classes, in_chans, device="meta")
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", (1, 1))
    return sum(p.numel() for p in model.parameters()), num_blocks(model), int(grid[0] * grid[1]), model.num_features


def input_size(model_cfg: dict, num_classes: int, in_chans: int) -> tuple[int, int] | None:
    """The (height, width) of the images the model is built for, or None where it takes any size."""
    return _describe(model_cfg, num_classes, in_chans)[2]


def num_blocks(model: nn.Module) -> int:
    return len(model.blocks)


def forward_with_blocks(model: nn.Module, x: torch.Tensor, indices: list[int] | None
                        ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits and the raw outputs of the selected blocks (NCHW, prefix tokens dropped, before the final norm).

    `indices=None` gives every block; an empty list runs a plain forward.
    """
    if indices is not None and len(indices) == 0:
        return model(x), []
    final, feats = model.forward_intermediates(x, indices=indices, norm=False, output_fmt="NCHW")
    return model.forward_head(final), feats


def block_tokens(feats: list[torch.Tensor]) -> torch.Tensor:
    """Stack NCHW block outputs to [L, B, N, C], tokens in row-major grid order."""
    return torch.stack([f.flatten(2).transpose(1, 2) for f in feats])


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


# ---------------------------------------------------------------- checkpoints


def build_from_checkpoint(ckpt: dict, device) -> nn.Module:
    """Rebuild a model from a distdyn checkpoint's own architecture record."""
    model = create_model({"model": ckpt["arch"], "overrides": ckpt["overrides"]}, ckpt["num_classes"], ckpt["in_chans"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


RECORD_KEYS = ("model", "arch", "overrides", "num_classes", "in_chans", "epoch")


def checkpoint_record(path: str | os.PathLike) -> dict:
    """A checkpoint that carries its own architecture (what distdyn writes), checked; CheckpointError naming it."""
    ckpt = load_checkpoint(path)
    missing = [k for k in RECORD_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(path, f"has no architecture record (missing {', '.join(missing)}): dumps read the "
                                    "checkpoints distdyn writes (final.pt, epoch_E.pt, "
                                    "results/models/NAME/weights.pt); give a state dict of your own as "
                                    "teacher.checkpoint or extra_models[i].checkpoint")
    if not isinstance(ckpt["model"], dict) or not isinstance(ckpt["overrides"], dict):
        raise CheckpointError(path, f"its 'model' and 'overrides' entries are not dicts; {remedy(path)}")
    return ckpt


def weights_file_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be a weights file, from its first and last bytes only (no loading), or None.

    Accepted: a zip archive (torch.save, .npz; a truncated one loses its central directory at the
    end), a legacy torch pickle, a safetensors file (8-byte header length, then JSON).
    """
    import zipfile

    path = Path(path)
    if not path.is_file():
        return f"file {path} does not exist"
    size = path.stat().st_size
    if size == 0:
        return f"{path} is empty"
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:1] == b"\x80" or (len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size):
        return None
    if zipfile.is_zipfile(path):
        return None
    if head[:2] == b"PK":
        return f"{path} is a truncated or damaged zip archive (torch.save writes zip archives)"
    return f"{path} is not a checkpoint (neither a torch.save zip archive, a legacy torch pickle nor safetensors)"


def state_dict_of(ckpt: dict) -> dict:
    """The model weights of a distdyn checkpoint, a timm/DeiT checkpoint ({'model': ...}) or a bare state dict."""
    for key in ("model", "state_dict"):
        if isinstance(ckpt.get(key), dict):
            return ckpt[key]
    return ckpt


# ---------------------------------------------------------------- CLI


def weights_record(model_cfg: dict, weights: dict, num_classes: int, in_chans: int, name: str, source: str) -> dict:
    """A plain checkpoint dict that `build_from_checkpoint` rebuilds without any config."""
    return {"model": weights, "arch": model_cfg["model"], "overrides": dict(model_cfg.get("overrides", {})),
            "num_classes": num_classes, "in_chans": in_chans, "epoch": 0, "role": "model", "name": name,
            "source": source}


def own_checkpoint(model_cfg: dict, path: str, num_classes: int, in_chans: int, key: str) -> dict:
    """The weights of a checkpoint of your own, checked against the model they are meant for."""
    model = create_model(model_cfg, num_classes, in_chans)
    ckpt = load_checkpoint(path)  # a file that is no checkpoint is named as such, not as a misfit
    try:
        model.load_state_dict(state_dict_of(ckpt))
    except (RuntimeError, ValueError, TypeError) as e:
        raise PretrainedUnavailable(f"{key}.checkpoint", f"{path} does not fit {model_cfg['model']} with overrides "
                                    f"{model_cfg.get('overrides', {})} and {num_classes} classes: "
                                    f"{str(e).strip().splitlines()[0]}") from None
    return model.state_dict()


@cli
def main(argv: list[str] | None = None) -> int:
    """python -m distdyn.models fetch: save a model's weights once as a plain checkpoint, for jobs without internet."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m distdyn.models", description=main.__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="timm's pretrained weights, or a checkpoint of your own, as a plain checkpoint")
    f.add_argument("--name", required=True, help="the model's name in tables (teacher or an extra model)")
    f.add_argument("--key", required=True, help="its config key, named in errors (teacher, extra_models[i])")
    f.add_argument("--model", required=True, help="model config as JSON: {model, overrides}")
    src = f.add_mutually_exclusive_group(required=True)
    src.add_argument("--pretrained", help="JSON: true, a tag, an hf-hub: id or a file path")
    src.add_argument("--checkpoint", help="a checkpoint of your own")
    f.add_argument("--num-classes", type=int, required=True)
    f.add_argument("--in-chans", type=int, required=True)
    f.add_argument("--out", required=True)
    args = p.parse_args(argv)
    model_cfg = json.loads(args.model)
    if args.checkpoint:
        weights = own_checkpoint(model_cfg, args.checkpoint, args.num_classes, args.in_chans, args.key)
        source = args.checkpoint
    else:
        pretrained = json.loads(args.pretrained)
        weights = fetch_pretrained(model_cfg, pretrained, args.num_classes, args.in_chans, args.key)
        source = f"timm:{pretrained_args(model_cfg['model'], pretrained)[0]}"
    atomic_save(weights_record(model_cfg, weights, args.num_classes, args.in_chans, args.name, source), args.out)
    print(f"saved {len(weights)} tensors of {model_cfg['model']} ({source}) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
