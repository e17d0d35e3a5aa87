# Fetching needs internet, which cluster jobs often lack: it runs on the submitting machine.
localrules:
    fetch_weights,


rule fetch_weights:
    input:
        weights=lambda w: weights_file(w.fetched),
    output:
        "results/models/{fetched}/weights.pt",
    log:
        "results/logs/fetch_weights/{fetched}.log",
    conda:
        ENV
    params:
        code=code_fingerprint("distdyn.models"),
        source=lambda w: weights_source(w.fetched),
        shape=f"--num-classes {DATA_INFO.num_classes} --in-chans {DATA_INFO.in_chans}",
    shell:
        "python -m distdyn.models fetch {params.source} {params.shape} --out {output} > {log} 2>&1"


# Training jobs: each attempt (the next segment under a time limit, or a retry after a preemption:
# distdyn.segments) resumes from the saved state; their logs add up, and a finished job's log holds them all.
rule pretrain_teacher:
    input:
        checkpoint=[TEACHER_SPEC["checkpoint"]] if TEACHER_SPEC["checkpoint"] else [],
    output:
        final="results/teacher/final.pt",
        log="results/teacher/log.jsonl",
        epochs=expand("results/teacher/epoch_{e}.pt", e=TEACHER_EPOCHS),
    log:
        "results/logs/pretrain_teacher.log",
    benchmark:
        "results/benchmarks/pretrain_teacher.tsv"
    retries: retries(TEACHER_REQUEST.retries)
    conda:
        ENV
    threads: TEACHER_REQUEST.cpus
    resources:
        **train_resources(config["teacher"]["train"]),
        gpu=gpus(config["teacher"]["train"]),
        mem_mb=TEACHER_REQUEST.mem_mb,
        runtime=TEACHER_REQUEST.runtime,
        attempt=lambda w, attempt: attempt,
    params:
        code=code_fingerprint("distdyn.train"),
        spec=as_json(TEACHER_SPEC),
        launch=lambda w, threads: launcher(config["teacher"]["train"], threads),
        gpus=lambda w, resources: granted_gpus(config["teacher"]["train"], resources),
        out=lambda w, output: os.path.dirname(output.final),
        resume="results/.resume/teacher.pt",
        history=attempts_log("results/.resume/teacher.pt"),
    shell:
        "mkdir -p $(dirname {params.history}); [ {resources.attempt} -gt 1 ] || : > {params.history}; "
        "python -m distdyn.slots {resources.gpu} -- "
        "{params.launch} distdyn.train --spec {params.spec:q} --out {params.out} "
        "--resume {params.resume} --code {params.code:q} --gpu {params.gpus} --threads {threads} "
        '--data-root "$DISTDYN_DATA_ROOT" --num-workers $DISTDYN_NUM_WORKERS --attempt {resources.attempt} '
        "2>&1 | (trap '' TERM; exec tee -a {params.history}) > {log}; cp {params.history} {log}"


rule distill_group:
    input:
        teacher="results/teacher/final.pt",
    output:
        # (a placeholder no job asks for when no students share the teacher)
        ready=[ready_file(s) for s in SHARED_SETTINGS] or ["results/students/shared/seed_{seed}/none"],
    log:
        "results/logs/distill_group/seed_{seed}.log",
    benchmark:
        "results/benchmarks/distill_group/seed_{seed}.tsv"
    retries: retries(GROUP_REQUEST.retries)
    conda:
        ENV
    threads: GROUP_REQUEST.cpus
    resources:
        **train_resources(config["student"]["train"]),
        gpu=gpus(config["student"]["train"]),
        mem_mb=GROUP_REQUEST.mem_mb,
        runtime=GROUP_REQUEST.runtime,
        attempt=lambda w, attempt: attempt,
    params:
        code=code_fingerprint("distdyn.train"),
        members=lambda w: as_json(group_members(w.seed)),
        store=STUDENT_STORE,
        history=lambda w: attempts_log(f"results/.resume/students/group_seed_{w.seed}.pt"),
        launch=lambda w, threads: launcher(config["student"]["train"], threads),
        gpus=lambda w, resources: granted_gpus(config["student"]["train"], resources),
    shell:
        "mkdir -p $(dirname {params.history}); [ {resources.attempt} -gt 1 ] || : > {params.history}; "
        "python -m distdyn.slots {resources.gpu} -- "
        "{params.launch} distdyn.train --group {params.members:q} --teacher {input.teacher} "
        "--store {params.store} --code {params.code:q} --gpu {params.gpus} --threads {threads} "
        '--data-root "$DISTDYN_DATA_ROOT" --num-workers $DISTDYN_NUM_WORKERS --attempt {resources.attempt} '
        "2>&1 | (trap '' TERM; exec tee -a {params.history}) > {log}; cp {params.history} {log}"


rule distill_student:
    input:
        teacher=lambda w: "results/teacher/final.pt" if setting_needs_teacher(w.setting) else [],
    output:
        final="results/students/{setting}/seed_{seed}/final.pt",
        log="results/students/{setting}/seed_{seed}/log.jsonl",
        epochs=expand("results/students/{{setting}}/seed_{{seed}}/{ckpt}.pt", ckpt=STUDENT_CKPTS[:-1]),
    log:
        "results/logs/distill_student/{setting}_seed_{seed}.log",
    benchmark:
        "results/benchmarks/distill_student/{setting}_seed_{seed}.tsv"
    wildcard_constraints:
        setting=alternatives([s for s in SETTINGS if s not in SHARED_SETTINGS]),
    retries: retries(max([student_request(s).retries for s in SETTINGS], default=0))
    conda:
        ENV
    threads: lambda w: student_request(w.setting).cpus
    resources:
        **train_resources(config["student"]["train"]),
        gpu=gpus(config["student"]["train"]),
        mem_mb=lambda w: student_request(w.setting).mem_mb,
        runtime=lambda w: student_request(w.setting).runtime,
        attempt=lambda w, attempt: attempt,
    params:
        code=lambda w: with_method(code_fingerprint("distdyn.train"), w.setting),
        spec=lambda w: as_json(STUDENT_SPECS[(w.setting, int(w.seed))]),
        entry=lambda w: student_entry(w.setting, w.seed),
        teacher=lambda w, input: f"--teacher {input.teacher}" if input.teacher else "",
        out=lambda w, output: os.path.dirname(output.final),
        resume=lambda w: student_resume(w.setting, w.seed),
        history=lambda w: attempts_log(student_resume(w.setting, w.seed)),
        launch=lambda w, threads: launcher(config["student"]["train"], threads),
        gpus=lambda w, resources: granted_gpus(config["student"]["train"], resources),
    shell:
        "mkdir -p $(dirname {params.history}); [ {resources.attempt} -gt 1 ] || : > {params.history}; "
        "python -m distdyn.store restore {params.entry} --out {params.out} {params.teacher} --threads {threads} "
        "--gpu {params.gpus} -- python -m distdyn.slots {resources.gpu} -- "
        "{params.launch} distdyn.train --spec {params.spec:q} --out {params.out} {params.teacher} "
        "--resume {params.resume} --code {params.code:q} --gpu {params.gpus} --threads {threads} "
        '--data-root "$DISTDYN_DATA_ROOT" --num-workers $DISTDYN_NUM_WORKERS --attempt {resources.attempt} '
        "2>&1 | (trap '' TERM; exec tee -a {params.history}) > {log}; cp {params.history} {log}"


# A student that trained in its seed's group job: its files are copied from the store (a reflink or a
# copy, a fraction of a second), so the job asks for no GPU and runs where Snakemake runs (under SLURM,
# on the submitting machine, instead of waiting in the queue for nothing).
localrules:
    restore_student,


rule restore_student:
    input:
        teacher="results/teacher/final.pt",
        ready=lambda w: ancient(ready_file(w.setting, w.seed)),
    output:
        final="results/students/{setting}/seed_{seed}/final.pt",
        log="results/students/{setting}/seed_{seed}/log.jsonl",
        epochs=expand("results/students/{{setting}}/seed_{{seed}}/{ckpt}.pt", ckpt=STUDENT_CKPTS[:-1]),
    log:
        "results/logs/restore_student/{setting}_seed_{seed}.log",
    wildcard_constraints:
        setting=alternatives(SHARED_SETTINGS),
    conda:
        ENV
    params:
        code=code_fingerprint("distdyn.store"),
        # the code the stored run was trained with: a changed method names its file in the rerun's reason
        trained_with=lambda w: student_code(w.setting),
        entry=lambda w: student_entry(w.setting, w.seed),
        out=lambda w, output: os.path.dirname(output.final),
    shell:
        "python -m distdyn.store restore {params.entry} --out {params.out} --teacher {input.teacher} "
        "--ready {input.ready} > {log} 2>&1"
