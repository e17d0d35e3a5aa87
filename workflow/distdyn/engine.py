"""The training loop: a member's step, an epoch of a cohort of members, evaluation, the end of an epoch."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .batches import Batches
from .io import write_lines
from .members import Member, checkpoint_dict
from .models import atomic_save
from .runtime import Runtime, autocast
from .segments import Deadline, SegmentEnd


class NonFiniteLossError(FloatingPointError):
    pass


def check_finite(terms: dict[str, float], spec: dict, epoch: int) -> None:
    for name, value in terms.items():
        if not np.isfinite(value):
            raise NonFiniteLossError(f"non-finite {name} loss ({value}) in setting {spec['name']!r}, "
                                     f"seed {spec['seed']}, epoch {epoch}")


@torch.inference_mode()
def evaluate(model: nn.Module, batches, rt: Runtime) -> tuple[dict, torch.Tensor]:
    """Top-1/top-5 accuracy (%) and plain CE on the validation split; and each image's top-1 correctness
    (bool, CPU, in the split's order), which the final checkpoint keeps for McNemar's test of two models.

    Under DDP `batches` is this rank's contiguous shard (Batches.val): the correct counts and the image
    count are summed over the ranks as integers (the loss sum in float64) and the correctness gathered in
    rank order, so the accuracies and the correctness equal one process's exactly.
    """
    model.eval()
    counts = torch.zeros(3, dtype=torch.int64, device=rt.device)  # top-1 correct, top-5 correct, images
    loss = torch.zeros((), dtype=torch.float64, device=rt.device)
    correct = []
    for x, y in batches:
        x, y = x.to(rt.device, non_blocking=True), y.to(rt.device, non_blocking=True)
        with autocast(rt):
            logits = model(x)
        logits = logits.float()
        loss += F.cross_entropy(logits, y, reduction="sum").double()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct.append(top[:, 0] == y)
        counts[0] += correct[-1].sum()
        counts[1] += (top == y[:, None]).any(dim=1).sum()
        counts[2] += len(y)
    correct = torch.cat(correct) if correct else torch.zeros(0, dtype=torch.bool, device=rt.device)
    if rt.world > 1:
        torch.distributed.all_reduce(counts)
        torch.distributed.all_reduce(loss)
        correct = gather_in_rank_order(correct, rt.world)
    c1, c5, n = counts.tolist()
    metrics = {"test_loss": loss.item() / n, "test_acc1": 100.0 * c1 / n, "test_acc5": 100.0 * c5 / n}
    return metrics, correct.cpu()


def gather_in_rank_order(part: torch.Tensor, world: int) -> torch.Tensor:
    """The ranks' 1-d tensors (of uneven lengths) concatenated in rank order, on every rank."""
    import torch.distributed as dist

    lengths = [torch.zeros(1, dtype=torch.int64, device=part.device) for _ in range(world)]
    dist.all_gather(lengths, torch.tensor([len(part)], dtype=torch.int64, device=part.device))
    lengths = [int(t) for t in lengths]
    # all_gather wants equal shapes (and gloo no bools): pad each rank's part to the longest as uint8.
    padded = torch.zeros(max(lengths), dtype=torch.uint8, device=part.device)
    padded[:len(part)] = part.to(torch.uint8)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:k] for p, k in zip(parts, lengths)]).to(part.dtype)


def teacher_outputs(teacher, x: torch.Tensor, rt: Runtime):
    """The teacher's logits and block outputs for a batch, once for every member that steps on it."""
    with torch.inference_mode(), autocast(rt):
        logits_t, ft = teacher(x)
    # Inference tensors cannot be saved for backward: clone them out of inference mode.
    return logits_t.clone(), {k: v.clone() for k, v in ft.items()}


def member_step(fwd, criterion, opt, x, y, logits_t, feats_t, rt: Runtime) -> torch.Tensor:
    """One optimisation step of one run; its loss terms (total, base, feat, dist), still on the device."""
    with autocast(rt):
        logits_s, feats_s = fwd(x)
    terms = criterion(logits_s, y, logits_t, feats_s, feats_t)
    opt.zero_grad(set_to_none=True)
    terms.total.backward()
    if rt.world > 1:
        average_criterion_grads(criterion)
    opt.step()
    return torch.stack([terms.total, terms.base, terms.feat, terms.dist]).detach().double()


def average_criterion_grads(criterion: nn.Module) -> None:
    """A method's trainable parts (a projector, ViTKD's generator) sit outside the DDP-wrapped model:
    average their gradients over the ranks as DDP does the model's, so that every rank keeps the same."""
    world = torch.distributed.get_world_size()
    for p in criterion.parameters():
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad.div_(world)


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


def train_members(members: list[Member], teacher, batches: Batches, gen, rt: Runtime, on_done=None,
                  deadline: Deadline | None = None, progress=None) -> None:
    """Train every member to its last epoch (a group job's or a single run's loop).

    Members at the same epoch train together; after a kill between two members' saves some are an
    epoch ahead, and the others catch up first (each resume state holds its data generator's state).
    A member whose loss turns non-finite stops with `error` set; the others go on. `on_done(member)`
    runs on rank 0 for each member that finished (after its final.pt, before its resume state is
    cleared) or failed. Before each epoch `deadline` (distdyn.segments) may end the job with SegmentEnd;
    after each, `progress(epoch)` runs on rank 0 with the epoch every member has finished.
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
        if deadline is not None and not _agreed(deadline.allows(), rt):
            raise SegmentEnd(first.state.epoch, epochs)
        started = time.perf_counter()
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
            m.metrics, m.correct = evaluate(m.model, batches.val(), rt)
            line = {"epoch": e + 1, "lr": lr, "train_loss": total / count, "train_loss_base": base / count,
                    "train_loss_feat": feat / count, "train_loss_dist": dist / count, **m.metrics,
                    "seconds": round(seconds, 3), "images_per_s": round(count / seconds, 1),
                    "n_parameters": sum(p.numel() for p in m.model.parameters())}
            _end_epoch(m, line, rt)
            if rt.main:
                _report(bar, m, line)
        if deadline is not None:
            deadline.record(time.perf_counter() - started)
        if progress is not None and rt.main:
            progress(min((m.state.epoch for m in members if m.error is None), default=e + 1))
    if rt.main:
        for m in members:
            if m.error is None:
                atomic_save(checkpoint_dict(m.model, m.spec, m.record, epochs, m.metrics, m.job_key, m.correct),
                            m.out / "final.pt")
                if on_done is not None:
                    on_done(m)
                m.resume.clear()


def _agreed(flag: bool, rt: Runtime) -> bool:
    """Rank 0's `flag` on every rank (their clocks differ: all must stop at the same epoch)."""
    if rt.world == 1:
        return flag
    t = torch.tensor([float(flag)], device=rt.device)
    torch.distributed.broadcast(t, 0)
    return bool(t.item())


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
