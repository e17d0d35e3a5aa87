"""The registry of distillation methods (distdyn.methods): its listing, parameter checks, user methods, ViTKD,
and docs/methods.md's worked example run end to end."""
import json
import re
import subprocess
import sys

import pytest
import torch
import yaml

from distdyn.losses import DistillationLoss
from distdyn.methods import (MethodError, Param, ParamError, builtin_methods, get_method, list_methods,
                             register_method, resolve_params)
from distdyn.methods.base import Method, tokens
from helpers import (ROOT, TIMING, log_lines, make_workdir, package_env, planned_jobs, run_command,
                     train_teacher)

BUILTIN = {
    "none": {},
    "logit": {},
    "spectral": {},
    "projector": {"projector_trainable": (bool, True)},
    "mse": {},
    "vitkd": {"alpha_vitkd": (float, 3e-5), "beta_vitkd": (float, 3e-6), "mask_ratio": (float, 0.5)},
}


def test_registry_lists_every_builtin_method_with_its_parameters():
    assert builtin_methods() == sorted(BUILTIN)
    declared = {cls.name: {n: (p.type, p.default) for n, p in cls.params.items()} for cls in list_methods()}
    assert declared == BUILTIN
    teacher = {cls.name: cls.reads_teacher for cls in list_methods()}
    assert teacher == {"none": False, **{m: True for m in BUILTIN if m != "none"}}
    assert {cls.name for cls in list_methods() if cls.uses_pairs} == {"spectral", "projector", "mse", "vitkd"}
    assert get_method("vitkd").roles == ("mimic", "generate")


@pytest.mark.parametrize("name", ["projector", "vitkd"])
def test_declared_trainable_parts_hold_every_parameter(name):
    cls = get_method(name)
    method = cls([(0, 0), (1, 2)], (4, 8), **resolve_params(cls, {}))
    owned = {n for n, _ in method.named_parameters()}
    in_parts = {n for n in owned if n.split(".")[0] in cls.parts}
    assert owned and owned == in_parts


def test_methods_without_pairs_build_no_feature_term():
    for name in ("none", "logit"):
        crit = DistillationLoss(name, [(0, 0)], alpha=0.9, tau=1.0, feature_weight=0.2, label_smoothing=0.1)
        assert crit.pairs == [] and crit.feature is None and list(crit.parameters()) == []
    assert DistillationLoss("none", [], alpha=0.9, tau=1.0, feature_weight=0.2, label_smoothing=0.1).alpha == 0.0


def test_a_name_is_registered_once():
    class Twice(Method):
        name = "spectral"

    with pytest.raises(ValueError, match="registered twice"):
        register_method(Twice)


def test_parameters_are_checked_and_defaulted():
    vitkd = get_method("vitkd")
    assert resolve_params(vitkd, {"mask_ratio": 0.75}) == {"alpha_vitkd": 3e-5, "beta_vitkd": 3e-6, "mask_ratio": 0.75}
    assert resolve_params(vitkd, {"alpha_vitkd": 1, "mask_ratio": "0.25"})["alpha_vitkd"] == 1.0  # int and string
    with pytest.raises(ParamError, match=r"no parameter 'mask_ratoi' \(did you mean mask_ratio\?\)") as e:
        resolve_params(vitkd, {"mask_ratoi": 0.3})
    assert e.value.name == "mask_ratoi"
    with pytest.raises(ParamError, match="below 1"):
        resolve_params(vitkd, {"mask_ratio": 1.0})
    with pytest.raises(ParamError, match="must be a boolean"):
        resolve_params(get_method("projector"), {"projector_trainable": 3})
    with pytest.raises(ParamError, match="has no parameters"):
        resolve_params(get_method("spectral"), {"cutoff": 0.3})
    assert Param(int, 1, minimum=0).check("n", "2") == 2


def test_unknown_method_is_one_error_naming_the_builtins():
    with pytest.raises(MethodError, match="did you mean vitkd"):
        get_method("vitdk")


def test_the_cli_describes_every_builtin_method():
    out = subprocess.run([sys.executable, "-m", "distdyn.methods"], capture_output=True, text=True, check=True,
                         env=package_env()).stdout
    assert [line.split(":")[0] for line in out.splitlines() if not line.startswith(" ")] == sorted(BUILTIN)
    assert "mask_ratio (number, default 0.5)" in out and "reads the teacher: no" in out


# ---------------------------------------------------------------- a user's own method

USER_METHOD = '''
import torch.nn.functional as F

from distdyn.methods import Param
from distdyn.methods.base import PairwiseMethod


class Scaled(PairwiseMethod):
    """MSE times a factor."""

    params = {"factor": Param(float, 2.0, "the factor")}

    def pair_loss(self, i, fs, ft):
        return self.factor * F.mse_loss(fs, ft)


class NotAMethod:
    pass
'''


@pytest.mark.parametrize("how", ["file", "module"])
def test_a_users_method_from_a_file_or_a_module(how, tmp_path, monkeypatch):
    pkg = tmp_path / "mylosses"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / f"scaled_{how}.py").write_text(USER_METHOD)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    ref = f"mylosses/scaled_{how}.py:Scaled" if how == "file" else f"mylosses.scaled_{how}:Scaled"
    cls = get_method(ref)
    assert cls.ref == ref and resolve_params(cls, {}) == {"factor": 2.0}
    fs, ft = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    crit = DistillationLoss(ref, [(0, 0)], alpha=0.5, tau=1.0, feature_weight=1.0, label_smoothing=0.0, factor=3.0)
    torch.testing.assert_close(crit.feature_loss({0: fs}, {0: ft}), 3.0 * ((fs - ft) ** 2).mean())
    with pytest.raises(MethodError, match="no subclass of distdyn.methods.base.Method"):
        get_method(ref.replace(":Scaled", ":NotAMethod"))
    with pytest.raises(MethodError, match="defines no Absent"):
        get_method(ref.replace(":Scaled", ":Absent"))


# ---------------------------------------------------------------- ViTKD


def reference_vitkd(low_s, low_t, high_s, high_t, align2, align, mask_token, generation, alpha, beta, lam):
    """ViTKDLoss.forward of yzd-v/cls_KD (mmcls/distillation/losses/vitkd.py), restated step by step:
    low_*: [B, 2, N, D] tokens of blocks 0 and 1, high_*: [B, N, D] of the last block; align2/align are
    None when the widths agree. The masking draws torch.rand(B, N) once, as the reference."""
    b, _, n, _ = low_s.shape
    # Mimicking: each shallow layer through its own linear map, summed squared error per image.
    mapped = torch.stack([align2[i](low_s[:, i]) for i in range(low_s.shape[1])], 1) if align2 is not None else low_s
    loss_lr = ((mapped - low_t) ** 2).sum() / b * alpha
    # Generation: per image, the tokens ranked by uniform noise; the lowest int(N (1 - lambda)) are kept,
    # the others replaced by the mask token; the generator on the square token grid; squared error where masked.
    x = align(high_s) if align is not None else high_s
    d = x.shape[-1]
    keep = int(n * (1 - lam))
    noise = torch.rand(b, n)
    filled, mask = torch.empty(b, n, d), torch.zeros(b, n)
    for i in range(b):
        for rank, j in enumerate(torch.argsort(noise[i]).tolist()):
            if rank < keep:
                filled[i, j] = x[i, j]
            else:
                filled[i, j] = mask_token[0, 0]
                mask[i, j] = 1.0
    hw = int(n ** 0.5)
    gen = generation(filled.reshape(b, hw, hw, d).permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)
    m = mask.unsqueeze(-1)
    loss_gen = ((gen * m - high_t * m) ** 2).sum() / b * beta / lam
    return loss_lr + loss_gen


def _vitkd_case(c_s, c_t, **params):
    torch.manual_seed(0)
    b, side = 3, 4
    pairs = [(0, 0), (1, 1), (5, 7)]
    fs = {s: torch.randn(b, c_s, side, side) for s, _ in pairs}
    ft = {t: torch.randn(b, c_t, side, side) for _, t in pairs}
    cls = get_method("vitkd")
    p = resolve_params(cls, params)
    ours = cls(pairs, (c_s, c_t), **p)
    with torch.no_grad():
        ours.mask_token.normal_()  # zeros at the start: a drawn token tells a wrong placement apart
    ref = {"align2": ours.mimic_align, "align": ours.gen_align, "mask_token": ours.mask_token.detach(),
           "generation": ours.generator}
    low_s = torch.stack([tokens(fs[0]), tokens(fs[1])], 1)
    low_t = torch.stack([tokens(ft[0]), tokens(ft[1])], 1)
    before = torch.get_rng_state()
    got = ours(fs, ft)
    assert torch.equal(torch.get_rng_state(), before)  # the masks come from a stream of their own
    torch.manual_seed(ours.mask_seed)  # the first mask's generator, as the global one for the reference
    want = reference_vitkd(low_s, low_t, tokens(fs[5]), tokens(ft[7]), **ref, alpha=p["alpha_vitkd"],
                           beta=p["beta_vitkd"], lam=p["mask_ratio"])
    return got, want, ours


@pytest.mark.parametrize("widths", [(8, 16), (8, 8)], ids=["projected", "same-width"])
@pytest.mark.parametrize("params", [{}, {"alpha_vitkd": 1.0, "beta_vitkd": 1.0, "mask_ratio": 0.25}],
                         ids=["paper-defaults", "unit-weights"])
def test_vitkd_matches_the_reference_loss(widths, params):
    got, want, ours = _vitkd_case(*widths, **params)
    assert want.item() > 0
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert (ours.mimic_align is None) == (widths[0] == widths[1])


def test_vitkd_roles_mask_share_and_gradients():
    cls = get_method("vitkd")
    assert cls.pair_roles([[0, 0], [1, 1], [5, 7]]) == ["mimic", "mimic", "generate"]
    assert cls.check_pairs([[0, 0], [5, 6], [5, 7]]) is not None and cls.check_pairs([[5, 7]]) is None
    from distdyn.methods.vitkd import random_masking

    kept, restore, mask = random_masking(torch.randn(5, 16, 3), 0.5)
    assert kept.shape == (5, 8, 3) and (mask.sum(1) == 8).all() and (restore.sort(1).values == torch.arange(16)).all()
    got, _, ours = _vitkd_case(8, 16)
    got.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ours.parameters())
    # the mask stream's place is part of the state (a resumed run draws the masks it would have drawn)
    state = ours.state_dict()
    assert state["_extra_state"] == {"mask_seed": ours.mask_seed, "mask_draws": 1}
    twin = get_method("vitkd")([(0, 0), (1, 1), (5, 7)], (8, 16), **resolve_params(get_method("vitkd"), {}))
    twin.load_state_dict(state)
    assert (twin.mask_seed, twin.mask_draws) == (ours.mask_seed, 1)


def test_vitkd_setting_trains_the_same_alone_and_in_a_group(tiny_raw, tmp_path):
    """Its random masks come from the student's own RNG stream: alone or beside another student, the
    same weights and log lines."""
    from distdyn.config import load_config, student_spec
    from distdyn.train import run, run_group

    teacher_ckpt = str(train_teacher(load_config(tiny_raw), tmp_path / "teacher"))
    tiny_raw["settings"].append({"name": "vitkd", "method": "vitkd", "layers": [[0, 0], [1, 2]],
                                 "params": {"alpha_vitkd": 0.01, "beta_vitkd": 0.01}})
    cfg = load_config(tiny_raw)
    specs = {s: student_spec(cfg, s, 0) for s in ("vitkd", "spectral_last")}
    assert specs["vitkd"]["setting"]["feature_weight"] == 1.0
    lines = run(specs["vitkd"], tmp_path / "alone", teacher_path=teacher_ckpt)
    assert all(line["train_loss_feat"] > 0 for line in lines)
    run_group([{"spec": specs[s], "out": str(tmp_path / "group" / s)} for s in specs], teacher_path=teacher_ckpt)
    assert log_lines(tmp_path / "alone" / "log.jsonl", TIMING) == log_lines(tmp_path / "group/vitkd/log.jsonl", TIMING)
    alone = torch.load(tmp_path / "alone" / "final.pt", weights_only=True)["model"]
    group = torch.load(tmp_path / "group" / "vitkd" / "final.pt", weights_only=True)["model"]
    assert alone.keys() == group.keys() and all(torch.equal(alone[k], group[k]) for k in alone)



# ---------------------------------------------------------------- docs/methods.md


def _fenced(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_the_documented_builtins_are_the_registered_ones():
    text = (ROOT / "docs/methods.md").read_text()
    table = text[text.index("## The built-in methods"):text.index("### ViTKD")]
    rows = dict(re.findall(r"^\| `(\w+)` \|.*?\| (.*?) \|", table, flags=re.M))
    assert set(rows) == set(BUILTIN)
    for name, params in BUILTIN.items():
        documented = dict(re.findall(r"`(\w+)` \(([^);]+)", rows[name]))
        assert {p: yaml.safe_load(v.replace("e-", ".0e-")) for p, v in documented.items()} == {
            p: d for p, (_, d) in params.items()}, name


@pytest.mark.slow
def test_the_documented_example_runs_end_to_end(tmp_path):
    """docs/methods.md's method file and experiment are the repository's examples/, and its command runs
    them through the whole workflow: the user's method trains the student with a non-zero feature loss."""
    text = (ROOT / "docs/methods.md").read_text()
    assert _fenced(text, "python") == [(ROOT / "examples/lowpass.py").read_text()]
    assert _fenced(text, "yaml") == [(ROOT / "examples/lowpass.yaml").read_text()]
    [command] = [line for block in _fenced(text, "bash") for line in block.splitlines() if line.startswith("snakemake")]
    workdir = make_workdir(tmp_path, {})
    proc = run_command(workdir, command, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = workdir / "results/students/lowpass_last/seed_0"
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2] and all(line["train_loss_feat"] > 0 for line in lines)
    for table in ("accuracy.csv", "layers.csv", "cka.csv"):
        assert "lowpass_last" in (workdir / "results/metrics" / table).read_text()
    claims = (workdir / "results/claims.md").read_text()
    assert "## Methods beyond the paper" in claims and "### lowpass_last (examples/lowpass.py:LowPassSpectral" in claims
    # The method's file is its setting's code: a comment re-runs nothing, a change of behaviour its
    # training and what follows, never the teacher's.
    source = workdir / "examples/lowpass.py"
    source.write_text("# a comment\n" + source.read_text())
    assert planned_jobs(workdir, "--configfile", "examples/lowpass.yaml") == {}
    source.write_text(source.read_text().replace("<= self.cutoff) & (fx", "< self.cutoff) & (fx"))
    planned = planned_jobs(workdir, "--configfile", "examples/lowpass.yaml")
    assert {"distill_student": 1, "dump_activations": 1, "compute_metrics": 1, "cka": 1, "claims": 1}.items() <= \
        planned.items()
    assert not {"pretrain_teacher", "dump_model_activations", "select_probe"} & set(planned)
