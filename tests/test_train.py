import json

import pytest
import torch

from distdyn import runtime, train
from distdyn.config import student_spec, teacher_spec
from distdyn.hashing import checkpoint_digest
from distdyn.models import load_checkpoint
from helpers import TIMING, assert_close_weights, log_lines, train_teacher, weights


@pytest.fixture
def teacher_ckpt(tiny_cfg, tmp_path):
    return train_teacher(tiny_cfg, tmp_path / "teacher")


def test_log_lines_and_checkpoints(tiny_cfg, teacher_ckpt, tmp_path):
    out = tmp_path / "s"
    train.run(student_spec(tiny_cfg, "spectral_last", 0), out, teacher_path=str(teacher_ckpt))
    lines = log_lines(out / "log.jsonl")
    assert [l["epoch"] for l in lines] == [1, 2]
    keys = {"epoch", "lr", "train_loss", "train_loss_base", "train_loss_feat", "train_loss_dist", "test_loss",
            "test_acc1", "test_acc5", "seconds", "images_per_s"}
    assert keys <= set(lines[0])
    assert lines[0]["train_loss_feat"] > 0 and lines[0]["train_loss_dist"] > 0
    assert (out / "epoch_1.pt").is_file() and (out / "final.pt").is_file()
    ckpt = torch.load(out / "final.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["arch"] == "vit_tiny_patch16_224" and ckpt["name"] == "spectral_last"
    # each validation image's top-1 correctness at the end (for McNemar's test): it makes the final top-1
    correct = ckpt["val_correct"]
    assert correct.dtype == torch.bool and correct.ndim == 1 and len(correct) > 10
    assert 100.0 * correct.float().mean().item() == pytest.approx(lines[-1]["test_acc1"])
    assert "val_correct" not in torch.load(out / "epoch_1.pt", weights_only=True)
    assert not list(out.glob("*.tmp"))


def test_same_seed_is_bit_identical(tiny_cfg, teacher_ckpt, tmp_path):
    spec = student_spec(tiny_cfg, "projector_first", 0)
    spec["train"]["epochs"] = 1
    a = train.run(spec, tmp_path / "a", teacher_path=str(teacher_ckpt))
    b = train.run(spec, tmp_path / "b", teacher_path=str(teacher_ckpt))
    strip = lambda lines: [{k: v for k, v in l.items() if k not in TIMING} for l in lines]  # noqa: E731
    assert strip(a) == strip(b)
    wa, wb = weights(tmp_path / "a" / "final.pt"), weights(tmp_path / "b" / "final.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_different_seed_differs(tiny_cfg, tmp_path):
    spec = student_spec(tiny_cfg, "baseline", 0)
    spec["train"]["epochs"] = 1
    train.run(spec, tmp_path / "a")
    spec["seed"] = 1
    train.run(spec, tmp_path / "b")
    wa, wb = weights(tmp_path / "a" / "final.pt"), weights(tmp_path / "b" / "final.pt")
    assert not all(torch.equal(wa[k], wb[k]) for k in wa)


def test_non_finite_loss_names_setting_seed_epoch_term(tiny_cfg, teacher_ckpt, tmp_path):
    spec = student_spec(tiny_cfg, "spectral_last", 3)
    spec["setting"]["feature_weight"] = float("inf")
    with pytest.raises(train.NonFiniteLossError,
                       match=r"non-finite total loss .* setting 'spectral_last', seed 3, epoch 1"):
        train.run(spec, tmp_path / "s", teacher_path=str(teacher_ckpt))


def test_teacher_from_checkpoint(tiny_cfg, teacher_ckpt, tmp_path):
    # A bare timm state dict, as a user would bring.
    bare = tmp_path / "bare.pt"
    torch.save(weights(teacher_ckpt), bare)
    spec = teacher_spec(tiny_cfg)
    spec["checkpoint"] = str(bare)
    spec["train"]["epochs"] = 0
    lines = train.run(spec, tmp_path / "imported")
    original = json.loads((teacher_ckpt.parent / "log.jsonl").read_text().splitlines()[-1])
    assert lines[0]["epoch"] == 0 and lines[0]["test_acc1"] == pytest.approx(original["test_acc1"])
    w = weights(tmp_path / "imported" / "final.pt")
    assert all(torch.equal(w[k], weights(teacher_ckpt)[k]) for k in w)


def test_teacher_with_a_checkpoint_and_epochs_is_fine_tuned_from_it(tiny_cfg, teacher_ckpt, tmp_path):
    spec = teacher_spec(tiny_cfg)
    spec["train"]["epochs"] = 1
    fresh = train.run(spec, tmp_path / "fresh")
    spec["checkpoint"] = str(teacher_ckpt)
    tuned = train.run(spec, tmp_path / "tuned")
    assert [l["epoch"] for l in tuned] == [1]
    assert tuned[0]["train_loss"] < fresh[0]["train_loss"]  # it starts from the trained weights
    assert not all(torch.equal(a, b) for a, b in zip(weights(tmp_path / "tuned" / "final.pt").values(),
                                                       weights(teacher_ckpt).values()))


def test_teacher_checkpoint_that_does_not_fit(tiny_cfg, tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"model": {"nope": torch.zeros(1)}}, bad)
    spec = teacher_spec(tiny_cfg)
    spec["checkpoint"] = str(bad)
    with pytest.raises(ValueError, match="teacher.checkpoint .*bad.pt: does not fit"):
        train.run(spec, tmp_path / "t")


def test_authors_lr_step_repeats_the_first_value(tiny_cfg, tmp_path):
    spec = teacher_spec(tiny_cfg)
    spec["train"].update(epochs=3, warmup_epochs=2, lr_step="authors")
    authors = [l["lr"] for l in train.run(spec, tmp_path / "a")]
    spec["train"]["lr_step"] = "exact"
    exact = [l["lr"] for l in train.run(spec, tmp_path / "b")]
    assert authors[0] == authors[1] == exact[0]
    assert authors[2] == exact[1]


def test_compile_mode_from_config_and_default_under_ddp():
    cfg = {"amp": "auto", "compile": "on", "compile_mode": "reduce-overhead"}
    rt = runtime.make_runtime(cfg, gpu=0, device="cpu")
    assert rt.compile and rt.compile_mode == "reduce-overhead" and rt.amp_dtype is None
    assert runtime.compile_mode(cfg, world=2) == "default"


@pytest.mark.slow
def test_compiled_training_loop_matches_eager_on_cpu(tiny_cfg, teacher_ckpt, tmp_path):
    """train.compile: on runs the real loop under torch.compile (inductor on CPU) in the default compile_mode."""
    spec = student_spec(tiny_cfg, "spectral_last", 0)
    assert spec["train"]["compile_mode"] == "default"
    spec["train"]["epochs"] = 1
    eager = train.run(spec, tmp_path / "eager", teacher_path=str(teacher_ckpt))
    spec["train"]["compile"] = "on"
    compiled = train.run(spec, tmp_path / "compiled", teacher_path=str(teacher_ckpt))
    assert compiled[0]["train_loss"] == pytest.approx(eager[0]["train_loss"], rel=1e-4)
    assert_close_weights(tmp_path / "compiled" / "final.pt", tmp_path / "eager" / "final.pt", rtol=1e-3, atol=1e-4)


def _ckpt_equal(a, b):
    """Two checkpoints hold the same weights (bit for bit), the same per-image correctness and the same record."""
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    wa, wb = ca.pop("model"), cb.pop("model")
    xa, xb = ca.pop("val_correct", None), cb.pop("val_correct", None)
    same_correct = (xa is None and xb is None) or (xa is not None and xb is not None and torch.equal(xa, xb))
    return ca == cb and same_correct and wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_group_members_are_bit_identical_to_training_alone(tiny_raw, teacher_ckpt, tmp_path):
    """One teacher forward per batch for all members, each member's step on its own RNG stream: with
    dropout and drop-path drawing from it, every member's weights, checkpoints and log lines equal
    those of training it alone (and a member without the teacher can train in the group too)."""
    from distdyn.config import load_config

    tiny_raw["student"]["overrides"].update(drop_rate=0.1, drop_path_rate=0.2)
    cfg = load_config(tiny_raw)
    names = ["logit", "spectral_last", "projector_first", "baseline"]
    members = [{"spec": student_spec(cfg, n, 0), "out": str(tmp_path / "group" / n)} for n in names]
    status = train.run_group(members, teacher_path=str(teacher_ckpt))
    assert status == {n: "trained" for n in names}
    for n in names:
        train.run(student_spec(cfg, n, 0), tmp_path / "alone" / n, teacher_path=str(teacher_ckpt))
        for f in ("epoch_1.pt", "final.pt"):
            assert _ckpt_equal(tmp_path / "group" / n / f, tmp_path / "alone" / n / f), (n, f)
        group, alone = (log_lines(tmp_path / d / n / "log.jsonl", TIMING) for d in ("group", "alone"))
        assert group == alone, n
    # the members really differ from each other (own losses, own streams)
    assert not _ckpt_equal(tmp_path / "group" / "logit" / "final.pt", tmp_path / "group" / "spectral_last" / "final.pt")


def test_one_seed_pairs_the_settings_same_init_batches_and_stream(tiny_raw, teacher_ckpt, tmp_path):
    """Paired by design (the claims' paired t rests on it): at one seed every setting's student starts from the
    same weights, sees the same batches and steps on the same RNG stream (dropout, drop-path), whatever the
    setting adds; a projector draws from a stream of its own, the same at every build of that seed."""
    from distdyn.batches import Batches
    from distdyn.config import load_config
    from distdyn.members import build_member, load_shared_teacher
    from distdyn.runtime import seed_everything

    tiny_raw["student"]["overrides"].update(drop_rate=0.1, drop_path_rate=0.2)
    cfg = load_config(tiny_raw)
    names = ["baseline", "logit", "spectral_last", "projector_first"]
    specs = [student_spec(cfg, n, 0) for n in names]
    rt = runtime.make_runtime(specs[0]["train"], 0, "cpu")
    gen = seed_everything(0)
    batches = Batches(specs[0]["data"], specs[0]["train"], rt, specs[0]["model"]["overrides"]["img_size"])
    teacher = load_shared_teacher(str(teacher_ckpt), specs, batches, rt)
    members = {s["name"]: build_member(s, tmp_path / s["name"], None, rt, batches, teacher, gen) for s in specs}
    ref = members["logit"]
    gen.set_state(ref.gen_state)
    ref_batches = list(batches.train(gen, 1))
    for n, m in members.items():
        w = m.model.state_dict()
        assert all(torch.equal(w[k], v) for k, v in ref.model.state_dict().items()), n  # same initial weights
        assert torch.equal(m.rng.state["torch"], ref.rng.state["torch"]), n  # same dropout stream
        gen.set_state(m.gen_state)
        assert all(torch.equal(x, xr) and torch.equal(y, yr)  # same batches, same order
                   for (x, y), (xr, yr) in zip(batches.train(gen, 1), ref_batches, strict=True)), n
    # the projector's own stream: the same weights at a rebuild, not the model's first draws
    proj = members["projector_first"].criterion.state_dict()
    again = build_member(specs[3], tmp_path / "again", None, rt, batches, teacher, gen).criterion.state_dict()
    assert proj.keys() == again.keys() and all(torch.equal(proj[k], again[k]) for k in proj)


def test_group_refuses_members_with_different_batches(tiny_cfg, teacher_ckpt, tmp_path):
    a, b = student_spec(tiny_cfg, "logit", 0), student_spec(tiny_cfg, "spectral_last", 1)
    with pytest.raises(ValueError, match="'logit' and 'spectral_last' cannot train together: their seed differ"):
        train.run_group([{"spec": a, "out": str(tmp_path / "a")}, {"spec": b, "out": str(tmp_path / "b")}],
                        teacher_path=str(teacher_ckpt))


def test_group_with_a_store_publishes_skips_and_reports_a_failed_member(tiny_cfg, teacher_ckpt, tmp_path, capsys):
    """Published members are restored into their folders (copies, never the store's own files) and skipped by
    the next group job; a member whose loss turns non-finite fails alone: its job reports the error once, then
    trains again."""
    from distdyn import store

    good, bad = student_spec(tiny_cfg, "logit", 0), student_spec(tiny_cfg, "spectral_last", 0)
    bad["setting"]["feature_weight"] = float("inf")
    members = [{"spec": s, "out": str(tmp_path / "out" / s["name"]), "resume": str(tmp_path / "resume" / s["name"]),
                "ready": str(tmp_path / "ready" / f"{s['name']}.x.json")} for s in (good, bad)]
    root = tmp_path / "store"
    assert train.run_group(members, teacher_path=str(teacher_ckpt), store=str(root), code="c") == {
        "logit": "trained", "spectral_last": "failed"}
    assert json.loads((tmp_path / "ready" / "spectral_last.x.json").read_text())["status"] == "failed"
    entry = store.entry_dir(root, good, "c")
    teacher = ["--teacher", str(teacher_ckpt)]
    assert store.main(["restore", str(entry), "--out", str(tmp_path / "out" / "logit"), *teacher]) == 0
    restored = tmp_path / "out" / "logit" / "final.pt"
    assert restored.read_bytes() == (entry / "final.pt").read_bytes()
    assert restored.stat().st_ino != (entry / "final.pt").stat().st_ino
    assert load_checkpoint(restored)["job_key"] == store.job_key(good, "c", checkpoint_digest(teacher_ckpt))
    failed = store.entry_dir(root, bad, "c")
    assert store.main(["restore", str(failed), "--out", str(tmp_path / "out" / "bad"), *teacher]) == store.FAILED
    assert "error: non-finite total loss" in capsys.readouterr().err
    assert store.main(["restore", str(failed), "--out", str(tmp_path / "out" / "bad"), *teacher]) == store.NOT_STORED
    # a second group job: logit is stored, nothing else to train once spectral_last is fixed and stored
    assert train.run_group(members[:1], teacher_path=str(teacher_ckpt), store=str(root),
                           code="c") == {"logit": "stored"}
    # a finished output folder under the same key is adopted instead of trained again
    import shutil

    shutil.rmtree(entry.parent)
    assert train.run_group(members[:1], teacher_path=str(teacher_ckpt), store=str(root),
                           code="c") == {"logit": "adopted"}
    assert store.read(entry, checkpoint_digest(teacher_ckpt))["files"] == ["log.jsonl", "epoch_1.pt", "final.pt"]


def test_a_stored_student_counts_only_for_the_teacher_it_was_distilled_from(tiny_cfg, teacher_ckpt, tmp_path, capsys):
    """The teacher's content is in the key: a teacher saved again with the same tensors keeps the stored
    student, one with other weights trains it again (group job) and is not restored (the student's own job).
    The store's files are read-only copies: a restored output is a file of its own."""
    from distdyn import store
    from distdyn.models import atomic_save

    spec = student_spec(tiny_cfg, "logit", 0)
    member = [{"spec": spec, "out": str(tmp_path / "out"), "resume": str(tmp_path / "resume.pt")}]
    root, entry = tmp_path / "store", store.entry_dir(tmp_path / "store", spec, "c")
    assert train.run_group(member, teacher_path=str(teacher_ckpt), store=str(root), code="c") == {"logit": "trained"}
    assert all((entry / f).stat().st_mode & 0o222 == 0 for f in ("log.jsonl", "epoch_1.pt", "final.pt"))
    same, other = tmp_path / "same" / "final.pt", tmp_path / "other" / "final.pt"
    ckpt = load_checkpoint(teacher_ckpt)
    atomic_save(ckpt, same)  # other bytes (the archive's name, its serialization id), the same content
    assert same.read_bytes() != teacher_ckpt.read_bytes() and checkpoint_digest(same) == checkpoint_digest(teacher_ckpt)
    assert train.run_group(member, teacher_path=str(same), store=str(root), code="c") == {"logit": "stored"}
    atomic_save({**ckpt, "model": {k: v + 1e-3 for k, v in ckpt["model"].items()}}, other)
    out = tmp_path / "out"
    assert store.main(["restore", str(entry), "--out", str(out), "--teacher", str(other)]) == store.NOT_STORED
    assert "distilled from another teacher" in capsys.readouterr().err and not out.exists()
    assert train.run_group(member, teacher_path=str(other), store=str(root), code="c") == {"logit": "trained"}
    assert store.main(["restore", str(entry), "--out", str(out), "--teacher", str(other)]) == 0
    assert load_checkpoint(out / "final.pt")["job_key"] == store.job_key(spec, "c", checkpoint_digest(other))
    (out / "log.jsonl").open("a").write("an edit\n")  # an output edited in place leaves the store's copy intact
    assert "an edit" not in (entry / "log.jsonl").read_text()
    # A run that reads no teacher keeps the key of its spec and code alone.
    baseline = student_spec(tiny_cfg, "baseline", 0)
    assert store.job_key(baseline, "c") == store.job_key(baseline, "c", None)


def test_resume_state_counts_only_for_the_teacher_it_was_saved_with(tiny_cfg, teacher_ckpt, tmp_path, capsys):
    from distdyn.models import atomic_save
    from distdyn.resume import Resume
    from distdyn.store import job_key

    spec = student_spec(tiny_cfg, "logit", 0)
    state = tmp_path / "state.pt"
    Resume(str(state), job_key(spec, None, checkpoint_digest(teacher_ckpt))).save({"model": {}, "epoch": 1})
    other = tmp_path / "other.pt"
    ckpt = load_checkpoint(teacher_ckpt)
    atomic_save({**ckpt, "model": {k: v + 1e-3 for k, v in ckpt["model"].items()}}, other)
    train.run(spec, tmp_path / "out", teacher_path=str(other), resume_path=str(state))
    err = capsys.readouterr().err
    assert "is stale" in err and "resuming" not in err
    assert [l["epoch"] for l in log_lines(tmp_path / "out" / "log.jsonl")] == [1, 2]
