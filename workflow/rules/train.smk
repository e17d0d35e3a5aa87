# Fetching needs internet, which cluster jobs often lack: it runs on the submitting machine.
localrules:
    fetch_weights,


rule fetch_weights:
    output:
        "results/models/{fetched}/weights.pt",
    params:
        code=code_fingerprint("distdyn.models"),
        source=lambda w: weights_source(w.fetched),
        shape=f"--num-classes {DATA_INFO.num_classes} --in-chans {DATA_INFO.in_chans}",
    conda:
        ENV
    log:
        "results/logs/fetch_weights/{fetched}.log",
    shell:
        "python -m distdyn.models fetch {params.source} {params.shape} --out {output} > {log} 2>&1"


rule pretrain_teacher:
    input:
        checkpoint=[TEACHER_SPEC["checkpoint"]] if TEACHER_SPEC["checkpoint"] else [],
    output:
        final="results/teacher/final.pt",
        log="results/teacher/log.jsonl",
        epochs=expand("results/teacher/epoch_{e}.pt", e=TEACHER_EPOCHS),
    params:
        code=code_fingerprint("distdyn.train"),
        spec=as_json(TEACHER_SPEC),
        launch=launcher(config["teacher"]["train"]),
    conda:
        ENV
    log:
        "results/logs/pretrain_teacher.log",
    benchmark:
        "results/benchmarks/pretrain_teacher.tsv"
    threads: config["teacher"]["train"]["threads"]
    resources:
        gpu=gpus(config["teacher"]["train"]),
        mem_mb=RES["train_mem_mb"],
        runtime=RES["train_runtime"],
    shell:
        "{params.launch} distdyn.train --spec {params.spec:q} --out results/teacher "
        "--resume results/.resume/teacher.pt --gpu {resources.gpu} --threads {threads} > {log} 2>&1"


# Students of one seed see the same batches. With student.share_teacher (the default), those that
# need the teacher train in one distill_group job per seed: one teacher forward per batch, then each
# student's own step (distdyn.train --group). It publishes each finished student to STUDENT_STORE
# under the hash of its spec and code, and skips students already stored there (or finished in
# their output folder under the same hash): a changed or added setting trains only itself.
# Each student keeps its own distill_student job, params and outputs; for a shared student the job
# restores its files from the store (distdyn.store restore: hard links, no training) and trains
# alone only when nothing is stored.
# The group job's outputs are one small status file per student, named by the hash of that
# student's spec (seed aside) and code, and each student's job takes its own as an ancient() input.
# When one student changes, only its file is new: the group job runs, and of the student jobs only
# the changed one follows it (Snakemake does not propagate a re-run through an ancient input that
# exists). The others' files are rewritten, unchanged in content, and their jobs stay done.
STUDENT_STORE = "results/.resume/students/done"
# A group of one would share nothing: then every student trains in its own job.
SHARED_SETTINGS = [s for s in SETTINGS if needs_teacher(s)] if config["student"]["share_teacher"] else []
SHARED_SETTINGS = SHARED_SETTINGS if len(SHARED_SETTINGS) > 1 else []


def student_resume(setting, seed):
    return f"results/.resume/students/{setting}_seed_{seed}.pt"


def student_entry(setting, seed):
    from distdyn.store import entry_dir

    # the key covers the spec and the same code fingerprint as the rule's params.code
    return str(entry_dir(STUDENT_STORE, STUDENT_SPECS[(setting, int(seed))], code_fingerprint("distdyn.train")))


def ready_file(setting, seed="{seed}"):
    """The group job's status file of one student (a pattern with {seed} unless a seed is given)."""
    from distdyn.store import job_key

    spec = {**STUDENT_SPECS[(setting, SEEDS[0])], "seed": None}  # the same for every seed but the seed
    return f"results/students/shared/seed_{seed}/{setting}.{job_key(spec, code_fingerprint('distdyn.train'))}.json"


def group_members(seed):
    return [
        {"spec": STUDENT_SPECS[(s, int(seed))], "out": run_dir(s, seed), "resume": student_resume(s, seed),
         "ready": ready_file(s, seed)}
        for s in SHARED_SETTINGS
    ]


# Scheduler resources of a group job grow with its students: each adds its model, optimizer and
# loss state (resources.group_member_mem_mb) and at most one student's training time.
GROUP_MEM_MB = RES["train_mem_mb"] + max(len(SHARED_SETTINGS) - 1, 0) * RES["group_member_mem_mb"]
GROUP_RUNTIME = RES["train_runtime"] * max(len(SHARED_SETTINGS), 1)


rule distill_group:
    input:
        teacher="results/teacher/final.pt",
    output:
        # (a placeholder no job asks for when no students share the teacher)
        ready=[ready_file(s) for s in SHARED_SETTINGS] or ["results/students/shared/seed_{seed}/none"],
    params:
        code=code_fingerprint("distdyn.train"),
        members=lambda w: as_json(group_members(w.seed)),
        launch=launcher(config["student"]["train"]),
    conda:
        ENV
    log:
        "results/logs/distill_group/seed_{seed}.log",
    benchmark:
        "results/benchmarks/distill_group/seed_{seed}.tsv"
    threads: config["student"]["train"]["threads"]
    resources:
        gpu=gpus(config["student"]["train"]),
        mem_mb=GROUP_MEM_MB,
        runtime=GROUP_RUNTIME,
    shell:
        "{params.launch} distdyn.train --group {params.members:q} --teacher {input.teacher} "
        "--store " + STUDENT_STORE + " --code {params.code:q} --gpu {resources.gpu} --threads {threads} > {log} 2>&1"


rule distill_student:
    input:
        teacher=lambda w: "results/teacher/final.pt" if needs_teacher(w.setting) else [],
        ready=lambda w: ancient(ready_file(w.setting, w.seed)) if w.setting in SHARED_SETTINGS else [],
    output:
        final="results/students/{setting}/seed_{seed}/final.pt",
        log="results/students/{setting}/seed_{seed}/log.jsonl",
        epochs=expand("results/students/{{setting}}/seed_{{seed}}/{ckpt}.pt", ckpt=STUDENT_CKPTS[:-1]),
    params:
        code=code_fingerprint("distdyn.train"),
        spec=lambda w: as_json(STUDENT_SPECS[(w.setting, int(w.seed))]),
        entry=lambda w: student_entry(w.setting, w.seed),
        teacher=lambda w, input: f"--teacher {input.teacher}" if input.teacher else "",
        launch=launcher(config["student"]["train"]),
    conda:
        ENV
    log:
        "results/logs/distill_student/{setting}_seed_{seed}.log",
    benchmark:
        "results/benchmarks/distill_student/{setting}_seed_{seed}.tsv"
    threads: config["student"]["train"]["threads"]
    resources:
        gpu=gpus(config["student"]["train"]),
        mem_mb=RES["train_mem_mb"],
        runtime=RES["train_runtime"],
    shell:
        "python -m distdyn.store restore {params.entry} --out results/students/{wildcards.setting}/seed_{wildcards.seed} -- "
        "{params.launch} distdyn.train --spec {params.spec:q} --out results/students/{wildcards.setting}/seed_{wildcards.seed} "
        "{params.teacher} --resume results/.resume/students/{wildcards.setting}_seed_{wildcards.seed}.pt "
        "--code {params.code:q} --gpu {resources.gpu} --threads {threads} > {log} 2>&1"
