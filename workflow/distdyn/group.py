"""Students of one seed trained together on one teacher forward per batch, published to and restored from the store."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .batches import Batches
from .engine import train_members
from .io import write_text
from .hashing import checkpoint_digest
from .members import Member, build_member, load_shared_teacher, reads_teacher, shared_teacher_forward
from .runtime import log, make_runtime, run_header, seed_everything
from .schema import tuned
from .store import adopt, entry_dir, job_key, numerics, publish, publish_failure, read as read_entry, staging_dir


STREAM_KEYS = ("seed", "data", "train")  # what decides a run's batches: equal for the members of a group


def run_group(members: list[dict], *, teacher_path: str | None = None, store: str | None = None,
              code: str | None = None, gpu: int = 0, device: str = "auto", threads: int | None = None,
              data: dict | None = None, deadline=None, attempts=None) -> dict:
    """Train students that see the same batches (one seed) together: one teacher forward per batch.

    `members`: [{"spec": ..., "out": DIR, "resume": PATH, "ready": FILE, "code": TEXT}, ...] (resume, ready
    and code optional; a member's code, the fingerprint of the engine and its method, defaults to `code`).
    Without `store`, each member writes its files into its `out`, exactly as `run` would. With `store`, a
    member already stored there under its key (distdyn.store.job_key of spec, `code` and the teacher's
    content digest, hashed once here) or finished in its `out` under the same key is skipped; the others
    train in a staging folder of the store and are published there when done.
    Returns {setting: status} (trained, stored, adopted, failed), which each member's `ready` file
    receives as JSON at the end (the group rule's outputs). `threads` and `data` (root, num_workers: the
    job's command line) replace the specs' own (distdyn.schema.TUNING: no part of a key); a member stored
    from a CPU run with another thread count is trained again. `deadline` and `attempts` as
    for train.run.
    """
    specs = [m["spec"] for m in members]
    for s in specs[1:]:
        diff = [k for k in STREAM_KEYS if s[k] != specs[0][k]]
        if diff:
            raise ValueError(f"settings {specs[0]['name']!r} and {s['name']!r} cannot train together: "
                             f"their {', '.join(diff)} differ")
    digest = checkpoint_digest(teacher_path) if teacher_path and any(map(reads_teacher, specs)) else None
    teachers = [digest if reads_teacher(s) else None for s in specs]
    codes = [m.get("code", code) for m in members]  # a member's own: the engine's and its method's fingerprint
    keys = [job_key(s, c, t) for s, c, t in zip(specs, codes, teachers)]
    for m in members:
        m["spec"] = tuned(m["spec"], threads, **(data or {}))
    train_cfg = members[0]["spec"]["train"]
    rt = make_runtime(train_cfg, gpu, device)
    runs_on = numerics(rt.device.type, train_cfg["threads"])
    status, todo = {}, []
    for m, key, c, t in zip(members, keys, codes, teachers):
        entry = entry_dir(store, m["spec"], c) if store else None
        if entry is not None and read_entry(entry, t, runs_on["device"], runs_on.get("threads")) is not None:
            status[m["spec"]["name"]] = "stored"
        elif entry is not None and _finished_in(Path(m["out"]), key, _run_files(m["spec"])):
            status[m["spec"]["name"]] = "adopted"
        else:
            todo.append((m, key, entry))
    teacher_of = {s["name"]: t for s, t in zip(specs, teachers)}
    header = (f"students of seed {specs[0]['seed']} sharing one teacher forward: "
              f"{', '.join(m['spec']['name'] for m, _, _ in todo) or 'none to train'}")
    if rt.main:
        log(header)
        for m, key in zip(members, keys):
            name = m["spec"]["name"]
            if name in status:
                log(f"{name}: {status[name]} (key {key}), not trained again")
                if status[name] == "adopted":
                    _adopt(m, entry_dir(store, m["spec"], m.get("code", code)), key, teacher_of[name])
    built, entries = [], {}
    if todo:
        torch.set_num_threads(todo[0][0]["spec"]["train"]["threads"])
        gen = seed_everything(specs[0]["seed"])
        img_size = specs[0]["model"].get("overrides", {}).get("img_size")
        batches = Batches(todo[0][0]["spec"]["data"], todo[0][0]["spec"]["train"], rt, img_size)
        teacher = load_shared_teacher(teacher_path, [m["spec"] for m, _, _ in todo], batches, rt)
        if rt.compile:  # one compiled graph per member's variant of the student, and the teacher's
            from torch import _dynamo

            _dynamo.config.cache_size_limit = max(_dynamo.config.cache_size_limit, 2 * len(todo) + 8)
        for m, key, entry in todo:
            out = staging_dir(entry) if entry is not None else Path(m["out"])
            if rt.main:
                out.mkdir(parents=True, exist_ok=True)
            header = f"{run_header(m['spec'], rt)}, one teacher forward shared by {len(todo)} students"
            member = build_member(m["spec"], out, m.get("resume"), rt, batches, teacher, gen, job_key=key,
                                  weights_digest=teacher_of[m["spec"]["name"]],
                                  prefix=f"{m['spec']['name']} seed {m['spec']['seed']}: ", header=header)
            built.append(member)
            entries[member.spec["name"]] = entry

        def done(member: Member) -> None:
            name, entry = member.spec["name"], entries[member.spec["name"]]
            status[name] = "failed" if member.error is not None else "trained"
            if entry is None:
                return
            meta = {"name": name, "seed": member.spec["seed"], "key": member.job_key,
                    "teacher": member.weights_digest, "job": f"the group job of seed {member.spec['seed']}",
                    "numerics": member.resume.numerics}
            if member.error is not None:
                publish_failure(entry, str(member.error), member.lines, meta)
            else:
                member.log(f"finished: top-1 {member.metrics['test_acc1']:.2f}%, published to {entry}")
                publish(member.out, entry, _run_files(member.spec), member.lines, meta)

        if attempts is not None:
            attempts.started(min(m.state.epoch for m in built))
        train_members(built, shared_teacher_forward(teacher, built, rt), batches, gen, rt, on_done=done,
                      deadline=deadline, progress=attempts.progress if attempts is not None else None)
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


def _adopt(m: dict, entry: Path, key: str, teacher: str | None) -> None:
    adopt(Path(m["out"]), entry, _run_files(m["spec"]), {"name": m["spec"]["name"], "seed": m["spec"]["seed"],
                                                          "key": key, "teacher": teacher})
