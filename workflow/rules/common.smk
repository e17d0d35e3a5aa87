import functools
import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")  # as pyproject.toml's snakemake>=9

PKG_DIR = Path(workflow.basedir) / "workflow"
sys.path.insert(0, str(PKG_DIR))

from distdyn.jobenv import export_environment  # noqa: E402
from distdyn.requests import train_request, within_limit  # noqa: E402
from distdyn.errors import DistdynError, error_line  # noqa: E402
from distdyn.config import (  # noqa: E402
    PRETRAINED_TEACHER,
    _build_shape,
    _data_and_models,
    check_config,
    checkpoint_epochs,
    data_environment,
    run_spec,
    setting_names,
    student_spec,
    teacher_spec,
    validate_schema,
)

# Schema first (workflow/schemas/config.schema.yaml: defaults filled in, numbers written as strings
# coerced, types checked), then the cross-field checks; either names the key (or file) in one line,
# `error: config key '...': ...`, where snakemake.utils.validate would print the whole schema node. The
# line and exit status 1 are all the console shows: a WorkflowError would add the Snakefile's frame.
try:
    check_config(validate_schema(config))
except DistdynError as e:
    print(error_line(e), file=sys.stderr, flush=True)
    raise SystemExit(1)

export_environment(PKG_DIR)
ENV = "../../envs/distdyn.yaml"

SETTINGS = setting_names(config)
EXTRA_MODELS = {m["name"]: m for m in config["extra_models"]}
# Models analysed once on the probe set, not per checkpoint: the teacher of a distillation study
# (none without settings: an analysis-only config) and the extra models.
MODELS = (["teacher"] if SETTINGS else []) + list(EXTRA_MODELS)
SEEDS = [int(s) for s in config["seeds"]]
_, DATA_INFO, _SHAPES = _data_and_models(config)
# The specs as the jobs' params hold them: no CPU threads, loader workers or data path (the data's content
# digest instead), which the jobs get as flags from {threads} and from their environment, as PATH and
# PYTHONPATH (export_environment): changing those re-runs nothing.
TEACHER_SPEC = run_spec(teacher_spec(config))
STUDENT_SPECS = {(s, seed): run_spec(student_spec(config, s, seed, _SHAPES)) for s in SETTINGS for seed in SEEDS}
DATA_SPEC = run_spec({"data": config["data"]})["data"]
os.environ.update(data_environment(config["data"]))
TEACHER_EPOCHS = checkpoint_epochs(config["teacher"]["train"])
STUDENT_CKPTS = [f"epoch_{e}" for e in checkpoint_epochs(config["student"]["train"])] + ["final"]
RES = config["resources"]


def alternatives(names):
    """A wildcard constraint matching exactly these names (nothing when there are none)."""
    return "|".join(names) or "(?!)"


# Small table and figure jobs: under SLURM they run on the submitting machine instead of waiting in
# the queue (locally this changes nothing).
localrules:
    gather_metrics,
    gather_cka,
    accuracy_tables,
    phases,
    plot,
    claims,


wildcard_constraints:
    setting=alternatives(SETTINGS),
    model=alternatives(MODELS),
    fetched=alternatives((["teacher"] if config["teacher"]["pretrained"] is not False else []) + list(EXTRA_MODELS)),
    seed=r"\d+",


from distdyn.fingerprint import fingerprint, method_fingerprint  # noqa: E402


def code_fingerprint(module):
    """A rule's `params: code=`: the content fingerprint of `module` (what its shell runs with
    `python -m`) and every distdyn module it imports, transitively, plus the files they load.
    Derived, not listed: a change of behaviour re-runs the rule (params trigger), a comment,
    docstring, formatting edit or new mtime does not. `python -m distdyn.fingerprint` shows them."""
    return fingerprint(module, root=PKG_DIR)


def with_method(code, setting):
    """A student's training code: the engine's fingerprint (`code`, which covers no method) and that of its
    setting's method (a built-in's module, a user's file: distdyn.fingerprint.method_fingerprint), so that
    editing one method re-runs only the settings that use it."""
    return f"{code}; {method_code(STUDENT_SPECS[(setting, SEEDS[0])]['setting']['method'])}"


@functools.cache
def method_code(method):
    return method_fingerprint(method, root=PKG_DIR)


def as_json(obj):
    return json.dumps(obj, sort_keys=True)


def launcher(train_cfg, cpus=1):
    """How a training rule's shell starts `distdyn.train ARGS`: python -m; torchrun with one process per GPU
    for gpus > 1; for nodes > 1, one torchrun agent per node (multinode_launcher, given the rule's CPUs)."""
    n = train_cfg["gpus"]
    if train_cfg["nodes"] > 1:
        return multinode_launcher(train_cfg, cpus)
    if n > 1:
        return f"python -m torch.distributed.run --standalone --nproc_per_node={n} -m"
    return "python -m"


def multinode_launcher(train_cfg, cpus):
    """One torchrun agent per node, started by the job's own srun inside its SLURM allocation (the rule's
    `mpi` resource, train_resources), each running gpus / nodes processes; they meet at a c10d rendezvous
    on the allocation's first host. Checked against snakemake-executor-plugin-slurm-jobstep 0.6.1 (run_job)
    and Slurm 22.05's srun, on a two-node cluster (tests/test_slurm.py):
    - the jobstep plugin runs an `mpi` job's shell once, in the batch script, with every SLURM_* variable
      but the job id removed: the node list comes from slurmctld (squeue), not $SLURM_JOB_NODELIST;
    - since Slurm 22.05 srun does not inherit the job's --cpus-per-task: `-c` gives each agent the CPUs
      sbatch got per task (the plugin's --cpus-per-task: the rule's threads, as no cpus_per_task resource
      is set);
    - `--gres=gpu:G` gives each node's agent its G GPUs (CUDA_VISIBLE_DEVICES per node);
    - the port is derived from the job id (20000-29999, below Linux's ephemeral ports), so two jobs that
      share a first host do not collide."""
    nodes, per_node = train_cfg["nodes"], train_cfg["gpus"] // train_cfg["nodes"]
    gres = f" --gres=gpu:{RES['gpu'] * per_node}" if RES["gpu"] else ""
    head = '$(scontrol show hostnames "$(squeue -h -j "$SLURM_JOB_ID" -o %N)" | head -1)'
    port = "$((20000 + SLURM_JOB_ID % 10000))"
    return (
        f"srun -N {nodes} -n {nodes} --ntasks-per-node=1 -c {cpus}{gres} python -m torch.distributed.run "
        f"--nnodes {nodes} --nproc_per_node {per_node} --rdzv_backend c10d "
        f'--rdzv_endpoint "{head}:{port}" --rdzv_id "$SLURM_JOB_ID" -m'
    )


def gpus(train_cfg):
    """The `gpu` resource: the plugin makes it `--gpus=N`, a total for the job that SLURM may spread over
    any nodes; a multi-node job asks per node instead (train_resources) and has none."""
    return 0 if train_cfg["nodes"] > 1 else RES["gpu"] * train_cfg["gpus"]


def granted_gpus(train_cfg, resources):
    """distdyn.train's --gpu (0: train on the CPU): the job's `gpu` resource, as a cap left it (a local
    `--resources gpu=0`); a multi-node job, which has none, is told its GPUs on all nodes."""
    return RES["gpu"] * train_cfg["gpus"] if train_cfg["nodes"] > 1 else resources.gpu


def train_resources(train_cfg):
    """A training job's nodes, in snakemake-executor-plugin-slurm 2.8's terms (its submit_string.py and
    utils.set_gres_string, and the jobstep plugin's run_job); a local run ignores them.
    - One node: `nodes=1` -> `sbatch --nodes=1`, so the job's GPUs are on the node its torchrun uses.
    - N nodes: `nodes=N` -> `--nodes=N`; `mpi` makes the jobstep plugin run the shell as is (not in
      `srun -n1`) so that its own srun starts the agents (multinode_launcher); `tasks=N` -> `--ntasks=N`,
      one agent per node (`tasks_per_node=1` would say the same, but the plugin refuses it with `mpi`);
      `tasks_per_gpu=0`, else a GPU job that sets `tasks` gets `--ntasks-per-gpu=N`; `gres="gpu:G"` ->
      `--gres=gpu:G`, G GPUs on each node (the `gpu` resource would be `--gpus`, a job total)."""
    nodes = train_cfg["nodes"]
    if nodes == 1:
        return {"nodes": 1}
    per_node = RES["gpu"] * train_cfg["gpus"] // nodes
    gres = {"gres": f"gpu:{per_node}"} if per_node else {}
    return {"nodes": nodes, "mpi": "srun", "tasks": nodes, "tasks_per_gpu": 0, **gres}


# The config key of each training rule's node count.
NODES_KEY = {
    "pretrain_teacher": "teacher.train.nodes",
    "distill_group": "student.train.nodes",
    "distill_student": "student.train.nodes",
}


def refuse_nodes_without_slurm():
    """One line and exit status 1, before any job starts, when a job that must run would span nodes and the
    executor is not SLURM's: only there does the job get the allocation its srun starts the agents in.
    Called from `onstart`, the first moment the executor is known (Snakemake 9 sets workflow.executor_plugin
    in Workflow.execute, after the Snakefile is read) and never for a dry run or in a job (--no-hooks)."""
    plugin = workflow.executor_plugin
    if plugin is None or plugin.name == "slurm" or workflow.touch:
        return
    for job in workflow.dag.needrun_jobs():
        if job.rule.name in NODES_KEY and job.resources.get("nodes", 1) > 1:
            key = NODES_KEY[job.rule.name]
            message = (
                f"{job.resources.nodes} nodes need the SLURM executor (snakemake --profile profiles/slurm, "
                f"docs/slurm.md), this run's is {plugin.name!r}: set {key}: 1 to train on this machine"
            )
            print(error_line(DistdynError(f"config key '{key}'", message)), file=sys.stderr, flush=True)
            raise SystemExit(1)


onstart:
    refuse_nodes_without_slurm()


def model_weights(wildcards):
    """The checkpoint a model's dump reads: the trained or imported teacher, or an extra model's weights."""
    if wildcards.model == "teacher":
        return "results/teacher/final.pt"
    return f"results/models/{wildcards.model}/weights.pt"


def weights_source(name):
    """The fetch command's flags for the teacher's pretrained weights or an extra model's weights."""
    entry = {"pretrained": config["teacher"]["pretrained"], "checkpoint": None, **TEACHER_SPEC["model"]}
    entry, key = EXTRA_MODELS.get(name, entry), "teacher"
    if name in EXTRA_MODELS:
        key = f"extra_models[{list(EXTRA_MODELS).index(name)}]"
    model = as_json({"model": entry["model"], "overrides": entry.get("overrides", {})})
    flags = f"--name {name} --key {key} --model {shlex.quote(model)}"
    if entry["checkpoint"]:
        return f"{flags} --checkpoint {shlex.quote(entry['checkpoint'])}"
    return f"{flags} --pretrained {shlex.quote(as_json(entry['pretrained']))}"


def weights_file(name):
    """The local file fetch_weights reads (a checkpoint, or a pretrained weights file), as its input: one
    replaced at the same path is imported again. A tag or hub id has none (fetched once)."""
    from distdyn.models import is_weights_file

    entry = EXTRA_MODELS.get(name, {"pretrained": config["teacher"]["pretrained"], "checkpoint": None})
    if entry["checkpoint"]:
        return [entry["checkpoint"]]
    return [entry["pretrained"]] if is_weights_file(entry["pretrained"]) else []


def model_role(name):
    return "teacher" if name == "teacher" else "model"


# What each reader must find: a dump's identifying attributes (as the dump rules write them), and the
# rows of each per-run table (models x layers x metrics); another run's file or a truncated one is an error.
from distdyn.metrics import LAYER_METRICS  # noqa: E402

MODEL_SHAPES = {"teacher": _SHAPES["teacher"]} if SETTINGS else {}
MODEL_SHAPES.update(
    {m: _build_shape(f"extra_models[{i}]", e, DATA_INFO) for i, (m, e) in enumerate(EXTRA_MODELS.items())}
)


def model_identity(name):
    """The attributes of results/activations/{name}.h5 (the teacher's, or an extra model's)."""
    if name == "teacher":
        return {
            "model": "teacher",
            "role": "teacher",
            "setting": "teacher",
            "seed": config["teacher"]["seed"],
            "epoch": config["teacher"]["train"]["epochs"],
            "checkpoint": "final",
        }
    return {"model": name, "role": "model", "setting": name, "seed": 0, "epoch": 0, "checkpoint": "final"}


def student_identities(setting, seed):
    """The attributes of each of one run's dumps, in STUDENT_CKPTS order."""
    epochs = checkpoint_epochs(config["student"]["train"]) + [config["student"]["train"]["epochs"]]
    return [
        {
            "model": f"{setting}/seed_{seed}/{c}",
            "role": "student",
            "setting": setting,
            "seed": int(seed),
            "epoch": e,
            "checkpoint": c,
        }
        for c, e in zip(STUDENT_CKPTS, epochs)
    ]


def run_table_expect(kind):
    """gather's --expect for run_tables(kind): per table its models x layers (x metrics), as errors.check_complete."""
    runs = [([m], MODEL_SHAPES[m]) for m in MODELS] + [
        ([i["model"] for i in student_identities(s, seed)], _SHAPES["student"]) for s, seed in student_runs()
    ]
    out = []
    for models, (depth, width) in runs:
        keys = [["model", models], ["layer", list(range(1, depth + 1))]]
        if kind == "layers.csv":
            out.append({"keys": keys + [["metric", list(LAYER_METRICS)]], "per_group": 1})
        else:
            out.append({"keys": keys, "per_group": width // 2})
    return as_json(out)


def cka_expect():
    """gather_cka's --expect: per run, its checkpoints x student blocks x teacher blocks."""
    return as_json(
        [
            {
                "keys": [
                    ["model", [i["model"] for i in student_identities(s, seed)]],
                    ["student_layer", list(range(1, _SHAPES["student"][0] + 1))],
                    ["teacher_layer", list(range(1, _SHAPES["teacher"][0] + 1))],
                ],
                "per_group": 1,
            }
            for s, seed in student_runs()
        ]
    )


def run_dir(setting, seed):
    return f"results/students/{setting}/seed_{seed}"


def setting_needs_teacher(setting):
    from distdyn.methods import needs_teacher

    return needs_teacher(next(s for s in config["settings"] if s["name"] == setting)["method"])


def student_runs():
    return [(s, seed) for s in SETTINGS for seed in SEEDS]


# Students of one seed see the same batches. With student.share_teacher (the default), those that
# need the teacher train in one distill_group job per seed: one teacher forward per batch, then each
# student's own step (distdyn.train --group). It publishes each finished student to STUDENT_STORE
# under the hash of its spec and code and the content digest of the teacher, and skips students
# already stored there for that teacher (or finished in their output folder under the same key): a
# changed or added setting trains only itself, a changed teacher every student that reads it.
# Each student keeps its own distill_student job, params and outputs; for a shared student the job
# restores its files from the store (distdyn.store restore: copies, no training) and trains alone
# only when nothing is stored for its teacher (the entry records the teacher's content digest).
# The group job's outputs are one small status file per student, named by the hash of that
# student's spec (seed aside) and code, and each student's job takes its own as an ancient() input.
# When one student changes, only its file is new: the group job runs, and of the student jobs only
# the changed one follows it (Snakemake does not propagate a re-run through an ancient input that
# exists). The others' files are rewritten, unchanged in content, and their jobs stay done.
STUDENT_STORE = "results/.resume/students/done"
# A group of one would share nothing: then every student trains in its own job.
SHARED_SETTINGS = [s for s in SETTINGS if setting_needs_teacher(s)] if config["student"]["share_teacher"] else []
SHARED_SETTINGS = SHARED_SETTINGS if len(SHARED_SETTINGS) > 1 else []


def student_resume(setting, seed):
    return f"results/.resume/students/{setting}_seed_{seed}.pt"


def attempts_log(resume):
    """Where a training job's attempts write their log lines, one after the other (Snakemake deletes a job's
    log before each attempt); a finished job's log gets them all. Beside the resume state, but not named
    like its files (`<stem>.*`), which a finished run clears."""
    return resume.removesuffix(".pt") + "-attempts.log"


def student_entry(setting, seed):
    from distdyn.store import entry_dir

    # the key covers the spec and the same code fingerprint as the rule's params.code
    return str(entry_dir(STUDENT_STORE, STUDENT_SPECS[(setting, int(seed))], student_code(setting)))


def student_code(setting):
    return with_method(code_fingerprint("distdyn.train"), setting)


def ready_file(setting, seed="{seed}"):
    """The group job's status file of one student (a pattern with {seed} unless a seed is given)."""
    from distdyn.store import job_key

    spec = {**STUDENT_SPECS[(setting, SEEDS[0])], "seed": None}  # the same for every seed but the seed
    return f"results/students/shared/seed_{seed}/{setting}.{job_key(spec, student_code(setting))}.json"


def group_members(seed):
    return [
        {
            "spec": STUDENT_SPECS[(s, int(seed))],
            "out": run_dir(s, seed),
            "resume": student_resume(s, seed),
            "ready": ready_file(s, seed),
            "code": student_code(s),
        }
        for s in SHARED_SETTINGS
    ]


# Scheduler requests of the training jobs (distdyn.requests: GPUs, nodes, CPUs and memory per node,
# runtime from the throughput table), the same that `python -m distdyn.plan` shows. A group job's grow
# with its students, which share each batch's loading and teacher forward.
TEACHER_REQUEST = train_request(config, "teacher", DATA_INFO)
GROUP_REQUEST = train_request(config, "student", DATA_INFO, [True] * max(len(SHARED_SETTINGS), 1))


def retries(n):
    """A training job's Snakemake retries: taken by the Snakemake that submits it (each attempt a job of its own,
    under SLURM a new allocation); none inside a SLURM job (remote execution), whose Snakemake would otherwise
    retry within the allocation that is about to end."""
    return 0 if workflow.remote_exec else n


def student_request(setting):
    return train_request(config, "student", DATA_INFO, [setting_needs_teacher(setting)])


def final_targets():
    """Everything a run makes; without settings (analysis only) no training, accuracy, CKA or claims."""
    tables = ["layers.csv", "spectra.csv", "phases.csv", "encoding.csv"]
    if SETTINGS:
        tables += ["accuracy.csv", "accuracy_summary.csv", "curves.csv", "cka.csv"]
    return (
        [f"results/metrics/{t}" for t in tables]
        + (["results/claims.md"] if SETTINGS else [])
        + [f"results/metrics/entropy_{m}.csv" for m in MODELS]
        + [f"results/metrics/entropy_{s}_seed_{seed}.csv" for s, seed in student_runs()]
        + [f"results/figures/{f}.png" for f in FIGURES]
        + [f"results/figures/entropy_heatmap_{s}.png" for s in SETTINGS]
        + [f"results/figures/cka_{s}.png" for s in SETTINGS]
    )


def run_tables(name):
    """One per-run metrics table of the teacher, of every extra model and of every student run."""
    return [f"results/metrics/runs/{m}/{name}" for m in MODELS] + [
        f"results/metrics/runs/{s}/seed_{seed}/{name}" for s, seed in student_runs()
    ]


def figure(name, category, caption):
    return report(f"results/figures/{name}.png", caption=f"../report/{caption}.rst", category=category)


def model_figure(model, kind):
    """A per-model figure ({model}_{kind}.png) in the report: the teacher's, or an extra model's."""
    category = "1. Teacher" if model == "teacher" else "1. Models analysed"
    return report(
        f"results/figures/{model}_{kind}.png",
        caption=f"../report/model_{kind}.rst",
        category=category,
        subcategory=None if model == "teacher" else model,
        labels={"model": model, "figure": kind},
    )


def claims_options():
    """The claims rule's thresholds from config (claims.*), as CLI flags."""
    c = config["claims"]
    flags = {
        "--level": c["level"],
        "--neutral-tolerance": c["neutral_tolerance"],
        "--noise-floor": c["noise_floor"],
        "--early-fraction": c["early_fraction"],
        "--entropy-noise-floor": c["entropy_noise_floor"],
        "--loss-ratio-floor": c["loss_ratio_floor"],
    }
    return " ".join(f"{k} {v}" for k, v in flags.items() if v is not None)
