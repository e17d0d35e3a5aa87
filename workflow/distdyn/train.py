"""Teacher pretraining and student distillation: one loop for both.

    python -m distdyn.train --spec SPEC.json|'{...}' --out DIR [--teacher CKPT] [--resume PATH] [--gpu N]
    python -m distdyn.train --group MEMBERS.json|'[...]' --teacher CKPT [--store DIR] [--code TEXT] [--gpu N]

The spec is what `distdyn.config.teacher_spec` / `student_spec` return. The job
writes DIR/log.jsonl (one JSON line per epoch), DIR/epoch_{E}.pt at the
checkpoint epochs and DIR/final.pt, each atomically. With --resume, the full
training state is saved there after every epoch; a rerun with the same spec
resumes from it and ends with the same weights as an uninterrupted run.

--group trains several students of one seed together (a list of {spec, out, resume, ready}):
they see the same batches, so each batch gets one teacher forward (the logits and the
blocks some member aligns to) and then every member's own step. Each member keeps its
own model, optimizer, RNG stream (dropout, drop-path), log lines, checkpoints and
resume state, so on CPU it ends bit-identical to training it alone. With --store,
finished members are published there (`distdyn.store`) instead of into their output
folders, members already stored are skipped, and the student jobs restore from it;
each member's `ready` file (if given) receives its status (trained, stored, adopted, failed).
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
from .errors import REMAKE, CheckpointError, cli, first_line
from .hashing import config_hash
from .io import read_spec, write_lines, write_text
from .jobenv import granted_device, stamp
from .losses import DistillationLoss, needs_teacher
from .models import (atomic_save, build_from_checkpoint, create_model, forward_with_blocks, load_checkpoint,
                     state_dict_of, unwrap)
from .store import adopt, entry_dir, job_key, publish, publish_failure, read as read_entry, staging_dir


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
    print(f"{stamp()} {msg}", file=sys.stderr, flush=True)


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
                self.train_set = TensorSplit(self.train_set.images.to(self.rt.device),
                                             self.train_set.labels.to(self.rt.device))
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
        # The loader's own generator (its worker seeds): without one it would draw from torch's global RNG,
        # which is the model's (dropout) stream, and students sharing these batches each have their own.
        loader = DataLoader(self.train_set, batch_size=bs // self.rt.world, sampler=sampler, drop_last=drop,
                            num_workers=self.cfg["num_workers"], pin_memory=self.rt.device.type == "cuda",
                            generator=torch.Generator().manual_seed(seed + epoch))
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


def load_teacher(path: str, spec: dict, num_classes: int, in_chans: int, device) -> nn.Module:
    ckpt = load_checkpoint(path)
    want = spec["teacher_model"]
    if "arch" in ckpt and (ckpt["arch"], ckpt.get("overrides")) != (want["model"], want.get("overrides", {})):
        raise CheckpointError(path, f"is a checkpoint of {ckpt['arch']} with overrides {ckpt.get('overrides')}, not of "
                                    f"the configured teacher {want['model']} "
                                    f"with overrides {want.get('overrides', {})}; "
                                    f"{REMAKE}")
    try:
        if "arch" in ckpt:
            return build_from_checkpoint(ckpt, device)
        model = create_model(want, num_classes, in_chans)
        model.load_state_dict(state_dict_of(ckpt))
    except (KeyError, RuntimeError, TypeError) as e:
        raise CheckpointError(path, f"does not fit the teacher {want['model']} ({first_line(e)}); {REMAKE}") from None
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


# ---------------------------------------------------------------- members: one run each, alone or in a group


def reads_teacher(spec: dict) -> bool:
    """Whether a job spec's setting reads the teacher (a teacher's own spec has no setting)."""
    return needs_teacher(spec.get("setting", {}).get("method", "none"))


class MemberRNG:
    """A run's own torch RNG stream (CPU, and CUDA when it trains there): its initial weights, a projector's,
    dropout and drop-path. It is swapped in around each of the run's steps, so runs training in one job
    never draw from each other's stream, nor from the data generator (shuffling, augmentation)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.state = self.capture()

    def capture(self) -> dict:
        state = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load(self, saved: dict) -> None:
        """From a resume state (one saved on CPU keeps the CUDA stream this run started with)."""
        self.state = {**self.state, **{k: v for k, v in saved.items() if k in self.state}}

    @contextlib.contextmanager
    def active(self):
        torch.set_rng_state(self.state["torch"])
        if "cuda" in self.state:
            torch.cuda.set_rng_state(self.state["cuda"], self.device)
        try:
            yield
        finally:
            self.state = self.capture()


@dataclass
class Member:
    """One training run (a teacher, or one setting × seed) and everything that is its own."""

    spec: dict
    out: Path
    resume: Resume
    model: nn.Module
    criterion: DistillationLoss
    opt: object
    sched: object
    fwd: nn.Module  # BlockForward of the model, under DDP and torch.compile as configured
    rng: MemberRNG
    record: dict
    gen_state: torch.Tensor  # the data generator's state at the start of its next epoch
    state: RunState
    job_key: str | None = None
    prefix: str = ""  # its name in the log lines of a group job
    lines: list[str] = field(default_factory=list)  # its own log lines
    metrics: dict | None = None
    error: Exception | None = None

    def log(self, msg: str) -> None:
        now = stamp()
        self.lines.append(f"{now} {msg}")
        print(f"{now} {self.prefix}{msg}", file=sys.stderr, flush=True)

    def records(self) -> list[dict]:
        return [json.loads(s) for s in self.state.log_lines]


def load_shared_teacher(teacher_path: str | None, specs: list[dict], batches: Batches, rt: Runtime):
    """The frozen teacher of the runs that need one (None if none does). Building it draws from no run's
    RNG stream, so a run starts from the same state whether or not it shares the teacher with others."""
    need = [s for s in specs if reads_teacher(s)]
    if not need:
        return None
    if teacher_path is None:
        raise ValueError(f"setting {need[0]['name']!r} needs a teacher checkpoint (--teacher)")
    with torch.random.fork_rng(devices=[]):
        teacher = load_teacher(teacher_path, need[0], batches.num_classes, batches.in_chans, rt.device)
    return teacher.requires_grad_(False)


def shared_teacher_forward(teacher, members: list[Member], rt: Runtime):
    """One forward of the teacher for all members: its logits and the blocks some member aligns to."""
    if teacher is None or not any(reads_teacher(m.spec) for m in members):
        return None
    indices = sorted({t for m in members for t in m.criterion.teacher_indices})
    return compiled(BlockForward(teacher, indices), rt)


def build_member(spec: dict, out: Path, resume_path: str | None, rt: Runtime, batches: Batches, teacher,
                 gen: torch.Generator, *, model: nn.Module | None = None, record: dict | None = None,
                 job_key: str | None = None, prefix: str = "", header: str | None = None) -> Member:
    """A run's model, loss, optimizer and resume state, as when it trains alone.

    Its RNG stream starts from torch.manual_seed(seed) (`model`, if given, was built right after
    seeding); with a resume state it continues from the saved epoch, RNG and data-generator state.
    """
    if model is None:
        torch.manual_seed(spec["seed"])
        model = create_model(spec["model"], batches.num_classes, batches.in_chans).to(rt.device)
    record = record or model_record(spec["model"], batches.num_classes, batches.in_chans)
    widths = (model.num_features, teacher.num_features if reads_teacher(spec) else 0)
    criterion = make_criterion(spec, widths).to(rt.device)
    opt, sched = make_optimizer(model, criterion, spec["train"], rt)
    rng = MemberRNG(rt.device)
    member = Member(spec, Path(out), Resume(resume_path, config_hash(spec)), model, criterion, opt, sched, None, rng,
                    record, gen.get_state(), RunState(), job_key, prefix)
    if header and rt.main:
        member.log(header)
    # Every rank loads the saved state; only rank 0 writes it.
    saved = member.resume.load()
    if saved is not None:
        model.load_state_dict(saved["model"])
        criterion.load_state_dict(saved["criterion"])
        opt.load_state_dict(saved["optimizer"])
        rng.load(saved["rng"])
        member.gen_state = saved["rng"]["gen"]
        member.state = RunState(saved["epoch"], list(saved["log_lines"]), list(saved["checkpoints"]))
        if prefix and rt.main:
            member.log(f"resumed after epoch {saved['epoch']}")
        if rt.main:
            for name in member.state.checkpoints:
                member.resume.restore(member.out / name)
    fwd = BlockForward(model, criterion.student_indices)
    if rt.world > 1:
        fwd = nn.parallel.DistributedDataParallel(fwd,
                                                  device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    member.fwd = compiled(fwd, rt)
    return member


def teacher_outputs(teacher, x: torch.Tensor, rt: Runtime):
    """The teacher's logits and block outputs for a batch, once for every member that steps on it."""
    with torch.inference_mode(), _autocast(rt):
        logits_t, ft = teacher(x)
    # Inference tensors cannot be saved for backward: clone them out of inference mode.
    return logits_t.clone(), {k: v.clone() for k, v in ft.items()}


def member_step(fwd, criterion, opt, x, y, logits_t, feats_t, rt: Runtime) -> torch.Tensor:
    """One optimisation step of one run; its loss terms (total, base, feat, dist), still on the device."""
    with _autocast(rt):
        logits_s, feats_s = fwd(x)
    terms = criterion(logits_s, y, logits_t, feats_s, feats_t)
    opt.zero_grad(set_to_none=True)
    terms.total.backward()
    opt.step()
    return torch.stack([terms.total, terms.base, terms.feat, terms.dist]).detach().double()


def train_one_epoch(members: list[Member], teacher, batches: Batches, gen, rt: Runtime,
                    epoch: int) -> list[list[float]]:
    """One pass over the training data for members at the same epoch (they share `gen`'s batches): per
    batch one teacher forward, then each member's step on its own RNG stream. Per member
    [total, base, feat, dist, images] summed over the epoch (and over DDP ranks)."""
    for m in members:
        m.fwd.train()
        m.criterion.train()
    # Loss sums stay on the device: no host sync per step; finiteness is checked once per epoch.
    sums = torch.zeros(len(members), 5, dtype=torch.float64, device=rt.device)
    for x, y in batches.train(gen, epoch):
        x, y = x.to(rt.device, non_blocking=True), y.to(rt.device, non_blocking=True)
        logits_t, feats_t = teacher_outputs(teacher, x, rt) if teacher is not None else (None, None)
        b = len(y)
        for i, m in enumerate(members):
            with m.rng.active():
                step = member_step(m.fwd, m.criterion, m.opt, x, y, logits_t, feats_t, rt)
            sums[i, :4] += step * b
            sums[i, 4] += b
    if rt.world > 1:
        torch.distributed.all_reduce(sums)
    return sums.tolist()


def train_members(members: list[Member], teacher, batches: Batches, gen, rt: Runtime, on_done=None) -> None:
    """Train every member to its last epoch (a group job's or a single run's loop).

    Members at the same epoch train together; after a kill between two members' saves some are an
    epoch ahead, and the others catch up first (each resume state holds its data generator's state).
    A member whose loss turns non-finite stops with `error` set; the others go on. `on_done(member)`
    runs on rank 0 for each member that finished (after its final.pt, before its resume state is
    cleared) or failed.
    """
    epochs = members[0].spec["train"]["epochs"]
    lr_step = members[0].spec["train"]["lr_step"]
    bar = _progress_bar(epochs, members[0].state.epoch, rt) if len(members) == 1 else None
    if rt.main:
        for m in members:
            write_lines(m.state.log_lines, m.out / "log.jsonl")
    while True:
        active = [m for m in members if m.error is None and m.state.epoch < epochs]
        if not active:
            break
        first = min(active, key=lambda m: m.state.epoch)
        cohort = [m for m in active if m.state.epoch == first.state.epoch and torch.equal(m.gen_state, first.gen_state)]
        e = first.state.epoch
        gen.set_state(first.gen_state)
        for m in cohort:
            m.sched.step(e if lr_step == "exact" else max(e - 1, 0))
        lrs = [m.opt.param_groups[0]["lr"] for m in cohort]
        t0 = time.perf_counter()
        sums = train_one_epoch(cohort, teacher, batches, gen, rt, e + 1)
        seconds = (time.perf_counter() - t0) / len(cohort)  # each member's share of the epoch
        gen_state = gen.get_state()
        for m, lr, (total, base, feat, dist, count) in zip(cohort, lrs, sums):
            m.gen_state = gen_state
            try:
                check_finite({"total": total, "base": base, "feat": feat, "dist": dist}, m.spec, e + 1)
            except NonFiniteLossError as err:
                m.error = err
                if len(members) > 1 and rt.main:
                    m.log(f"error: {err}")
                if rt.main and on_done is not None:
                    on_done(m)
                continue
            m.metrics = evaluate(m.model, batches.val(), rt)
            line = {"epoch": e + 1, "lr": lr, "train_loss": total / count, "train_loss_base": base / count,
                    "train_loss_feat": feat / count, "train_loss_dist": dist / count, **m.metrics,
                    "seconds": round(seconds, 3), "images_per_s": round(count / seconds, 1),
                    "n_parameters": sum(p.numel() for p in m.model.parameters())}
            _end_epoch(m, line, rt)
            if rt.main:
                _report(bar, m, line)
    if rt.main:
        for m in members:
            if m.error is None:
                atomic_save(checkpoint_dict(m.model, m.spec, m.record, epochs, m.metrics, m.job_key),
                            m.out / "final.pt")
                if on_done is not None:
                    on_done(m)
                m.resume.clear()


def _end_epoch(m: Member, line: dict, rt: Runtime) -> None:
    """The epoch's log line, checkpoint and resume state of one member."""
    epochs, e = m.spec["train"]["epochs"], line["epoch"]
    m.state.log_lines.append(json.dumps(line))
    m.state.epoch = e
    if not rt.main:
        return
    _append_line(m.out / "log.jsonl", m.state.log_lines[-1])
    if e in m.spec["checkpoint_epochs"]:
        ckpt = m.out / f"epoch_{e}.pt"
        atomic_save(checkpoint_dict(m.model, m.spec, m.record, e, m.metrics, m.job_key), ckpt)
        m.resume.keep(ckpt)
        m.state.checkpoints.append(ckpt.name)
    if e < epochs:
        m.resume.save({"model": m.model.state_dict(), "criterion": m.criterion.state_dict(),
                       "optimizer": m.opt.state_dict(), "rng": {**m.rng.state, "gen": m.gen_state}, "epoch": e,
                       "log_lines": m.state.log_lines, "checkpoints": m.state.checkpoints})


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


def checkpoint_dict(model, spec: dict, record: dict, epoch: int, metrics: dict, job_key: str | None = None) -> dict:
    """A checkpoint; `job_key` (distdyn.store.job_key of the job's spec and code) lets a shared-teacher job
    recognise a finished run in its output folder."""
    return {"model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}, **record,
            "role": spec["role"], "name": spec["name"], "seed": spec["seed"], "epoch": epoch,
            "test_acc1": metrics["test_acc1"], "spec_hash": config_hash(spec), "job_key": job_key,
            "distdyn_version": __version__}


def run(spec: dict, out_dir: str | Path, *, teacher_path: str | None = None, resume_path: str | None = None,
        gpu: int = 0, device: str = "auto", key: str | None = None) -> list[dict]:
    """Train one model (a teacher with `checkpoint` starts from it; with 0 epochs it is imported and evaluated).

    `key` is recorded in its checkpoints (default: distdyn.store.job_key of the spec without code).
    Returns the log records.
    """
    out = Path(out_dir)
    train_cfg = spec["train"]
    rt = make_runtime(train_cfg, gpu, device)
    torch.set_num_threads(train_cfg["threads"])
    gen = seed_everything(spec["seed"])
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
        log(_run_header(spec, rt))
    img_size = spec["model"].get("overrides", {}).get("img_size")
    batches = Batches(spec["data"], train_cfg, rt, img_size)
    record = model_record(spec["model"], batches.num_classes, batches.in_chans)
    model = create_model(spec["model"], batches.num_classes, batches.in_chans).to(rt.device)
    log_path = out / "log.jsonl"

    if spec["role"] == "teacher" and spec.get("checkpoint"):
        ckpt = load_checkpoint(spec["checkpoint"])  # a file that is no checkpoint is named as such, not as a misfit
        try:
            model.load_state_dict(state_dict_of(ckpt))
        except (RuntimeError, ValueError, TypeError) as e:
            raise CheckpointError(f"teacher.checkpoint {spec['checkpoint']}", f"does not fit {spec['model']['model']} "
                                  f"with overrides {spec['model'].get('overrides')}: {first_line(e)}") from None
    if spec["role"] == "teacher" and spec.get("checkpoint") and train_cfg["epochs"] == 0:
        metrics = evaluate(model, batches.val(), rt)
        line = {"epoch": 0, "lr": None, "train_loss": None, "train_loss_base": None, "train_loss_feat": None,
                "train_loss_dist": None, **metrics, "seconds": 0.0, "images_per_s": None,
                "n_parameters": sum(p.numel() for p in model.parameters()), "source": spec["checkpoint"]}
        if rt.main:
            write_lines([json.dumps(line)], log_path)
            atomic_save(checkpoint_dict(model, spec, record, 0, metrics), out / "final.pt")
            log(f"imported teacher {spec['checkpoint']}: top-1 {metrics['test_acc1']:.2f}%")
        return [line]

    teacher = load_shared_teacher(teacher_path, [spec], batches, rt)
    key = key if key is not None else job_key(spec, None)
    member = build_member(spec, out, resume_path, rt, batches, teacher, gen, model=model, record=record, job_key=key)
    train_members([member], shared_teacher_forward(teacher, [member], rt), batches, gen, rt)
    if member.error is not None:
        raise member.error
    return member.records()


def _run_header(spec: dict, rt: Runtime) -> str:
    """A run's first log line: what it is and where and how it trains."""
    return (f"{spec['role']} {spec['name']!r} seed {spec['seed']}: device {rt.device}"
            f"{f' x{rt.world} (DDP)' if rt.world > 1 else ''}, amp {rt.amp_dtype}, "
            f"compile {rt.compile and rt.compile_mode}, threads {torch.get_num_threads()}")


STREAM_KEYS = ("seed", "data", "train")  # what decides a run's batches: equal for the members of a group


def run_group(members: list[dict], *, teacher_path: str | None = None, store: str | None = None,
              code: str | None = None, gpu: int = 0, device: str = "auto", threads: int | None = None) -> dict:
    """Train students that see the same batches (one seed) together: one teacher forward per batch.

    `members`: [{"spec": ..., "out": DIR, "resume": PATH, "ready": FILE}, ...] (resume and ready optional).
    Without `store`, each member writes its
    files into its `out`, exactly as `run` would. With `store`, a member already stored there under its
    key (distdyn.store.job_key of spec and `code`), or finished in its `out` under the same key, is
    skipped; the others train in a staging folder of the store and are published there when done.
    Returns {setting: status} (trained, stored, adopted, failed), which each member's `ready` file
    receives as JSON at the end (the group rule's outputs).
    """
    specs = [m["spec"] for m in members]
    for s in specs[1:]:
        diff = [k for k in STREAM_KEYS if s[k] != specs[0][k]]
        if diff:
            raise ValueError(f"settings {specs[0]['name']!r} and {s['name']!r} cannot train together: "
                             f"their {', '.join(diff)} differ")
    keys = [job_key(s, code) for s in specs]
    status, todo = {}, []
    for m, key in zip(members, keys):
        entry = entry_dir(store, m["spec"], code) if store else None
        if entry is not None and read_entry(entry) is not None:
            status[m["spec"]["name"]] = "stored"
        elif entry is not None and _finished_in(Path(m["out"]), key, _run_files(m["spec"])):
            status[m["spec"]["name"]] = "adopted"
        else:
            todo.append((m, key, entry))
    if threads:
        for m, _, _ in todo:
            m["spec"] = {**m["spec"], "train": {**m["spec"]["train"], "threads": threads}}
    train_cfg = specs[0]["train"]
    rt = make_runtime(train_cfg, gpu, device)
    header = (f"students of seed {specs[0]['seed']} sharing one teacher forward: "
              f"{', '.join(m['spec']['name'] for m, _, _ in todo) or 'none to train'}")
    if rt.main:
        log(header)
        for m, key in zip(members, keys):
            name = m["spec"]["name"]
            if name in status:
                log(f"{name}: {status[name]} (key {key}), not trained again")
                if status[name] == "adopted":
                    _adopt(m, entry_dir(store, m["spec"], code))
    built, entries = [], {}
    if todo:
        torch.set_num_threads(todo[0][0]["spec"]["train"]["threads"])
        gen = seed_everything(specs[0]["seed"])
        img_size = specs[0]["model"].get("overrides", {}).get("img_size")
        batches = Batches(specs[0]["data"], todo[0][0]["spec"]["train"], rt, img_size)
        teacher = load_shared_teacher(teacher_path, [m["spec"] for m, _, _ in todo], batches, rt)
        if rt.compile:  # one compiled graph per member's variant of the student, and the teacher's
            from torch import _dynamo

            _dynamo.config.cache_size_limit = max(_dynamo.config.cache_size_limit, 2 * len(todo) + 8)
        for m, key, entry in todo:
            out = staging_dir(entry) if entry is not None else Path(m["out"])
            if rt.main:
                out.mkdir(parents=True, exist_ok=True)
            header = f"{_run_header(m['spec'], rt)}, one teacher forward shared by {len(todo)} students"
            member = build_member(m["spec"], out, m.get("resume"), rt, batches, teacher, gen, job_key=key,
                                  prefix=f"{m['spec']['name']} seed {m['spec']['seed']}: ", header=header)
            built.append(member)
            entries[member.spec["name"]] = entry

        def done(member: Member) -> None:
            name, entry = member.spec["name"], entries[member.spec["name"]]
            status[name] = "failed" if member.error is not None else "trained"
            if entry is None:
                return
            meta = {"name": name, "seed": member.spec["seed"], "key": member.job_key,
                    "job": f"the group job of seed {member.spec['seed']}"}
            if member.error is not None:
                publish_failure(entry, str(member.error), member.lines, meta)
            else:
                member.log(f"finished: top-1 {member.metrics['test_acc1']:.2f}%, published to {entry}")
                publish(member.out, entry, _run_files(member.spec), member.lines, meta)

        train_members(built, shared_teacher_forward(teacher, built, rt), batches, gen, rt, on_done=done)
        for member in built:
            status.setdefault(member.spec["name"], "failed" if member.error is not None else "trained")
    if rt.main:
        for m, key in zip(members, keys):
            if m.get("ready"):
                ready = Path(m["ready"])
                ready.parent.mkdir(parents=True, exist_ok=True)
                for stale in ready.parent.glob(f"{m['spec']['name']}.*.json"):  # of earlier specs or code
                    stale.unlink(missing_ok=True)
                write_text(json.dumps({"name": m["spec"]["name"], "seed": m["spec"]["seed"],
                                       "status": status[m["spec"]["name"]], "key": key}, sort_keys=True) + "\n", ready)
    return status


def _run_files(spec: dict) -> list[str]:
    return ["log.jsonl", *(f"epoch_{e}.pt" for e in spec["checkpoint_epochs"]), "final.pt"]


def _finished_in(out: Path, key: str, files: list[str]) -> bool:
    """Whether `out` holds every file of a finished run of this key (its final.pt, written last, says so)."""
    if not all((out / f).is_file() for f in files):
        return False
    try:
        return torch.load(out / "final.pt", map_location="cpu", weights_only=True).get("job_key") == key
    except Exception:  # noqa: BLE001 - a damaged file is no finished run
        return False


def _adopt(m: dict, entry: Path) -> None:
    adopt(Path(m["out"]), entry, _run_files(m["spec"]), {"name": m["spec"]["name"], "seed": m["spec"]["seed"],
                                                          "key": entry.name})


def _append_line(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


def _progress_bar(epochs: int, start: int, rt: Runtime):
    """A tqdm bar over the epochs of a single run on a terminal, else None (a log line per epoch)."""
    if rt.main and sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=epochs, initial=start, desc="epochs", unit="ep")
    return None


def _report(bar, m: Member, line: dict) -> None:
    if bar is not None:
        bar.update(1)
        bar.set_postfix_str(f"top-1 {line['test_acc1']:.1f}%")
        return
    m.log(f"epoch {line['epoch']}: loss {line['train_loss']:.4f} (base {line['train_loss_base']:.4f}, "
          f"feat {line['train_loss_feat']:.4f}, dist {line['train_loss_dist']:.4f}), "
          f"top-1 {line['test_acc1']:.2f}%, {line['images_per_s']:.0f} img/s")


# ---------------------------------------------------------------- CLI


@cli
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distdyn.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", help="job spec: inline JSON or a JSON file")
    p.add_argument("--out", help="output directory")
    p.add_argument("--group", help="instead of --spec/--out: students of one seed to train together, one teacher "
                                   "forward per batch; inline JSON or a JSON file: [{spec, out, resume}, ...]")
    p.add_argument("--store", help="with --group: publish finished students there, skip those already there")
    p.add_argument("--code", help="the training code's fingerprint (the rule's params.code), part of a run's key")
    p.add_argument("--teacher", help="teacher checkpoint (students)")
    p.add_argument("--resume", help="resume-state file, outside the outputs")
    p.add_argument("--gpu", type=int, default=0, help="GPUs granted to this job (0: CPU)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, help="CPU threads (default: the spec's train.threads)")
    args = p.parse_args(argv)
    if (args.group is None) == (args.spec is None) or (args.spec is not None and args.out is None):
        p.error("give --spec and --out, or --group")
    try:
        if args.group is not None:
            members = read_spec(args.group)
            run_group(members, teacher_path=args.teacher, store=args.store, code=args.code, gpu=args.gpu,
                      device=args.device, threads=args.threads)
            return 0
        spec = read_spec(args.spec)
        key = job_key(spec, args.code)  # of the spec as the job's params hold it, before --threads
        if args.threads:
            spec["train"]["threads"] = args.threads
        run(spec, args.out, teacher_path=args.teacher, resume_path=args.resume,
            gpu=args.gpu, device=args.device, key=key)
    except NonFiniteLossError as e:
        log(f"error: {e}")
        return 3
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
