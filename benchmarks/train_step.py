"""Time distdyn's distillation training step against the authors' way of writing it.

    python benchmarks/train_step.py --pair cait     # CaiT-S24 -> DeiT-Tiny at 224, batch 256 (GPU)
    python benchmarks/train_step.py --pair fashion  # the Fashion-MNIST preset's pair, batch 512
    python benchmarks/train_step.py --pair fashion --batch 64 --steps 10   # a CPU-sized check
    python benchmarks/train_step.py --pair cait --students 7 --batch 8 --steps 3 --warmup 1   # shared teacher

Both steps use the same models, batch and last-layer spectral loss (distdyn.losses).
  reference  as the authors' loop: fp16 autocast + GradScaler on CUDA, plain torch AdamW, no
             compile, teacher under torch.no_grad(), a DataLoader-style host-to-device copy per step
  distdyn    distdyn.train's step: bf16 autocast, fused AdamW (timm factory), teacher under
             torch.inference_mode(), torch.compile of student and teacher in --compile-mode
             (here reduce-overhead, CUDA graphs; the workflow's train.compile_mode defaults to
             default) on CUDA, data already on the device
Prints images/s for both and the ratio; on CUDA also distdyn's step without compile and with
compile mode default. On CPU both run in float32 without compile.

--students N times N students of one seed on one teacher (a distill_group job, distdyn.train's own
teacher_outputs / member_step / MemberRNG): per round every student takes one step on the batch,
  shared    one teacher forward, then the N student steps
  separate  N times (teacher forward + student step), as N distill_student jobs
and prints images/s per student for both, the teacher forward and a student step alone, and the
per-student step cost shared / separate beside (student + teacher / N) / (student + teacher).
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from distdyn.losses import DistillationLoss  # noqa: E402
from distdyn.models import create_model, forward_with_blocks  # noqa: E402
from distdyn.engine import member_step, teacher_outputs  # noqa: E402
from distdyn.members import BlockForward, make_optimizer  # noqa: E402
from distdyn.resume import MemberRNG  # noqa: E402
from distdyn.runtime import Runtime, compiled  # noqa: E402

PAIRS = {
    "cait": dict(teacher={"model": "cait_s24_224", "overrides": {}},
                 student={"model": "deit_tiny_patch16_224", "overrides": {}},
                 classes=1000, chans=3, size=224, batch=256, pairs=[[11, 23]]),
    "fashion": dict(teacher={"model": "vit_tiny_patch16_224",
                             "overrides": {"img_size": 28, "patch_size": 4, "embed_dim": 192, "depth": 12,
                                           "num_heads": 3}},
                    student={"model": "vit_tiny_patch16_224",
                             "overrides": {"img_size": 28, "patch_size": 4, "embed_dim": 96, "depth": 6,
                                           "num_heads": 3}},
                    classes=10, chans=1, size=28, batch=512, pairs=[[5, 11]]),
}
TRAIN = {"opt": "adamw", "lr": 1e-3, "weight_decay": 0.05, "epochs": 10, "min_lr": 1e-5, "warmup_epochs": 0,
         "warmup_lr": 1e-6}


def build(p: dict, device):
    torch.manual_seed(0)
    teacher = create_model(p["teacher"], p["classes"], p["chans"]).to(device).eval().requires_grad_(False)
    student = create_model(p["student"], p["classes"], p["chans"]).to(device)
    crit = DistillationLoss("spectral", p["pairs"], alpha=0.9, tau=1.0, feature_weight=0.2,
                            label_smoothing=0.1).to(device)
    return teacher, student, crit


def reference_step(p: dict, device, x_host, y_host):
    teacher, student, crit = build(p, device)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3, weight_decay=0.05)
    cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    s_idx, t_idx = crit.student_indices, crit.teacher_indices

    def step():
        x, y = x_host.to(device, non_blocking=True), y_host.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16) if cuda else contextlib.nullcontext():
            with torch.no_grad():
                zt, ft = forward_with_blocks(teacher, x, t_idx)
            zs, fs = forward_with_blocks(student, x, s_idx)
            loss = crit(zs, y, zt, dict(zip(s_idx, fs)), dict(zip(t_idx, ft))).total
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return step


def distdyn_step(p: dict, device, x_host, y_host, compile: bool = True, mode: str | None = None):
    teacher, student, crit = build(p, device)
    cuda = device.type == "cuda"
    rt = Runtime(device, amp_dtype=torch.bfloat16 if cuda else None, compile=cuda and compile,
                 compile_mode=mode or "default")
    opt, _ = make_optimizer(student, crit, TRAIN, rt)
    s_fwd = compiled(BlockForward(student, crit.student_indices), rt)
    t_fwd = compiled(BlockForward(teacher, crit.teacher_indices), rt)
    x, y = x_host.to(device), y_host.to(device)  # the dataset lives on the device
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext

    def step():
        with torch.inference_mode(), amp():
            zt, ft = t_fwd(x)
        zt, ft = zt.clone(), {k: v.clone() for k, v in ft.items()}
        with amp():
            zs, fs = s_fwd(x)
        loss = crit(zs, y, zt, fs, ft).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def student_group(p: dict, device, n: int, compile: bool = True, mode: str | None = None):
    """The teacher's forward and n students (own weights, loss, optimizer and RNG stream), as a group job
    builds them."""
    teacher, _, _ = build(p, device)
    cuda = device.type == "cuda"
    rt = Runtime(device, amp_dtype=torch.bfloat16 if cuda else None, compile=cuda and compile,
                 compile_mode=mode or "default")
    if rt.compile:
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 2 * n + 8)
    members = []
    for i in range(n):
        torch.manual_seed(i)
        student = create_model(p["student"], p["classes"], p["chans"]).to(device)
        crit = DistillationLoss("spectral", p["pairs"], alpha=0.9, tau=1.0, feature_weight=0.2,
                                label_smoothing=0.1).to(device)
        opt, _ = make_optimizer(student, crit, TRAIN, rt)
        members.append((compiled(BlockForward(student, crit.student_indices), rt), crit, opt, MemberRNG(device)))
    return rt, compiled(BlockForward(teacher, sorted({t for _, t in p["pairs"]})), rt), members


def group_steps(p: dict, device, x_host, y_host, n: int, mode: str | None = None) -> dict:
    """Step functions of one round: shared (one teacher forward for all), separate, and the parts alone."""
    rt, t_fwd, members = student_group(p, device, n, mode=mode)
    x, y = x_host.to(device), y_host.to(device)
    cached = teacher_outputs(t_fwd, x, rt)

    def step_of(member, zt, ft):
        fwd, crit, opt, rng = member
        with rng.active():
            member_step(fwd, crit, opt, x, y, zt, ft, rt)

    def shared():
        zt, ft = teacher_outputs(t_fwd, x, rt)
        for m in members:
            step_of(m, zt, ft)

    def separate():
        for m in members:
            step_of(m, *teacher_outputs(t_fwd, x, rt))

    return {"shared": shared, "separate": separate, "teacher": lambda: teacher_outputs(t_fwd, x, rt),
            "student": lambda: step_of(members[0], *cached)}


def group_benchmark(p: dict, device, x, y, n: int, args) -> None:
    batch = len(y)
    steps = group_steps(p, device, x, y, n, mode=args.compile_mode if device.type == "cuda" else None)
    runs = {k: [] for k in steps}
    for _ in range(args.repeat):  # alternating, so that a noisy machine hits both alike
        for k, fn in steps.items():
            runs[k].append(images_per_s(fn, batch, args.steps, args.warmup, device))
    best = {k: max(v) for k, v in runs.items()}
    every = lambda k: " ".join(f"{v:.2f}" for v in runs[k])  # noqa: E731
    t_teacher, t_student = batch / best["teacher"], batch / best["student"]
    print(f"{'teacher forward':44s} {best['teacher']:10.2f} images/s   "
          f"({t_teacher:.3f} s per batch; all: {every('teacher')})")
    print(f"{'student step (teacher outputs given)':44s} {best['student']:10.2f} images/s   "
          f"({t_student:.3f} s per batch; all: {every('student')})")
    print(f"{f'separate: {n} x (teacher forward + step)':44s} {best['separate']:10.2f} images/s per student   "
          f"(all: {every('separate')})")
    print(f"{f'shared: 1 teacher forward + {n} steps':44s} {best['shared']:10.2f} images/s per student   "
          f"(all: {every('shared')})")
    expected = (t_student + t_teacher / n) / (t_student + t_teacher)
    print(f"{'per-student step cost, shared / separate':44s} {best['separate'] / best['shared']:10.2f}    "
          f"(from the parts: (student + teacher / {n}) / (student + teacher) = {expected:.2f})")


def images_per_s(step, batch: int, steps: int, warmup: int, device) -> float:
    for _ in range(warmup):
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return batch * steps / (time.perf_counter() - t0)


def main() -> int:
    a = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--pair", choices=sorted(PAIRS), default="fashion")
    a.add_argument("--batch", type=int, help="batch size (default: the pair's)")
    a.add_argument("--steps", type=int, default=20)
    a.add_argument("--warmup", type=int, default=5, help="untimed steps (compile happens here)")
    a.add_argument("--threads", type=int, default=None)
    a.add_argument("--compile-mode", default="reduce-overhead",
                   help="torch.compile mode of distdyn's step on CUDA (train.compile_mode; default: %(default)s)")
    a.add_argument("--also-mode", nargs="*", default=[], help="further compile modes to time (CUDA)")
    a.add_argument("--students", type=int, default=0,
                   help="N > 0: N students on one teacher, shared forward against N separate steps")
    a.add_argument("--repeat", type=int, default=1, help="with --students: alternating runs of each (best printed)")
    args = a.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    p = PAIRS[args.pair]
    batch = args.batch or p["batch"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, p["chans"], p["size"], p["size"], generator=g)
    y = torch.randint(0, p["classes"], (batch,), generator=g)
    if device.type == "cuda":
        x = x.pin_memory()
    print(f"{args.pair}: {p['teacher']['model']} -> {p['student']['model']}, batch {batch}, "
          f"{f'{args.students} students, ' if args.students else ''}spectral loss on "
          f"{p['pairs']}, device {name}, torch {torch.__version__}")
    if args.students:
        group_benchmark(p, device, x, y, args.students, args)
        return 0
    ref = images_per_s(reference_step(p, device, x, y), batch, args.steps, args.warmup, device)
    print(f"{'reference':34s} {ref:10.1f} images/s")
    if device.type == "cuda":  # distdyn's step without compile (train.compile: off) and in the other modes
        for label, kw in (("distdyn, no compile", {"compile": False}),
                          ("distdyn, compile mode default", {"mode": None}),
                          *((f"distdyn, compile mode {m}", {"mode": m}) for m in args.also_mode)):
            alt = images_per_s(distdyn_step(p, device, x, y, **kw), batch, args.steps, args.warmup, device)
            print(f"{label:34s} {alt:10.1f} images/s   {alt / ref:.2f}x")
    ours = images_per_s(distdyn_step(p, device, x, y, mode=args.compile_mode), batch, args.steps, args.warmup, device)
    label = f"distdyn ({args.compile_mode})" if device.type == "cuda" else "distdyn"
    print(f"{label:34s} {ours:10.1f} images/s")
    print(f"{'ratio':34s} {ours / ref:10.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
