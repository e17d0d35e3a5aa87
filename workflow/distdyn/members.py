"""A training run's parts (model, loss, optimizer, RNG stream, resume state), built alone or for a group."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .batches import Batches
from .errors import REMAKE, CheckpointError, first_line
from .hashing import config_hash
from .jobenv import stamp
from .losses import DistillationLoss, needs_teacher
from .models import build_from_checkpoint, create_model, forward_with_blocks, load_checkpoint, state_dict_of, unwrap
from .resume import MemberRNG, Resume, RunState
from .runtime import Runtime, compiled
from .store import numerics


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


CRITERION_STREAM = 1  # the loss module's stream: SeedSequence([seed, CRITERION_STREAM])


def criterion_seed(seed: int) -> int:
    """The seed of a run's loss-module parameters (a projector): derived from the run's seed, apart from the
    stream that initialises the model and then drives its dropout."""
    return int(np.random.SeedSequence([seed, CRITERION_STREAM]).generate_state(1)[0])


def make_criterion(spec: dict, widths: tuple[int, int]) -> DistillationLoss:
    """A run's loss: its setting's method with the setting's weights and parameters; for a teacher (no
    setting) plain cross-entropy, through no method."""
    s = spec.get("setting")
    if s is None:
        return DistillationLoss(None, [], alpha=0.0, tau=1.0, feature_weight=0.0,
                                label_smoothing=spec.get("label_smoothing", 0.1))
    return DistillationLoss(s["method"], s["pairs"], alpha=s["alpha"], tau=s["tau"], feature_weight=s["feature_weight"],
                            label_smoothing=s["label_smoothing"], widths=widths, **s.get("params", {}))


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


def reads_teacher(spec: dict) -> bool:
    """Whether a job spec's setting reads the teacher (a teacher's own spec has no setting)."""
    setting = spec.get("setting")
    return setting is not None and needs_teacher(setting["method"])


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
    weights_digest: str | None = None  # checkpoint_digest of what it reads: its teacher, or a teacher's start
    prefix: str = ""  # its name in the log lines of a group job
    lines: list[str] = field(default_factory=list)  # its own log lines
    metrics: dict | None = None
    correct: torch.Tensor | None = None  # per-image top-1 correctness at the last evaluation
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
                 job_key: str | None = None, weights_digest: str | None = None, prefix: str = "",
                 header: str | None = None) -> Member:
    """A run's model, loss, optimizer and resume state, as when it trains alone.

    Its RNG stream starts from torch.manual_seed(seed) (`model`, if given, was built right after
    seeding); with a resume state saved under its `job_key` (spec, code, weights read) it continues from the saved
    epoch, RNG and data-generator state.
    """
    if model is None:
        torch.manual_seed(spec["seed"])
        model = create_model(spec["model"], batches.num_classes, batches.in_chans).to(rt.device)
    record = record or model_record(spec["model"], batches.num_classes, batches.in_chans)
    widths = (model.num_features, teacher.num_features if reads_teacher(spec) else 0)
    # What the setting adds (a projector) draws from a stream of its own: every setting of a seed then starts
    # its own stream (dropout, drop-path) where the model's initialisation left it, the same for all of them.
    with torch.random.fork_rng(devices=[rt.device] if rt.device.type == "cuda" else []):
        torch.manual_seed(criterion_seed(spec["seed"]))
        criterion = make_criterion(spec, widths).to(rt.device)
    opt, sched = make_optimizer(model, criterion, spec["train"], rt)
    rng = MemberRNG(rt.device)
    resume = Resume(resume_path, job_key or config_hash(spec),  # resumed only by a run of the same key and numerics
                    numerics(rt.device.type, torch.get_num_threads()))
    member = Member(spec, Path(out), resume, model, criterion, opt, sched, None, rng, record, gen.get_state(),
                    RunState(), job_key, weights_digest, prefix)
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


class BlockForward(nn.Module):
    """Logits and selected block outputs from forward(), so DDP and torch.compile wrap the whole step."""

    def __init__(self, model: nn.Module, indices: list[int]):
        super().__init__()
        self.model, self.indices = model, indices

    def forward(self, x):
        logits, feats = forward_with_blocks(self.model, x, self.indices)
        return logits, dict(zip(self.indices, feats))


def checkpoint_dict(model, spec: dict, record: dict, epoch: int, metrics: dict, job_key: str | None = None,
                    correct: torch.Tensor | None = None) -> dict:
    """A checkpoint; `job_key` (distdyn.store.job_key: spec, code, weights read) lets a shared-teacher job
    recognise a finished run in its output folder. A final one keeps `val_correct`, each validation image's
    top-1 correctness (bool, the split's order: 1 bit of information per image, a byte each): in the file
    that is the model, written last, it cannot disagree with the model it describes, and the store and
    the rules carry no extra file for it."""
    ckpt = {"model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}, **record,
            "role": spec["role"], "name": spec["name"], "seed": spec["seed"], "epoch": epoch,
            "test_acc1": metrics["test_acc1"], "spec_hash": config_hash(spec), "job_key": job_key,
            "distdyn_version": __version__}
    if correct is not None:
        ckpt["val_correct"] = correct.to(torch.bool)
    return ckpt
