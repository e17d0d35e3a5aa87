"""Every bad input gets one clear line (issue #13): `error: <file or config key>: <what is wrong and what to do>`,
exit status 1, no traceback; for a damaged file in a finished run, nothing upstream of it touched.

The corpus, by class (README "Bad input"):
  CONFIG   configs the plan refuses: `python -m distdyn.config` runs the Snakefile's checks in-process
  DATA     damaged data files (IDX, gzip, CIFAR pickles), named at plan time
  JOBS     known failures inside a job, through each command's main() as its rule runs it
  CONSOLE  what `snakemake` prints for a bad config, YAML file or command line (slow: real dry runs)
  DAMAGED  damaged files in a finished run (slow: real runs on copies of one finished run)
"""
import copy
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from helpers import (ROOT, TINY, TINY_VIT, fake_cifar10, fake_fashion, idx_bytes, make_workdir, snakemake,
                     two_at_a_time)


def assert_one_error(rc: int, text: str, *names: str) -> str:
    """Exit status 1, no traceback, and an `error: ` line naming each of `names`; returns that line."""
    assert rc == 1, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    lines = [line for line in text.splitlines() if line.startswith("error: ")]
    assert lines, text[-3000:]
    for name in names:
        assert name in lines[0], f"{name!r} not in {lines[0]!r}"
    return lines[0]


def call(main, argv, capsys) -> str:
    """A command's main() as `python -m` runs it: its status must be 1 and its stderr one error line."""
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return assert_one_error(rc, out.out + out.err)


# ---------------------------------------------------------------- CONFIG: refused at plan time

def _set(cfg, dotted, value):
    *path, last = dotted.split(".")
    node = cfg
    for part in path:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[last] = value


def _file(tmp, name, data: bytes) -> str:
    path = tmp / name
    path.write_bytes(data)
    return str(path)


def _truncated_zip(tmp) -> str:
    good = tmp / "good.pt"
    torch.save({"w": torch.zeros(100)}, good)
    return _file(tmp, "truncated.pt", good.read_bytes()[:300])


# (id, change of the TINY config: (dotted key, value) pairs or a function of (cfg, tmp), what the line names)
CONFIG_CASES = [
    ("lr-not-a-number", [("student.train.lr", "fast")], "student.train.lr"),
    ("unknown-top-level-key", [("seed", 0)], "'seed': is not a key the top level takes (did you mean seeds?)"),
    ("alpha-out-of-range", [("distill", {"alpha": 1.5})], "distill.alpha"),
    ("unknown-method", [("settings.0.method", "fitnet")], "'settings[0] (baseline).method': 'fitnet'"),
    ("unknown-layers", [("settings.2.layers", "middle")],
     "'settings[2] (spectral_last).layers': 'middle' is not allowed: it takes one of first, last, first_last, "
     "or a list of [student_block, teacher_block] pairs"),
    ("name-with-a-slash", [("settings.1.name", "a/b")],
     "'settings[1] (a/b).name': 'a/b' is not allowed: it takes a name of letters, digits, _ and -"),
    ("method-parameter-typo", lambda c, t: c["settings"].append(
        {"name": "vkd", "method": "vitkd", "layers": [[0, 0], [1, 2]], "params": {"mask_ratoi": 0.3}}),
     "settings[4] (vkd).params.mask_ratoi"),
    ("method-parameter-of-a-wrong-type", lambda c, t: c["settings"].append(
        {"name": "vkd", "method": "vitkd", "layers": [[0, 0], [1, 2]], "params": {"mask_ratio": "half"}}),
     "settings[4] (vkd).params.mask_ratio"),
    ("method-file-missing",
     lambda c, t: c["settings"].append({"name": "x", "method": "absent.py:Loss", "layers": "last"}),
     "settings[4] (x).method"),
    ("unknown-student-optimizer", [("student.train.opt", "adamx")], "student.train.opt"),
    ("unknown-teacher-optimizer", [("teacher.train.opt", "sgdd")], "teacher.train.opt"),
    ("data-resized-beyond-the-models", [("data.img_size", 16)], "teacher.overrides.img_size"),
    ("student-built-for-other-images", [("student.overrides.img_size", 16)], "student.overrides.img_size"),
    ("duplicate-seeds", [("seeds", [0, 0])], "config key 'seeds'"),
    ("checkpoint-epoch-beyond-the-run", [("student.train.checkpoint_every", [1, 5])], "student.train.checkpoint_every"),
    ("checkpoint-every-beyond-the-run", [("student.train.checkpoint_every", 3)], "student.train.checkpoint_every"),
    ("batch-not-split-across-gpus", [("student.train.batch_size", 33), ("student.train.gpus", 2)],
     "student.train.batch_size"),
    ("setting-named-teacher", lambda c, t: c["settings"].append({"name": "teacher", "method": "logit"}),
     "settings[4] (teacher).name"),
    ("two-settings-one-name", lambda c, t: c["settings"].append({"name": "logit", "method": "logit"}),
     "settings[4] (logit).name"),
    ("layer-pair-beyond-depth", lambda c, t: c["settings"].append({"name": "x", "method": "mse", "layers": [[5, 0]]}),
     "settings[4] (x).layers"),
    ("student-wider-than-teacher", [("student.overrides.embed_dim", 32)], "settings[2] (spectral_last).method"),
    ("feature-method-without-layers", lambda c, t: c["settings"].append({"name": "x", "method": "projector"}),
     "settings[4] (x).layers"),
    ("logit-with-layers", [("settings.1.layers", "last")], "settings[1] (logit).layers"),
    ("probe-larger-than-validation", [("probe.size", 33)], "probe.size"),
    ("model-that-cannot-be-built", [("student.model", "no_such_model")], "student.model"),
    ("teacher-without-training-or-weights", [("teacher.train.epochs", 0)], "teacher.train.epochs"),
    ("nothing-to-run", [("settings", [])], "config key 'settings'"),
    ("teacher-checkpoint-missing", lambda c, t: _set(c, "teacher.checkpoint", str(t / "absent.pt")),
     "teacher.checkpoint"),
    ("teacher-checkpoint-is-text", lambda c, t: _set(c, "teacher.checkpoint", _file(t, "notes.pt", b"my notes\n")),
     "notes.pt"),
    ("teacher-checkpoint-truncated", lambda c, t: _set(c, "teacher.checkpoint", _truncated_zip(t)), "truncated.pt"),
    ("pretrained-file-empty", lambda c, t: _set(c, "teacher.pretrained", _file(t, "empty.pth", b"")), "empty.pth"),
    ("checkpoint-and-pretrained", lambda c, t: c["teacher"].update(checkpoint=_truncated_zip(t), pretrained=True),
     "teacher.pretrained"),
    ("extra-model-checkpoint-is-text",
     lambda c, t: c.update(extra_models=[{"name": "mine", "model": "vit_tiny_patch16_224",
                                          "checkpoint": _file(t, "mine.pt", b"{}"), "overrides": TINY_OVERRIDES}]),
     "extra_models[0] (mine).checkpoint"),
    ("extra-model-for-other-images",
     lambda c, t: c.update(extra_models=[{"name": "mine", "model": "vit_tiny_patch16_224",
                                          "checkpoint": _saved(t), "overrides": {**TINY_OVERRIDES, "img_size": 16}}]),
     "extra_models[0] (mine).overrides.img_size"),
]
TINY_OVERRIDES = TINY_VIT["overrides"]


def _saved(tmp) -> str:
    path = tmp / "saved.pt"
    torch.save({}, path)
    return str(path)


def config_main(argv):
    from distdyn import config

    return config.main(argv)


@pytest.mark.parametrize("change,names", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_config_refused_at_plan_time(change, names, tmp_path, capsys):
    cfg = copy.deepcopy(TINY)
    if callable(change):
        change(cfg, tmp_path)
    else:
        for key, value in change:
            _set(cfg, key, value)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert names in call(config_main, [path], capsys)


def test_yaml_numbers_written_as_strings_are_accepted(tmp_path, capsys):
    """`lr: 1e-3` is a string to PyYAML: coerced where the schema wants a number (no error)."""
    cfg = copy.deepcopy(TINY)
    cfg["teacher"]["train"]["lr"] = cfg["student"]["train"]["lr"] = "LR"
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(cfg).replace("LR", "1e-3"))
    assert isinstance(yaml.safe_load(path.read_text())["teacher"]["train"]["lr"], str)
    assert config_main([str(path)]) == 0
    assert "valid" in capsys.readouterr().out


@pytest.mark.parametrize("text,names", [
    ("seeds: [0\nprobe: {size: 3}\n", ["bad.yaml", "line 2, column 6", "starts at line 1"]),
    ("seeds: [0]\n\tprobe: {size: 3}\n", ["bad.yaml", "line 2", "'\\t'"]),
    ("- 1\n- 2\n", ["bad.yaml", "list"]),
], ids=["unclosed-list", "tab-indent", "not-a-mapping"])
def test_yaml_file_errors_name_file_and_line(text, names, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    line = call(config_main, [path], capsys)
    assert all(n in line for n in names), line


def test_missing_config_file_is_named(tmp_path, capsys):
    assert call(config_main, [tmp_path / "absent.yaml"], capsys).endswith("absent.yaml: does not exist")


# ---------------------------------------------------------------- DATA: damaged data files, named at plan time

def _damage_fashion(root, name, how):
    path = root / name
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "text":
        path.write_bytes(b"<html>404 Not Found</html>\n" * 40)
    elif how == "fewer-labels":
        path.write_bytes(idx_bytes(np.arange(39) % 10))
    elif how == "bad-gzip":
        path.unlink()
        (root / f"{name}.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"garbage" * 50)
    elif how == "missing":
        path.unlink()


def _damage_cifar(root, name, how):
    import pickle

    path = root / "cifar-10-batches-py" / name
    if how == "garbage":
        path.write_bytes(b"\x80\x04garbage that is not a pickle" * 10)
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[:500])
    elif how == "a-list":
        path.write_bytes(pickle.dumps([1, 2, 3]))
    elif how == "wrong-shape":
        path.write_bytes(pickle.dumps({b"data": np.zeros((20, 100), dtype=np.uint8), b"labels": [0] * 20}))


DATA_CASES = [
    ("fashion", "train-images-idx3-ubyte", "truncate", "is truncated"),
    ("fashion", "t10k-images-idx3-ubyte", "empty", "is empty"),
    ("fashion", "train-labels-idx1-ubyte", "text", "not a 1-dimensional unsigned-byte IDX"),
    ("fashion", "train-labels-idx1-ubyte", "fewer-labels", "39 labels"),
    ("fashion", "t10k-labels-idx1-ubyte", "bad-gzip", "cannot be read"),
    ("fashion", "t10k-labels-idx1-ubyte", "missing", "t10k-labels-idx1-ubyte"),
    ("cifar10", "data_batch_3", "garbage", "not a readable CIFAR pickle"),
    ("cifar10", "test_batch", "truncate", "not a readable CIFAR pickle"),
    ("cifar10", "data_batch_1", "a-list", "not a CIFAR batch"),
    ("cifar10", "data_batch_2", "wrong-shape", "no 32x32 RGB images"),
]


@pytest.mark.parametrize("source,name,how,says", DATA_CASES, ids=[f"{c[0]}-{c[2]}" for c in DATA_CASES])
def test_damaged_data_file_is_named_at_plan_time(source, name, how, says, tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    size, patch = (28, 7) if source == "fashion" else (32, 8)
    if source == "fashion":
        fake_fashion(root, train=40, test=20, gz=False)
    else:
        fake_cifar10(root, per_batch=20, test=20)
    (_damage_fashion if source == "fashion" else _damage_cifar)(root, name, how)
    cfg = copy.deepcopy(TINY)
    cfg["data"] = {"source": "fashion_mnist" if source == "fashion" else "cifar10", "root": str(root)}
    for role in ("teacher", "student"):
        cfg[role]["overrides"].update(img_size=size, patch_size=patch)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(cfg))
    line = call(config_main, [path], capsys)
    assert "data.root" in line and name in line and says in line, line


def test_data_root_that_is_no_folder(tmp_path, capsys):
    cfg = {**copy.deepcopy(TINY), "data": {"source": "fashion_mnist", "root": str(tmp_path / "nowhere")}}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(cfg))
    assert "nowhere does not exist" in call(config_main, [tmp_path / "e.yaml"], capsys)


# ---------------------------------------------------------------- JOBS: known failures inside a job

@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A distdyn checkpoint of the tiny student's architecture, the probe set and its dump (what jobs read)."""
    from distdyn import activations
    from distdyn.config import load_config
    from distdyn.models import atomic_save, create_model, weights_record

    tmp = tmp_path_factory.mktemp("made")
    cfg = load_config(copy.deepcopy(TINY))
    model_cfg = {"model": cfg["student"]["model"], "overrides": cfg["student"]["overrides"]}
    torch.manual_seed(0)
    ckpt = tmp / "model.pt"
    atomic_save(weights_record(model_cfg, create_model(model_cfg, 4, 1).state_dict(), 4, 1, "m", "test"), ckpt)
    probe = tmp / "probe.csv"
    activations.write_probe(cfg["data"], cfg["probe"], probe)
    meta = {"model": "m", "role": "model", "setting": "m", "seed": 0}
    dump = activations.dump(ckpt, tmp / "m.h5", data_cfg=cfg["data"], probe_file=probe, meta=meta)
    return {"cfg": cfg, "ckpt": ckpt, "probe": probe, "dump": dump, "model_cfg": model_cfg,
            "identity": {**meta, "epoch": 0}}


def _copy(src, tmp, name):
    dst = tmp / name
    shutil.copy(src, dst)
    return dst


def _metrics(argv, capsys):
    from distdyn import metrics

    return call(metrics.main, argv, capsys)


def _dump(made, tmp, capsys, ckpt=None, probe=None):
    from distdyn import activations

    out = tmp / "out.h5"
    line = call(activations.main, ["dump", ckpt or made["ckpt"], "--out", out, "--model-names", "m", "--role", "model",
                                   "--data", json.dumps(made["cfg"]["data"]), "--probe-file", probe or made["probe"]],
                capsys)
    assert not out.exists() and not list(tmp.glob(".out.h5.*"))  # nothing half-written is left
    return line


def test_metrics_dump_that_does_not_exist(tmp_path, capsys):
    assert "absent.h5: not a readable HDF5 file" in _metrics([tmp_path / "absent.h5", "--out", tmp_path], capsys)


def test_metrics_dump_that_is_text(tmp_path, capsys):
    bad = _file(tmp_path, "notes.h5", b"not hdf5\n")
    assert "notes.h5: not a readable HDF5 file" in _metrics([bad, "--out", tmp_path], capsys)


def test_metrics_truncated_dump(made, tmp_path, capsys):
    bad = tmp_path / "cut.h5"
    bad.write_bytes(made["dump"].read_bytes()[:4000])
    assert "cut.h5: not a readable HDF5 file" in _metrics([bad, "--out", tmp_path], capsys)


def test_metrics_hdf5_that_is_no_dump(tmp_path, capsys):
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = np.zeros(3)
    out = _metrics([tmp_path / "foreign.h5", "--out", tmp_path], capsys)
    assert "foreign.h5: not a complete distdyn activation dump" in out


@pytest.mark.parametrize("key,value", [("role", "teacher"), ("setting", "logit"), ("seed", 1), ("epoch", 3)])
def test_metrics_dump_of_another_run(made, tmp_path, capsys, key, value):
    expect = json.dumps([{**made["identity"], key: value}])
    line = _metrics([made["dump"], "--out", tmp_path, "--expect", expect], capsys)
    assert "m.h5: is another run's dump" in line and f"{key} {value!r}" in line


def test_metrics_nan_in_a_dump(made, tmp_path, capsys):
    bad = _copy(made["dump"], tmp_path, "nan.h5")
    with h5py.File(bad, "r+") as f:
        f["blocks"][1, 2, 0, 0] = np.nan
    assert "nan.h5: layer 2 holds NaN or Inf" in _metrics([bad, "--out", tmp_path], capsys)
    assert not (tmp_path / "layers.csv").exists()


def test_metrics_inf_in_the_recorded_range(made, tmp_path, capsys):
    bad = _copy(made["dump"], tmp_path, "inf.h5")
    with h5py.File(bad, "r+") as f:
        f["blocks"].attrs["layer_max"] = np.array([1.0, np.inf], dtype=np.float32)
    assert "inf.h5: layer 2 holds NaN or Inf (its recorded value range)" in _metrics([bad, "--out", tmp_path], capsys)


def _layers_table(made, tmp):
    from distdyn import metrics

    assert metrics.main([str(made["dump"]), "--out", str(tmp / "run"), "--bootstrap", "0"]) == 0
    return tmp / "run" / "layers.csv"


def _layers_expect(model="m"):
    from distdyn.metrics import LAYER_METRICS

    return json.dumps([{"keys": [["model", [model]], ["layer", [1, 2]], ["metric", list(LAYER_METRICS)]]}])


def test_gather_truncated_table(made, tmp_path, capsys):
    table = _layers_table(made, tmp_path)
    table.write_text("\n".join(table.read_text().splitlines()[:9]) + "\n")
    line = _metrics(["gather", "--tables", table, "--expect", _layers_expect(), "--out", tmp_path / "all.csv"], capsys)
    assert "layers.csv: incomplete (8 rows)" in line and not (tmp_path / "all.csv").exists()


def test_gather_table_of_another_run(made, tmp_path, capsys):
    table = _layers_table(made, tmp_path)
    line = _metrics(["gather", "--tables", table, "--expect", _layers_expect("other"), "--out", tmp_path / "all.csv"],
                    capsys)
    assert "layers.csv: has rows of model m, which this run does not make" in line


def test_gather_duplicated_rows(made, tmp_path, capsys):
    table = _layers_table(made, tmp_path)
    lines = table.read_text().splitlines()
    table.write_text("\n".join(lines + lines[1:3]) + "\n")
    line = _metrics(["gather", "--tables", table, "--expect", _layers_expect(), "--out", tmp_path / "all.csv"], capsys)
    assert "has 2 rows, expected 1 (duplicated rows?)" in line


def test_gather_empty_table(made, tmp_path, capsys):
    table = _layers_table(made, tmp_path)
    empty = _file(tmp_path, "empty.csv", b"")
    assert "empty.csv: is empty" in _metrics(["gather", "--tables", table, empty, "--out", tmp_path / "a.csv"], capsys)


def test_gather_table_with_other_columns(made, tmp_path, capsys):
    table = _layers_table(made, tmp_path)
    other = _file(tmp_path, "other.csv", b"a,b\n1,2\n")
    out = _metrics(["gather", "--tables", table, other, "--out", tmp_path / "a.csv"], capsys)
    assert "other.csv: has the columns a, b" in out


LOG_LINE = {"epoch": 1, "lr": 0.1, "train_loss": 1.0, "test_loss": 1.0, "test_acc1": 50.0, "test_acc5": 90.0}


@pytest.mark.parametrize("text,says", [
    ("", "is empty: no epoch was logged"),
    (json.dumps(LOG_LINE) + '\n{"epoch": 2, "test_a', "line 2 is not JSON"),
    (json.dumps({"epoch": 1, "lr": 0.1}) + "\n", "line 1 is not an epoch record (no test_acc1, test_acc5)"),
    ("[1, 2]\n", "line 1 is not an epoch record"),
    (json.dumps(LOG_LINE) + "\n" + json.dumps(LOG_LINE) + "\n", "its epochs [1, 1] are not increasing"),
], ids=["empty", "garbled-line", "no-accuracy", "not-an-object", "two-runs"])
def test_accuracy_bad_log(tmp_path, capsys, text, says):
    log = tmp_path / "log.jsonl"
    log.write_text(text)
    line = _metrics(["accuracy", "--logs", log, "--names", "teacher", "--seeds", "0", "--roles", "teacher",
                     "--out", tmp_path / "a.csv", "--summary", tmp_path / "s.csv", "--curves", tmp_path / "c.csv"],
                     capsys)
    assert f"log.jsonl: {says}" in line


def test_dump_checkpoint_without_its_architecture(made, tmp_path, capsys):
    bare = tmp_path / "bare.pt"
    torch.save(torch.load(made["ckpt"], weights_only=True)["model"], bare)
    assert "bare.pt: has no architecture record" in _dump(made, tmp_path, capsys, ckpt=bare)


def test_dump_checkpoint_that_is_text(made, tmp_path, capsys):
    bad = _file(tmp_path, "final.pt", b"checkpoint\n")
    assert "final.pt: not a loadable checkpoint" in _dump(made, tmp_path, capsys, ckpt=bad)


def test_dump_probe_index_out_of_range(made, tmp_path, capsys):
    probe = pd.read_csv(made["probe"])
    probe.loc[0, "index"] = 999
    probe.to_csv(tmp_path / "probe.csv", index=False)
    line = _dump(made, tmp_path, capsys, probe=tmp_path / "probe.csv")
    assert "probe.csv: index 999 is out of range: the validation split has 32 images" in line


def test_dump_probe_of_other_data(made, tmp_path, capsys):
    probe = pd.read_csv(made["probe"])
    probe["label"] = (probe["label"] + 1) % 4
    probe.to_csv(tmp_path / "probe.csv", index=False)
    assert "labels differ from the validation split's" in _dump(made, tmp_path, capsys, probe=tmp_path / "probe.csv")


def test_dump_refuses_to_write_non_finite_values(made, tmp_path, capsys):
    """NaN weights: the entropy of such a dump would read 0.0; the dump job names the checkpoint and layer instead."""
    ckpt = torch.load(made["ckpt"], weights_only=True)
    ckpt["model"]["blocks.1.mlp.fc2.bias"][:] = float("nan")
    torch.save(ckpt, tmp_path / "nan.pt")
    line = _dump(made, tmp_path, capsys, ckpt=tmp_path / "nan.pt")
    assert "nan.pt: layer 2 (blocks.1) gives a non-finite block output" in line


def test_fetch_checkpoint_that_is_text_is_not_called_a_misfit(made, tmp_path, capsys):
    from distdyn import models

    argv = ["fetch", "--name", "mine", "--key", "extra_models[0]", "--model", json.dumps(made["model_cfg"]),
            "--num-classes", "4", "--in-chans", "1", "--out", tmp_path / "w.pt", "--checkpoint"]
    line = call(models.main, argv + [_file(tmp_path, "notes.pt", b"notes\n")], capsys)
    assert "notes.pt: not a loadable checkpoint" in line and "does not fit" not in line
    other = {**made["model_cfg"], "overrides": {**made["model_cfg"]["overrides"], "embed_dim": 16}}
    line = call(models.main, argv[:6] + [json.dumps(other)] + argv[7:] + [made["ckpt"]], capsys)
    assert "extra_models[0].checkpoint" in line and "does not fit" in line


def test_train_teacher_checkpoint_that_is_text(made, tmp_path, capsys):
    from distdyn import train
    from distdyn.config import teacher_spec

    spec = teacher_spec(made["cfg"])
    spec["checkpoint"] = _file(tmp_path, "mine.pt", b"not a checkpoint")
    line = call(train.main, ["--spec", json.dumps(spec), "--out", tmp_path / "t"], capsys)
    assert "mine.pt: not a loadable checkpoint" in line and "does not fit" not in line


def test_train_student_given_another_models_checkpoint_as_teacher(made, tmp_path, capsys):
    from distdyn import train
    from distdyn.config import student_spec

    spec = student_spec(made["cfg"], "logit", 0)
    line = call(train.main, ["--spec", json.dumps(spec), "--out", tmp_path / "s", "--teacher", made["ckpt"]], capsys)
    assert "model.pt: is a checkpoint of" in line and "not of the configured teacher" in line


def test_phases_table_without_its_columns(tmp_path, capsys):
    from distdyn import analysis

    bad = _file(tmp_path, "layers.csv", b"model,layer\nteacher,1\n")
    line = call(analysis.main, ["phases", "--layers", bad, "--out", tmp_path / "p.csv"], capsys)
    assert "layers.csv: lacks the columns" in line and "metric" in line


def test_cka_teacher_dump_that_is_no_teachers(made, tmp_path, capsys):
    from distdyn import analysis

    expect = json.dumps([made["identity"], {**made["identity"], "role": "teacher"}])
    line = call(analysis.main, ["cka", "--student", made["dump"], "--teacher", made["dump"], "--expect", expect,
                                "--out", tmp_path / "c.csv"], capsys)
    assert "m.h5: is another run's dump: its attributes say role 'model'" in line


def test_plots_missing_table(tmp_path, capsys):
    from distdyn import plots

    line = call(plots.main, ["--metrics", tmp_path, "--out", tmp_path / "fig", "--models", "teacher"], capsys)
    assert "layers.csv: does not exist" in line


def test_claims_empty_table(tmp_path, capsys):
    from distdyn import claims

    for name in ("layers", "accuracy", "curves"):
        (tmp_path / f"{name}.csv").write_text("")
    line = call(claims.main, ["--layers", tmp_path / "layers.csv", "--accuracy", tmp_path / "accuracy.csv",
                              "--curves", tmp_path / "curves.csv", "--settings-json", "{}", "--student-depth", "2",
                              "--teacher-depth", "3", "--out", tmp_path / "claims.md"], capsys)
    assert "layers.csv: is empty" in line


def test_python_m_prints_one_line_and_exits_1(tmp_path):
    """The entry point as a rule runs it: a subprocess, `python -m distdyn.metrics`."""
    proc = subprocess.run([sys.executable, "-m", "distdyn.metrics", str(tmp_path / "gone.h5"), "--out", str(tmp_path)],
                          cwd=ROOT / "workflow", capture_output=True, text=True, timeout=120)
    line = assert_one_error(proc.returncode, proc.stdout + proc.stderr, "gone.h5")
    assert proc.stderr.strip().splitlines()[-1] == line


# ---------------------------------------------------------------- CONSOLE: what `snakemake` prints (dry runs)

def _yaml(wd, change):
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    change(cfg)
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))


def _damaged_fashion_config(wd):
    _damage_fashion(fake_fashion(wd / "fm", train=40, test=20, gz=False), "t10k-images-idx3-ubyte", "truncate")

    def change(cfg):
        cfg["data"] = {"source": "fashion_mnist", "root": "fm"}
        for role in ("teacher", "student"):
            cfg[role]["overrides"].update(img_size=28, patch_size=7)
    _yaml(wd, change)


CONSOLE_CASES = {
    # id: (how the workdir is changed, extra snakemake arguments, what the one line starts with)
    "config-key": (lambda wd: _yaml(wd, lambda c: c.update(seeds=[0, 0])), [], "error: config key 'seeds'"),
    "yaml-syntax": (lambda wd: (wd / "config.yaml").write_text("seeds: [0\n"), [], "error: config.yaml: line 2"),
    "no-config-yaml": (lambda wd: (wd / "config.yaml").unlink(), [], "error: config.yaml: does not exist"),
    "command-line-config": (lambda wd: None, ["--config", "student={train: {opt: adamx}}"],
                            "error: config key 'student.train.opt'"),
    "damaged-data-file": (_damaged_fashion_config, [], "error: config key 'data.root'"),
}


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    """Each case's `snakemake -n --cores 2`, two at a time (each is mostly one process importing torch and timm)."""
    tmp = tmp_path_factory.mktemp("console")

    def run(name):
        change, args, _ = CONSOLE_CASES[name]
        wd = make_workdir(tmp / name, TINY)
        change(wd)
        return snakemake(wd, "-n", "--cores", "2", *args, check=False)

    return two_at_a_time(run, CONSOLE_CASES)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONSOLE_CASES))
def test_snakemake_console_shows_one_line(console, name):
    proc = console[name]
    text = proc.stdout + proc.stderr
    assert assert_one_error(proc.returncode, text).startswith(CONSOLE_CASES[name][2])
    # Nothing but Snakemake's own notices and the line: no WorkflowError, no `File ..., line N` frame.
    notices = ("error: ", "Using workflow specific profile", "Config file config.yaml is extended")
    assert [line for line in text.strip().splitlines() if line.strip() and not line.startswith(notices)] == [], text


@pytest.mark.slow
def test_nodes_without_the_slurm_executor_are_refused_before_any_job(tmp_path):
    """train.nodes > 1 needs SLURM's allocation (docs/slurm.md): a local run stops with one line once the executor is
    known (the Snakefile's onstart, after the plan), before any job has started."""
    cfg = copy.deepcopy(TINY)
    cfg["teacher"]["train"].update(gpus=2, nodes=2)
    wd = make_workdir(tmp_path, cfg)
    proc = snakemake(wd, "--cores", "2", check=False)
    line = assert_one_error(proc.returncode, proc.stdout + proc.stderr, "config key 'teacher.train.nodes'")
    assert "need the SLURM executor" in line and "'local'" in line, line
    assert not (wd / "results").exists(), sorted(p.name for p in (wd / "results").rglob("*"))


# ---------------------------------------------------------------- DAMAGED: a finished run, one file damaged per case

FINISHED = {**copy.deepcopy(TINY),
            "settings": [{"name": "baseline", "method": "none"}, {"name": "logit", "method": "logit"}]}
TRAINED = ["results/teacher/*", "results/students/*/seed_0/*"]  # checkpoints, logs, the probe set
DUMPS = ["results/activations/**/*.h5"]
RUN_TABLES = ["results/metrics/runs/**/*.csv"]
A = "results/activations"


def _copy_of(other):
    return lambda path, wd: shutil.copy(wd / other, path)


def _write(text):
    return lambda path, wd: path.write_text(text)


def _set_nan(path, wd):
    with h5py.File(path, "r+") as f:
        f["blocks"][1, 3, 0, 0] = np.nan


def _bare_state_dict(path, wd):
    torch.save(torch.load(path, weights_only=True)["model"], path)


def _probe_out_of_range(path, wd):
    probe = pd.read_csv(path)
    probe.loc[0, "index"] = 9999
    probe.to_csv(path, index=False)


def _lines(keep=None, repeat=0, append=""):
    def damage(path, wd):
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[:keep] + lines[1:1 + repeat]) + append)
    return damage


# id: (damaged file, damage, what the error line says besides the file, what is upstream of it: byte-identical after).
# One case per reader the workflow wires up; each reader's other damages are JOBS cases above.
DAMAGED_CASES = {
    "dump-of-another-setting": (f"{A}/baseline/seed_0/final.h5", _copy_of(f"{A}/logit/seed_0/final.h5"),
                                "another run's dump", TRAINED + DUMPS),
    "dump-with-nan": (f"{A}/logit/seed_0/final.h5", _set_nan, "layer 2 holds NaN or Inf", TRAINED + DUMPS),
    "checkpoint-without-architecture": ("results/students/logit/seed_0/epoch_1.pt", _bare_state_dict,
                                        "no architecture record", TRAINED + [f"{A}/teacher.h5",
                                                                             f"{A}/baseline/**/*.h5"]),
    "teacher-checkpoint-is-text": ("results/teacher/final.pt", _write("my teacher\n"), "not a loadable checkpoint",
                                   ["results/teacher/*", "results/students/baseline/seed_0/*",
                                    f"{A}/baseline/**/*.h5"]),
    "log-line-garbled": ("results/students/logit/seed_0/log.jsonl", _lines(append='{"epoch": 3, "te'),
                         "line 3 is not JSON", TRAINED + DUMPS + RUN_TABLES),
    "probe-index-out-of-range": ("results/teacher/probe_indices.csv", _probe_out_of_range, "index 9999 is out of range",
                                 TRAINED),
    "run-table-truncated": ("results/metrics/runs/logit/seed_0/layers.csv", _lines(keep=20), "incomplete",
                            TRAINED + DUMPS + RUN_TABLES),
    "cka-rows-duplicated": ("results/metrics/runs/baseline/seed_0/cka.csv", _lines(repeat=3), "(duplicated rows?)",
                            TRAINED + DUMPS + RUN_TABLES),
    "gathered-table-emptied": ("results/metrics/layers.csv", _write(""), "is empty",
                               TRAINED + DUMPS + RUN_TABLES + ["results/metrics/layers.csv"]),
}


def _digests(workdir: Path, patterns) -> dict[str, str]:
    return {str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for pattern in patterns for p in sorted(workdir.glob(pattern)) if p.is_file()}


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """One finished run; per case a copy with one file damaged and `snakemake --cores 2` run on it, two cases at a
    time. Per case: the process, and the digests of what is upstream of the damaged file before and after."""
    tmp = tmp_path_factory.mktemp("damaged")
    finished = make_workdir(tmp / "finished", FINISHED)
    snakemake(finished, "--cores", "2")

    def run(name):
        target, damage, _, upstream = DAMAGED_CASES[name]
        wd = tmp / name
        shutil.copytree(finished, wd, symlinks=True)
        damage(wd / target, wd)
        before = _digests(wd, upstream)
        return snakemake(wd, "--cores", "2", check=False), before, _digests(wd, upstream)

    return two_at_a_time(run, DAMAGED_CASES)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DAMAGED_CASES))
def test_damaged_file_in_a_finished_run(damaged, name):
    target, _, says, _ = DAMAGED_CASES[name]
    proc, before, after = damaged[name]
    line = assert_one_error(proc.returncode, proc.stdout + proc.stderr, target, says)
    assert target in before  # the damaged file itself is left as it is
    assert after == before, f"changed or deleted upstream of {target}: " \
                            f"{sorted(k for k in before if after.get(k) != before[k])} ({line})"
