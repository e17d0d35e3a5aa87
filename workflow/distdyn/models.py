"""timm models by name, their block outputs, and checkpoint I/O."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import timm
import torch
from torch import nn


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


class PretrainedUnavailable(RuntimeError):
    pass


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
            f"{key}.pretrained: cannot load timm's weights for {name} from {where} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). Run the workflow once on a machine with internet "
            f"(the fetch_teacher_weights rule caches them), or download the weights file and set "
            f"{key}.pretrained: /path/to/weights.pth") from e
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


_SHAPES: dict[str, tuple[int, int]] = {}


def describe_model(model_cfg: dict, num_classes: int, in_chans: int) -> tuple[int, int]:
    """(depth, width) without allocating weights; memoised, since config checks and job specs both ask."""
    key = json.dumps([model_cfg, num_classes, in_chans], sort_keys=True, default=str)
    if key not in _SHAPES:
        model = create_model(model_cfg, num_classes, in_chans, device="meta")
        _SHAPES[key] = (num_blocks(model), model.num_features)
    return _SHAPES[key]


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


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same directory, then rename: a killed job leaves no partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A distdyn checkpoint or a bare state dict, loaded with weights_only=True."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for a bad file
        raise ValueError(f"{path}: not a loadable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj


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
    try:
        model.load_state_dict(state_dict_of(load_checkpoint(path)))
    except (RuntimeError, ValueError) as e:
        raise PretrainedUnavailable(f"{key}.checkpoint: {path} does not fit {model_cfg['model']} with overrides "
                                    f"{model_cfg.get('overrides', {})} and {num_classes} classes: "
                                    f"{str(e).splitlines()[0]}") from e
    return model.state_dict()


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
    try:
        if args.checkpoint:
            weights = own_checkpoint(model_cfg, args.checkpoint, args.num_classes, args.in_chans, args.key)
            source = args.checkpoint
        else:
            pretrained = json.loads(args.pretrained)
            weights = fetch_pretrained(model_cfg, pretrained, args.num_classes, args.in_chans, args.key)
            source = f"timm:{pretrained_args(model_cfg['model'], pretrained)[0]}"
    except PretrainedUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    atomic_save(weights_record(model_cfg, weights, args.num_classes, args.in_chans, args.name, source), args.out)
    print(f"saved {len(weights)} tensors of {model_cfg['model']} ({source}) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
