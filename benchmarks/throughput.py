"""Measure a config's throughput table (`resources.throughput`) on this machine's device.

    python benchmarks/throughput.py [--configfile FILE ...] [--steps 20]

Builds the config's student and teacher (random weights) at the data's image size and times, per process
(one GPU, or the CPU with train.threads threads): a student's training step (forward, cross-entropy,
backward, AdamW step) at its per-process batch (batch_size / gpus), its evaluation forward and the
teacher's forward at eval_batch_size, and the teacher's training step. Eager mode, bf16 autocast on CUDA
(compiled steps are faster on GPUs: docs/gpus.md). Prints the table as YAML to paste under `resources:`.
The loader workers' rate is benchmarks/loader.py's.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from distdyn.config import data_info, read_config_files, validate_schema  # noqa: E402
from distdyn.models import create_model  # noqa: E402


def per_second(fn, images: int, steps: int, device: torch.device) -> float:
    for _ in range(3):  # warm-up: allocator, kernels
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images * steps / (time.perf_counter() - t0)


def step_rate(model, x, y, steps, device, amp) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return per_second(step, len(x), steps, device)


def forward_rate(model, x, steps, device, amp) -> float:
    model.eval()

    def forward():
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            model(x)

    return per_second(forward, len(x), steps, device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", nargs="+", default=["config.yaml"])
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    cfg = validate_schema(read_config_files(args.configfile))
    info = data_info(cfg["data"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = device.type == "cuda"
    rates, threads = {}, {}
    for role in ("student", "teacher"):
        train = cfg[role]["train"]
        torch.set_num_threads(train["threads"])
        threads[role] = train["threads"]
        model = create_model(cfg[role], info.num_classes, info.in_chans, device)
        size = (info.in_chans, info.img_size, info.img_size)
        batch, eval_batch = max(train["batch_size"] // train["gpus"], 1), train["eval_batch_size"]
        x, y = torch.randn(batch, *size, device=device), torch.randint(0, info.num_classes, (batch,), device=device)
        xe = torch.randn(eval_batch, *size, device=device)
        rates[f"{role}_step"] = step_rate(model, x, y, args.steps, device, amp)
        forward = "student_eval" if role == "student" else "teacher_forward"
        rates[forward] = forward_rate(model, xe, args.steps, device, amp)
    name = torch.cuda.get_device_name() if device.type == "cuda" else \
        f"CPU, student {threads['student']} / teacher {threads['teacher']} threads (train.threads)"
    print(f"# {name}; torch {torch.__version__}; eager; {', '.join(args.configfile)}")
    print("throughput:")
    for key in ("student_step", "student_eval", "teacher_forward", "teacher_step"):
        print(f"  {key}: {rates[key]:.0f}")


if __name__ == "__main__":
    main()
