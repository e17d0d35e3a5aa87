import json

import pytest
import torch

from distdyn import train
from distdyn.config import student_spec, teacher_spec
from distdyn.models import load_checkpoint


@pytest.fixture
def teacher_ckpt(tiny_cfg, tmp_path):
    train.run(teacher_spec(tiny_cfg), tmp_path / "teacher")
    return tmp_path / "teacher" / "final.pt"


def _weights(path):
    return load_checkpoint(path)["model"]


def test_log_lines_and_checkpoints(tiny_cfg, teacher_ckpt, tmp_path):
    out = tmp_path / "s"
    train.run(student_spec(tiny_cfg, "spectral_last", 0), out, teacher_path=str(teacher_ckpt))
    lines = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2]
    keys = {"epoch", "lr", "train_loss", "train_loss_base", "train_loss_feat", "train_loss_dist", "test_loss",
            "test_acc1", "test_acc5", "seconds", "images_per_s"}
    assert keys <= set(lines[0])
    assert lines[0]["train_loss_feat"] > 0 and lines[0]["train_loss_dist"] > 0
    assert (out / "epoch_1.pt").is_file() and (out / "final.pt").is_file()
    ckpt = torch.load(out / "final.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["arch"] == "vit_tiny_patch16_224" and ckpt["name"] == "spectral_last"
    assert not list(out.glob("*.tmp"))


def test_same_seed_is_bit_identical(tiny_cfg, teacher_ckpt, tmp_path):
    spec = student_spec(tiny_cfg, "projector_first", 0)
    spec["train"]["epochs"] = 1
    a = train.run(spec, tmp_path / "a", teacher_path=str(teacher_ckpt))
    b = train.run(spec, tmp_path / "b", teacher_path=str(teacher_ckpt))
    strip = lambda lines: [{k: v for k, v in l.items() if k not in ("seconds", "images_per_s")} for l in lines]  # noqa: E731
    assert strip(a) == strip(b)
    wa, wb = _weights(tmp_path / "a" / "final.pt"), _weights(tmp_path / "b" / "final.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_different_seed_differs(tiny_cfg, tmp_path):
    spec = student_spec(tiny_cfg, "baseline", 0)
    spec["train"]["epochs"] = 1
    train.run(spec, tmp_path / "a")
    spec["seed"] = 1
    train.run(spec, tmp_path / "b")
    wa, wb = _weights(tmp_path / "a" / "final.pt"), _weights(tmp_path / "b" / "final.pt")
    assert not all(torch.equal(wa[k], wb[k]) for k in wa)


def test_non_finite_loss_names_setting_seed_epoch_term(tiny_cfg, teacher_ckpt, tmp_path):
    spec = student_spec(tiny_cfg, "spectral_last", 3)
    spec["setting"]["feature_weight"] = float("inf")
    with pytest.raises(train.NonFiniteLossError, match=r"non-finite total loss .* setting 'spectral_last', seed 3, epoch 1"):
        train.run(spec, tmp_path / "s", teacher_path=str(teacher_ckpt))


def test_teacher_from_checkpoint(tiny_cfg, teacher_ckpt, tmp_path):
    # A bare timm state dict, as a user would bring.
    bare = tmp_path / "bare.pt"
    torch.save(_weights(teacher_ckpt), bare)
    spec = teacher_spec(tiny_cfg)
    spec["checkpoint"] = str(bare)
    spec["train"]["epochs"] = 0
    lines = train.run(spec, tmp_path / "imported")
    original = json.loads((teacher_ckpt.parent / "log.jsonl").read_text().splitlines()[-1])
    assert lines[0]["epoch"] == 0 and lines[0]["test_acc1"] == pytest.approx(original["test_acc1"])
    w = _weights(tmp_path / "imported" / "final.pt")
    assert all(torch.equal(w[k], _weights(teacher_ckpt)[k]) for k in w)


def test_teacher_with_a_checkpoint_and_epochs_is_fine_tuned_from_it(tiny_cfg, teacher_ckpt, tmp_path):
    spec = teacher_spec(tiny_cfg)
    spec["train"]["epochs"] = 1
    fresh = train.run(spec, tmp_path / "fresh")
    spec["checkpoint"] = str(teacher_ckpt)
    tuned = train.run(spec, tmp_path / "tuned")
    assert [l["epoch"] for l in tuned] == [1]
    assert tuned[0]["train_loss"] < fresh[0]["train_loss"]  # it starts from the trained weights
    assert not all(torch.equal(a, b) for a, b in zip(_weights(tmp_path / "tuned" / "final.pt").values(),
                                                       _weights(teacher_ckpt).values()))


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
    rt = train.make_runtime(cfg, gpu=0, device="cpu")
    assert rt.compile and rt.compile_mode == "reduce-overhead" and rt.amp_dtype is None
    assert train.compile_mode(cfg, world=2) == "default"


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
    we, wc = _weights(tmp_path / "eager" / "final.pt"), _weights(tmp_path / "compiled" / "final.pt")
    for k in we:
        torch.testing.assert_close(wc[k], we[k], rtol=1e-3, atol=1e-4, msg=k)
