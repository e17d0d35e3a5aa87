"""Teacher pretraining and student distillation: one loop for both.

    python -m distdyn.train --spec SPEC.json|'{...}' --out DIR [--teacher CKPT] [--resume PATH] [--gpu N]

The spec is what `distdyn.config.teacher_spec` / `student_spec` return. The job
writes DIR/log.jsonl (one JSON line per epoch), DIR/epoch_{E}.pt at the
checkpoint epochs and DIR/final.pt, each atomically. With --resume, the full
training state is saved there after every epoch; a rerun with the same spec
resumes from it and ends with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .data import SeededAugment, TensorSplit, image_folder, load_tensor_splits, tensor_batches
from .hashing import config_hash
from .jobenv import granted_device
from .losses import DistillationLoss
from .models import atomic_save, create_model, forward_with_blocks, load_checkpoint, state_dict_of, unwrap


class NonFiniteLossError(FloatingPointError):
    pass


# ---------------------------------------------------------------- runtime


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1
    amp_dtype: torch.dtype | None = None
    compile: bool = False
    compile_mode: str = "default"

    @property
    def main(self) -> bool:
        return self.rank == 0


def make_runtime(train_cfg: dict, gpu: int, device: str = "auto") -> Runtime:
    """Device, DDP rank and precision for this process; CUDA only when the job was given a GPU and one exists."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device == "auto":
        device = granted_device(gpu)
    if device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    cuda = dev.type == "cuda"
    amp = {"auto": torch.bfloat16 if cuda else None, "bf16": torch.bfloat16, "off": None}[train_cfg["amp"]]
    comp = {"auto": cuda, "on": True, "off": False}[train_cfg["compile"]]
    return Runtime(dev, rank, world, amp, comp, compile_mode(train_cfg, world))


def compile_mode(train_cfg: dict, world: int) -> str:
    """train.compile_mode, except that DDP jobs use the default mode (CUDA graphs would capture its collectives)."""
    return train_cfg["compile_mode"] if world == 1 else "default"


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch, numpy and Python; return the generator that drives shuffling and augmentation."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def log(msg: str) -> None:
    print(f"[distdyn {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data


class Batches:
    """Training and evaluation batches for in-memory or ImageFolder data, sharded across DDP ranks."""

    def __init__(self, data_cfg: dict, train_cfg: dict, rt: Runtime, img_size: int | None = None):
        self.cfg, self.train_cfg, self.rt = data_cfg, train_cfg, rt
        if train_cfg["batch_size"] % rt.world:
            raise ValueError(f"train.batch_size {train_cfg['batch_size']} is not divisible by {rt.world} processes")
        if data_cfg["source"] == "imagefolder":
            size = data_cfg["img_size"] or img_size or 224
            self.train_set = SeededAugment(image_folder(data_cfg, True, size))
            self.val_set = image_folder(data_cfg, False, size)
            self.num_classes, self.in_chans = len(self.train_set.classes), 3
        else:
            self.train_set, self.val_set, self.num_classes = load_tensor_splits(data_cfg)
            self.in_chans = self.train_set.images.shape[1]

    @property
    def in_memory(self) -> bool:
        return isinstance(self.train_set, TensorSplit)

    def train(self, gen: torch.Generator, epoch: int):
        bs = self.train_cfg["batch_size"]
        drop = len(self.train_set) > bs
        if self.in_memory:
            if self.rt.device.type == "cuda" and self.train_set.images.device != self.rt.device:
                # Small datasets live on the GPU: no loader stalls.
                self.train_set = TensorSplit(self.train_set.images.to(self.rt.device), self.train_set.labels.to(self.rt.device))
            yield from tensor_batches(self.train_set, bs, shuffle=True, gen=gen, aug=self.cfg["augment"],
                                      drop_last=drop, shard=(self.rt.rank, self.rt.world))
            return
        from torch.utils.data import DataLoader, DistributedSampler

        # One permutation per epoch, of which rank r takes every world-th index, and augmentation seeded
        # per image: a global batch holds the same images, augmented alike, for any number of processes.
        seed = int(torch.randint(0, 2**31, (1,), generator=gen))
        sampler = DistributedSampler(self.train_set, self.rt.world, self.rt.rank, shuffle=True, seed=seed,
                                     drop_last=True)
        sampler.set_epoch(epoch)
        self.train_set.epoch_seed = seed + epoch
        loader = DataLoader(self.train_set, batch_size=bs // self.rt.world, sampler=sampler, drop_last=drop,
                            num_workers=self.cfg["num_workers"], pin_memory=self.rt.device.type == "cuda")
        yield from loader

    def val(self):
        bs = self.train_cfg["eval_batch_size"]
        if self.in_memory:
            yield from tensor_batches(self.val_set, bs)
            return
        from torch.utils.data import DataLoader

        yield from DataLoader(self.val_set, batch_size=bs, shuffle=False, num_workers=self.cfg["num_workers"])


# ---------------------------------------------------------------- evaluation


@torch.inference_mode()
def evaluate(model: nn.Module, batches, rt: Runtime) -> dict:
    """Top-1/top-5 accuracy (%) and plain CE on the validation split."""
    model.eval()
    n = loss = c1 = c5 = 0.0
    for x, y in batches:
        x, y = x.to(rt.device, non_blocking=True), y.to(rt.device, non_blocking=True)
        with _autocast(rt):
            logits = model(x)
        logits = logits.float()
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        c1 += (top[:, 0] == y).sum().item()
        c5 += (top == y[:, None]).any(dim=1).sum().item()
        n += len(y)
    return {"test_loss": loss / n, "test_acc1": 100.0 * c1 / n, "test_acc5": 100.0 * c5 / n}


def _autocast(rt: Runtime):
    if rt.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(rt.device.type, dtype=rt.amp_dtype)


# ---------------------------------------------------------------- state


@dataclass
class RunState:
    epoch: int = 0
    log_lines: list[str] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)


def _rng_state(gen: torch.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "gen": gen.get_state()}


def _set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["gen"])


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        import shutil

        shutil.copy2(src, dst)


class Resume:
    """Full training state kept outside the rule's outputs, tied to the spec by its hash.

    Epoch checkpoints are hard-linked beside it, so Snakemake deleting the
    outputs of a killed job loses nothing.
    """

    def __init__(self, path: str | None, spec_hash: str):
        self.path = Path(path) if path else None
        self.hash = spec_hash

    def load(self) -> dict | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            log(f"resume state {self.path} is unreadable ({e}); starting from scratch")
            return None
        if state.get("spec_hash") != self.hash:
            log(f"resume state {self.path} is stale (spec hash {state.get('spec_hash')} != {self.hash}); ignored")
            return None
        log(f"resuming from {self.path} after epoch {state['epoch']}")
        return state

    def save(self, state: dict) -> None:
        if self.path is not None:
            atomic_save({**state, "spec_hash": self.hash}, self.path)

    def keep(self, ckpt: Path) -> None:
        if self.path is not None:
            _link_or_copy(ckpt, self.path.parent / f"{self.path.stem}.{ckpt.name}")

    def restore(self, ckpt: Path) -> None:
        kept = self.path.parent / f"{self.path.stem}.{ckpt.name}" if self.path else None
        if kept is not None and kept.is_file() and not ckpt.is_file():
            _link_or_copy(kept, ckpt)

    def clear(self) -> None:
        if self.path is None:
            return
        for p in self.path.parent.glob(f"{self.path.stem}.*"):
            p.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)


# ---------------------------------------------------------------- building blocks


def model_record(spec_model: dict, num_classes: int, in_chans: int) -> dict:
    return {"arch": spec_model["model"], "overrides": dict(spec_model.get("overrides", {})),
            "num_classes": num_classes, "in_chans": in_chans}


def build_from_checkpoint(ckpt: dict, device) -> nn.Module:
    """Rebuild a model from a distdyn checkpoint's own architecture record."""
    model = create_model({"model": ckpt["arch"], "overrides": ckpt["overrides"]}, ckpt["num_classes"], ckpt["in_chans"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


def load_teacher(path: str, spec: dict, num_classes: int, in_chans: int, device) -> nn.Module:
    ckpt = load_checkpoint(path)
    if "arch" in ckpt:
        return build_from_checkpoint(ckpt, device)
    model = create_model(spec["teacher_model"], num_classes, in_chans)
    model.load_state_dict(state_dict_of(ckpt))
    return model.to(device).eval()


def make_criterion(spec: dict, widths: tuple[int, int]) -> DistillationLoss:
    s = spec.get("setting") or {"method": "none", "pairs": [], "alpha": 0.0, "tau": 1.0, "feature_weight": 0.0,
                                "label_smoothing": spec.get("label_smoothing", 0.1), "projector_trainable": False}
    return DistillationLoss(s["method"], s["pairs"], alpha=s["alpha"], tau=s["tau"], feature_weight=s["feature_weight"],
                            label_smoothing=s["label_smoothing"], widths=widths,
                            projector_trainable=s["projector_trainable"])


def make_optimizer(model: nn.Module, criterion: nn.Module, train_cfg: dict, rt: Runtime):
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    kwargs = {"fused": True} if rt.device.type == "cuda" and train_cfg["opt"] in ("adamw", "adam") else {}
    opt = create_optimizer_v2(unwrap(model), train_cfg["opt"], lr=train_cfg["lr"],
                              weight_decay=train_cfg["weight_decay"], **kwargs)
    extra = [p for p in criterion.parameters() if p.requires_grad]
    if extra:
        opt.add_param_group({"params": extra, "weight_decay": 0.0})
    sched = CosineLRScheduler(opt, t_initial=max(train_cfg["epochs"], 1), lr_min=train_cfg["min_lr"],
                              warmup_t=train_cfg["warmup_epochs"], warmup_lr_init=train_cfg["warmup_lr"])
    return opt, sched


def check_finite(terms: dict[str, float], spec: dict, epoch: int) -> None:
    for name, value in terms.items():
        if not np.isfinite(value):
            raise NonFiniteLossError(f"non-finite {name} loss ({value}) in setting {spec['name']!r}, "
                                     f"seed {spec['seed']}, epoch {epoch}")


# ---------------------------------------------------------------- the loop


def train_one_epoch(student, teacher, criterion, opt, batches: Batches, gen, rt: Runtime, spec: dict, epoch: int) -> dict:
    """One pass over the training data; `student` and `teacher` are BlockForward modules (possibly wrapped)."""
    student.train()
    criterion.train()
    # Loss sums stay on the device: no host sync per step; finiteness is checked once per epoch.
    sums = torch.zeros(5, dtype=torch.float64, device=rt.device)
    for x, y in batches.train(gen, epoch):
        x, y = x.to(rt.device, non_blocking=True), y.to(rt.device, non_blocking=True)
        logits_t = feats_t = None
        if teacher is not None:
            with torch.inference_mode(), _autocast(rt):
                logits_t, ft = teacher(x)
            # Inference tensors cannot be saved for backward: clone them out of inference mode.
            logits_t = logits_t.clone()
            feats_t = {k: v.clone() for k, v in ft.items()}
        with _autocast(rt):
            logits_s, feats_s = student(x)
        terms = criterion(logits_s, y, logits_t, feats_s, feats_t)
        opt.zero_grad(set_to_none=True)
        terms.total.backward()
        opt.step()
        b = len(y)
        step = torch.stack([terms.total, terms.base, terms.feat, terms.dist]).detach().double()
        sums[:4] += step * b
        sums[4] += b
    if rt.world > 1:
        torch.distributed.all_reduce(sums)
    total, base, feat, dist, count = sums.tolist()
    check_finite({"total": total, "base": base, "feat": feat, "dist": dist}, spec, epoch)
    return {"train_loss": total / count, "train_loss_base": base / count, "train_loss_feat": feat / count,
            "train_loss_dist": dist / count, "images": int(count)}


class BlockForward(nn.Module):
    """Logits and selected block outputs from forward(), so DDP and torch.compile wrap the whole step."""

    def __init__(self, model: nn.Module, indices: list[int]):
        super().__init__()
        self.model, self.indices = model, indices

    def forward(self, x):
        logits, feats = forward_with_blocks(self.model, x, self.indices)
        return logits, dict(zip(self.indices, feats))


def compiled(module: nn.Module | None, rt: Runtime) -> nn.Module | None:
    """`module` under torch.compile in the runtime's mode when compiling is on (None stays None)."""
    if module is None or not rt.compile:
        return module
    return torch.compile(module, mode=rt.compile_mode)


def checkpoint_dict(model, spec: dict, record: dict, epoch: int, metrics: dict) -> dict:
    return {"model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}, **record,
            "role": spec["role"], "name": spec["name"], "seed": spec["seed"], "epoch": epoch,
            "test_acc1": metrics["test_acc1"], "spec_hash": config_hash(spec), "distdyn_version": __version__}


def run(spec: dict, out_dir: str | Path, *, teacher_path: str | None = None, resume_path: str | None = None,
        gpu: int = 0, device: str = "auto") -> list[dict]:
    """Train one model (a teacher with `checkpoint` starts from it; with 0 epochs it is imported and evaluated).

    Returns the log records.
    """
    out = Path(out_dir)
    train_cfg = spec["train"]
    rt = make_runtime(train_cfg, gpu, device)
    torch.set_num_threads(train_cfg["threads"])
    gen = seed_everything(spec["seed"])
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
        log(f"{spec['role']} {spec['name']!r} seed {spec['seed']}: device {rt.device}"
            f"{f' x{rt.world} (DDP)' if rt.world > 1 else ''}, amp {rt.amp_dtype}, compile {rt.compile and rt.compile_mode}, "
            f"threads {torch.get_num_threads()}")
    img_size = spec["model"].get("overrides", {}).get("img_size")
    batches = Batches(spec["data"], train_cfg, rt, img_size)
    record = model_record(spec["model"], batches.num_classes, batches.in_chans)
    model = create_model(spec["model"], batches.num_classes, batches.in_chans).to(rt.device)
    log_path = out / "log.jsonl"

    if spec["role"] == "teacher" and spec.get("checkpoint"):
        try:
            model.load_state_dict(state_dict_of(load_checkpoint(spec["checkpoint"])))
        except (RuntimeError, ValueError) as e:
            raise ValueError(f"teacher.checkpoint {spec['checkpoint']}: does not fit {spec['model']['model']} "
                             f"with overrides {spec['model'].get('overrides')}: {e}") from e
    if spec["role"] == "teacher" and spec.get("checkpoint") and train_cfg["epochs"] == 0:
        metrics = evaluate(model, batches.val(), rt)
        line = {"epoch": 0, "lr": None, "train_loss": None, "train_loss_base": None, "train_loss_feat": None,
                "train_loss_dist": None, **metrics, "seconds": 0.0, "images_per_s": None,
                "n_parameters": sum(p.numel() for p in model.parameters()), "source": spec["checkpoint"]}
        if rt.main:
            _write_lines(log_path, [json.dumps(line)])
            atomic_save(checkpoint_dict(model, spec, record, 0, metrics), out / "final.pt")
            log(f"imported teacher {spec['checkpoint']}: top-1 {metrics['test_acc1']:.2f}%")
        return [line]

    teacher = None
    widths = (model.num_features, 0)
    if spec.get("setting", {}).get("method", "none") != "none":
        if teacher_path is None:
            raise ValueError(f"setting {spec['name']!r} needs a teacher checkpoint (--teacher)")
        teacher = load_teacher(teacher_path, spec, batches.num_classes, batches.in_chans, rt.device)
        teacher.requires_grad_(False)
        widths = (widths[0], teacher.num_features)
    criterion = make_criterion(spec, widths).to(rt.device)
    opt, sched = make_optimizer(model, criterion, train_cfg, rt)

    # Every rank loads the saved state; only rank 0 writes it.
    resume = Resume(resume_path, config_hash(spec))
    state = RunState()
    saved = resume.load()
    if saved is not None:
        model.load_state_dict(saved["model"])
        criterion.load_state_dict(saved["criterion"])
        opt.load_state_dict(saved["optimizer"])
        _set_rng_state(saved["rng"], gen)
        state = RunState(saved["epoch"], list(saved["log_lines"]), list(saved["checkpoints"]))
        if rt.main:
            for name in state.checkpoints:
                resume.restore(out / name)
    student = BlockForward(model, criterion.student_indices)
    if rt.world > 1:
        student = nn.parallel.DistributedDataParallel(student, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    teacher_fwd = BlockForward(teacher, criterion.teacher_indices) if teacher is not None else None
    student, teacher_fwd = compiled(student, rt), compiled(teacher_fwd, rt)
    if rt.main:
        _write_lines(log_path, state.log_lines)

    epochs = train_cfg["epochs"]
    n_params = sum(p.numel() for p in model.parameters())
    progress = _progress(range(state.epoch, epochs), rt)
    for e in progress:
        sched.step(e if train_cfg["lr_step"] == "exact" else max(e - 1, 0))
        lr = opt.param_groups[0]["lr"]
        t0 = time.perf_counter()
        tr = train_one_epoch(student, teacher_fwd, criterion, opt, batches, gen, rt, spec, e + 1)
        seconds = time.perf_counter() - t0
        metrics = evaluate(model, batches.val(), rt)
        line = {"epoch": e + 1, "lr": lr, **{k: v for k, v in tr.items() if k != "images"}, **metrics,
                "seconds": round(seconds, 3), "images_per_s": round(tr["images"] / seconds, 1), "n_parameters": n_params}
        state.log_lines.append(json.dumps(line))
        state.epoch = e + 1
        if rt.main:
            _append_line(log_path, state.log_lines[-1])
            if e + 1 in spec["checkpoint_epochs"]:
                ckpt = out / f"epoch_{e + 1}.pt"
                atomic_save(checkpoint_dict(model, spec, record, e + 1, metrics), ckpt)
                resume.keep(ckpt)
                state.checkpoints.append(ckpt.name)
            if e + 1 < epochs:
                resume.save({"model": model.state_dict(), "criterion": criterion.state_dict(),
                             "optimizer": opt.state_dict(), "rng": _rng_state(gen), "epoch": state.epoch,
                             "log_lines": state.log_lines, "checkpoints": state.checkpoints})
            _report(progress, line)
    if rt.main:
        atomic_save(checkpoint_dict(model, spec, record, epochs, metrics), out / "final.pt")
        resume.clear()
    return [json.loads(s) for s in state.log_lines]


def _write_lines(path: Path, lines: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(s + "\n" for s in lines))
    os.replace(tmp, path)


def _append_line(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


def _progress(it, rt: Runtime):
    if rt.main and sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(it, desc="epochs", unit="ep")
    return it


def _report(progress, line: dict) -> None:
    msg = (f"epoch {line['epoch']}: loss {line['train_loss']:.4f} (base {line['train_loss_base']:.4f}, "
           f"feat {line['train_loss_feat']:.4f}, dist {line['train_loss_dist']:.4f}), "
           f"top-1 {line['test_acc1']:.2f}%, {line['images_per_s']:.0f} img/s")
    if hasattr(progress, "set_postfix_str"):
        progress.set_postfix_str(f"top-1 {line['test_acc1']:.1f}%")
    else:
        log(msg)


# ---------------------------------------------------------------- CLI


def read_spec(text: str) -> dict:
    """A spec given inline as JSON or as a path to a JSON file."""
    text = text.strip()
    if text.startswith("{"):
        return json.loads(text)
    with open(text) as f:
        return json.load(f)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distdyn.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, help="job spec: inline JSON or a JSON file")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--teacher", help="teacher checkpoint (students)")
    p.add_argument("--resume", help="resume-state file, outside the outputs")
    p.add_argument("--gpu", type=int, default=0, help="GPUs granted to this job (0: CPU)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, help="CPU threads (default: the spec's train.threads)")
    args = p.parse_args(argv)
    spec = read_spec(args.spec)
    if args.threads:
        spec["train"]["threads"] = args.threads
    try:
        run(spec, args.out, teacher_path=args.teacher, resume_path=args.resume,
            gpu=args.gpu, device=args.device)
    except NonFiniteLossError as e:
        log(f"error: {e}")
        return 3
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
