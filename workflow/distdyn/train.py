"""Teacher pretraining and student distillation: one loop for both.

    python -m distdyn.train --spec SPEC.json|'{...}' --out DIR [--teacher CKPT] [--resume PATH] [--gpu N]
    python -m distdyn.train --group MEMBERS.json|'[...]' --teacher CKPT [--store DIR] [--code TEXT] [--gpu N]

The spec is what `distdyn.config.teacher_spec` / `student_spec` return. The job
writes DIR/log.jsonl (one JSON line per epoch), DIR/epoch_{E}.pt at the
checkpoint epochs and DIR/final.pt, each atomically. With --resume, the full
training state is saved there after every epoch; a rerun with the same spec
resumes from it and ends with the same weights as an uninterrupted run.

--group trains several students of one seed together (a list of {spec, out, resume, ready, code}):
they see the same batches, so each batch gets one teacher forward (the logits and the
blocks some member aligns to) and then every member's own step. Each member keeps its
own model, optimizer, RNG stream (dropout, drop-path), log lines, checkpoints and
resume state, so on CPU it ends bit-identical to training it alone. With --store,
finished members are published there (`distdyn.store`) instead of into their output
folders, members already stored are skipped, and the student jobs restore from it;
each member's `ready` file (if given) receives its status (trained, stored, adopted, failed).

Under a time limit (`distdyn.segments`) the job stops before it, after its last epoch that fits, with
exit status 75; Snakemake's next attempt (--attempt N) resumes from the resume state.

The code, one concern a module: `runtime` (device, DDP, precision, compile, seeding), `batches`
(training and evaluation batches), `resume` (run state, RNG stream, resume file), `members` (a run's
model, loss, optimizer; its checkpoint), `engine` (the step, the epoch, evaluation: the loop),
`group` (students of one seed on one teacher forward, and the store), and here the single run and the CLI.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import sys
from pathlib import Path

import torch

from .batches import Batches
from .engine import NonFiniteLossError, evaluate, train_members
from .errors import CheckpointError, DistdynError, cli, error_line, first_line
from .group import run_group
from .io import read_spec, write_lines
from .hashing import checkpoint_digest
from .members import (build_member, checkpoint_dict, load_shared_teacher, model_record, reads_teacher,
                      shared_teacher_forward)
from .models import atomic_save, create_model, load_checkpoint, state_dict_of
from .runtime import log, make_runtime, run_header, seed_everything
from .segments import SEGMENT_END, TERMINATED, Attempts, Deadline, SegmentEnd, job_end_time
from .requests import rank_threads
from .schema import tuned
from .store import job_key


def run(spec: dict, out_dir: str | Path, *, teacher_path: str | None = None, resume_path: str | None = None,
        gpu: int = 0, device: str = "auto", code: str | None = None, key_spec: dict | None = None,
        deadline: Deadline | None = None, attempts: Attempts | None = None) -> list[dict]:
    """Train one model (a teacher with `checkpoint` starts from it; with 0 epochs it is imported and evaluated).

    Its key, recorded in its checkpoints, is distdyn.store.job_key of `key_spec` (default: the spec), `code`
    and the content of the weights it reads (the teacher at `teacher_path`, or a teacher's starting
    checkpoint), hashed once here; its resume state counts only for the same key. `deadline` and `attempts`
    (distdyn.segments) end it before a time limit and record its progress.
    Returns the log records.
    """
    weights = teacher_path if reads_teacher(spec) else spec.get("checkpoint") if spec["role"] == "teacher" else None
    digest = checkpoint_digest(weights) if weights else None
    key = job_key(key_spec or spec, code, digest)
    out = Path(out_dir)
    train_cfg = spec["train"]
    rt = make_runtime(train_cfg, gpu, device)
    torch.set_num_threads(train_cfg["threads"])
    gen = seed_everything(spec["seed"])
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
        log(run_header(spec, rt))
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
        metrics, correct = evaluate(model, batches.val(), rt)
        line = {"epoch": 0, "lr": None, "train_loss": None, "train_loss_base": None, "train_loss_feat": None,
                "train_loss_dist": None, **metrics, "seconds": 0.0, "images_per_s": None,
                "n_parameters": sum(p.numel() for p in model.parameters()), "source": spec["checkpoint"]}
        if rt.main:
            write_lines([json.dumps(line)], log_path)
            atomic_save(checkpoint_dict(model, spec, record, 0, metrics, key, correct=correct), out / "final.pt")
            log(f"imported teacher {spec['checkpoint']}: top-1 {metrics['test_acc1']:.2f}%")
        return [line]

    teacher = load_shared_teacher(teacher_path, [spec], batches, rt)
    member = build_member(spec, out, resume_path, rt, batches, teacher, gen, model=model, record=record, job_key=key,
                          weights_digest=digest)
    if attempts is not None:
        attempts.started(member.state.epoch)
    train_members([member], shared_teacher_forward(teacher, [member], rt), batches, gen, rt, deadline=deadline,
                  progress=attempts.progress if attempts is not None else None)
    if member.error is not None:
        raise member.error
    return member.records()


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
    # Tuning that changes no number but the CPU's (distdyn.schema.TUNING): not in the rules' params, so that
    # changing it re-runs nothing; the CPU thread count is recorded with a run's resume state instead.
    p.add_argument("--threads", type=int, help="CPU threads (default: the spec's train.threads)")
    p.add_argument("--attempt", type=int, default=0, help="Snakemake's attempt of this job (retries: segments)")
    p.add_argument("--num-workers", type=int, help="DataLoader workers (default: the spec's data.num_workers)")
    p.add_argument("--data-root", help="the data folder (default: the spec's data.root)")
    args = p.parse_args(argv)
    data = {"root": args.data_root or None, "num_workers": args.num_workers}
    # --threads: the CPUs the job got on this node; each of its processes takes its share less its loader workers
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if (args.group is None) == (args.spec is None) or (args.spec is not None and args.out is None):
        p.error("give --spec and --out, or --group")
    members = read_spec(args.group) if args.group is not None else None
    if args.threads and members:
        args.threads = rank_threads(args.threads, processes, tuned(members[0]["spec"], None, **data)["data"])
    attempts = Attempts(attempt_record(args.resume, members) if int(os.environ.get("RANK", 0)) == 0 else None)
    if args.attempt and (reason := attempts.begin(args.attempt)):
        log(f"error: {reason}")
        return 1
    signal.signal(signal.SIGTERM, lambda *_: _terminated(attempts))
    end = job_end_time()
    deadline = Deadline(end) if end is not None else None  # without a limit, no check (nor DDP broadcast) per epoch
    try:
        if members is not None:
            run_group(members, teacher_path=args.teacher, store=args.store, code=args.code, gpu=args.gpu,
                      device=args.device, threads=args.threads, data=data, deadline=deadline, attempts=attempts)
            return 0
        spec = read_spec(args.spec)
        params_spec = copy.deepcopy(spec)  # the key is of the spec as the job's params hold it
        spec = tuned(spec, args.threads, **data)
        if args.threads:
            spec["train"]["threads"] = rank_threads(args.threads, processes, spec["data"])
        run(spec, args.out, teacher_path=args.teacher, resume_path=args.resume,
            gpu=args.gpu, device=args.device, code=args.code, key_spec=params_spec, deadline=deadline,
            attempts=attempts)
    except SegmentEnd as e:
        log(str(e))
        attempts.end("segment")
        return SEGMENT_END
    except NonFiniteLossError as e:
        log(f"error: {e}")
        attempts.end("failed", str(e))
        return 3
    except Exception as e:
        attempts.end("failed", error_line(e) if isinstance(e, DistdynError) else first_line(e))
        raise
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


def attempt_record(resume: str | None, members: list[dict] | None) -> Path | None:
    """Where a job's attempts are recorded: beside its resume state (a group job's: beside its members')."""
    if members:
        return Path(members[0]["resume"]).parent / f"group_seed_{members[0]['spec']['seed']}.attempt.json" \
            if members[0].get("resume") else None
    return Path(resume).with_suffix(".attempt.json") if resume else None


def _terminated(attempts: Attempts) -> None:
    """SIGTERM (SLURM's time limit, a preemption, a requeue, scancel): recorded, so the next attempt resumes."""
    attempts.end("terminated")
    log("terminated by SIGTERM (time limit, preemption or requeue); the next attempt resumes from the last epoch")
    raise SystemExit(TERMINATED)


if __name__ == "__main__":
    sys.exit(main())
