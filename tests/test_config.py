import copy

import pytest
import torch
from distdyn.config import (ConfigError, checkpoint_epochs, load_config, read_schema, resolve_pairs,
                            student_spec, teacher_spec)
from helpers import ROOT, TINY_VIT, fake_imagefolder


def test_default_config_is_valid_and_complete():
    cfg = load_config(ROOT / "config.yaml")
    names = [s["name"] for s in cfg["settings"]]
    assert names == ["baseline", "logit", "spectral_first", "spectral_last", "spectral_first_last",
                     "projector_first", "projector_last", "projector_first_last"]
    assert cfg["seeds"] == [0, 1]  # two seeds: intervals in the claims, error bars in the figures
    d = cfg["distill"]
    assert (d["alpha"], d["tau"], d["feature_weight"], d["label_smoothing"]) == (0.9, 1.0, 0.2, 0.1)
    t, s = cfg["teacher"]["overrides"], cfg["student"]["overrides"]
    assert t["depth"] >= 8 and s["embed_dim"] * 2 == t["embed_dim"] and s["depth"] <= t["depth"]


def _walk(schema, path=""):
    for name, sub in schema.get("properties", {}).items():
        yield f"{path}{name}", sub
        yield from _walk(sub, f"{path}{name}.")


def test_every_schema_key_has_a_description_and_default():
    schema = read_schema()
    for key, sub in _walk(schema):
        if "$ref" in sub:
            continue
        assert "description" in sub, key
        if not key.startswith("settings."):
            assert "default" in sub, key
    for name, sub in schema["definitions"]["train"]["properties"].items():
        assert "description" in sub and "default" in sub, name


def test_defaults_fill_an_empty_config(tmp_path):
    from distdyn.config import validate_schema

    cfg = validate_schema({})
    assert cfg["settings"] == [] and cfg["extra_models"] == []
    assert cfg["data"]["source"] == "digits"
    assert cfg["teacher"]["train"]["opt"] == "adamw"
    assert cfg["student"]["overrides"] == {}


# id: (change of the tiny config; the whole message: the key, a setting by index and name, what it takes)
SCHEMA_REFUSED = {
    "number_out_of_range": (
        lambda raw: raw.update(distill={"alpha": 1.5}),
        "config key 'distill.alpha': 1.5 is not allowed: it takes a number >= 0 and <= 1"),
    "unknown_method": (
        lambda raw: raw["settings"][1].update(method="fitnet"),
        "config key 'settings[1] (logit).method': 'fitnet': no such method: the built-in ones are logit, mse, none, "
        "projector, spectral, vitkd; your own is `package.module:Class` or `path/to/file.py:Class` (docs/methods.md)"),
    "unknown_layers": (
        lambda raw: raw["settings"][2].update(layers="middle"),
        "config key 'settings[2] (spectral_last).layers': 'middle' is not allowed: it takes one of first, last, "
        "first_last, or a list of [student_block, teacher_block] pairs of 0-based block indices, e.g. [[0, 0], "
        "[5, 11]]"),
    "name_with_a_slash": (
        lambda raw: raw["settings"][1].update(name="a/b"),
        "config key 'settings[1] (a/b).name': 'a/b' is not allowed: it takes a name of letters, digits, _ and - "
        "(it is used in paths)"),
    "checkpoint_epoch_zero": (
        lambda raw: raw["student"]["train"].update(checkpoint_every=[0]),
        "config key 'student.train.checkpoint_every': [0] is not allowed: it takes an integer >= 0, or a list "
        "(each an integer >= 1)"),
    "nullable_integer": (
        lambda raw: raw["data"].update(img_size=2),
        "config key 'data.img_size': 2 is not allowed: it takes an integer >= 4 or null"),
    "unknown_key_with_a_close_name": (
        lambda raw: raw["student"].update(traon={}),
        "config key 'student.traon': is not a key student takes (did you mean train?); student takes model, "
        "overrides, train, share_teacher"),
    "setting_without_a_name": (
        lambda raw: raw["settings"][0].pop("name"),
        "config key 'settings[0]': lacks name; each entry needs name and method"),
}


@pytest.mark.parametrize("case", list(SCHEMA_REFUSED))
def test_schema_error_says_what_the_key_takes(case, tiny_raw):
    change, message = SCHEMA_REFUSED[case]
    change(tiny_raw)
    with pytest.raises(ConfigError) as e:
        load_config(tiny_raw)
    assert str(e.value) == message


def _add_setting(**setting):
    return lambda raw, tmp: raw["settings"].append(copy.deepcopy(setting))


def _extra_model(name):
    def change(raw, tmp):
        torch.save({}, tmp / "mine.pt")
        raw["extra_models"] = [{"name": name, **copy.deepcopy(TINY_VIT), "checkpoint": str(tmp / "mine.pt")}]
    return change


# id: (change of the tiny config, given it and tmp_path; the ConfigError it gets)
REFUSED = {
    "layer_beyond_student_depth": (
        _add_setting(name="bad", method="spectral", layers=[[2, 0]]),
        r"settings\[4\] \(bad\)\.layers.*student block 2 is out of range.*2 blocks"),
    "layer_beyond_teacher_depth": (
        _add_setting(name="bad", method="mse", layers=[[0, 3]]),
        r"settings\[4\] \(bad\)\.layers.*teacher block 3 is out of range"),
    "student_wider_than_teacher_for_spectral": (
        lambda raw, tmp: raw["student"]["overrides"].update(embed_dim=32),
        r"settings\[2\] \(spectral_last\)\.method.*student \(32\) is wider than the teacher \(16\)"),
    "two_settings_with_one_name": (
        _add_setting(name="logit", method="logit"),
        r"settings\[4\] \(logit\)\.name.*two settings are named 'logit'"),
    "setting_named_like_the_teacher": (
        _add_setting(name="teacher", method="logit"),
        r"settings\[4\] \(teacher\)\.name.*reserved"),
    "extra_model_named_like_a_setting": (
        _extra_model("logit"),
        r"extra_models\[0\] \(logit\)\.name.*'logit' is already the name of settings\[1\] \(logit\)"),
    "missing_data_path": (
        lambda raw, tmp: raw.update(data={"source": "fashion_mnist", "root": str(tmp / "nope")}),
        r"data\.root.*does not exist"),
    "probe_larger_than_validation_split": (
        lambda raw, tmp: raw["probe"].update(size=33),  # 160 images * 0.2 = 32 in validation
        r"probe\.size.*33 probe images requested, the validation split has 32"),
    "missing_teacher_checkpoint": (
        lambda raw, tmp: raw["teacher"].update(checkpoint=str(tmp / "teacher.pt")),
        r"teacher\.checkpoint.*does not exist"),
    "gpus_that_do_not_split_over_the_nodes": (
        lambda raw, tmp: raw["student"]["train"].update(gpus=3, nodes=2),
        r"student\.train\.nodes.*student\.train\.gpus = 3 processes do not split evenly over 2 nodes"),
    "feature_method_needs_layers": (
        _add_setting(name="nolayers", method="projector"),
        r"settings\[4\] \(nolayers\)\.layers.*needs layers"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_config_is_refused_naming_the_key(case, tiny_raw, tmp_path):
    change, message = REFUSED[case]
    change(tiny_raw, tmp_path)
    with pytest.raises(ConfigError, match=message):
        load_config(tiny_raw)


def test_resolve_pairs():
    assert resolve_pairs("first", 12, 24) == [[0, 0]]
    assert resolve_pairs("last", 12, 24) == [[11, 23]]
    assert resolve_pairs("first_last", 12, 24) == [[0, 0], [11, 23]]
    assert resolve_pairs([[11, 23], [1, 1]], 12, 24) == [[1, 1], [11, 23]]


def test_checkpoint_epochs():
    assert checkpoint_epochs({"epochs": 10, "checkpoint_every": 3}) == [3, 6, 9]
    assert checkpoint_epochs({"epochs": 9, "checkpoint_every": 3}) == [3, 6]  # the last is final.pt
    assert checkpoint_epochs({"epochs": 10, "checkpoint_every": [8, 2, 10, 12]}) == [2, 8]
    assert checkpoint_epochs({"epochs": 10, "checkpoint_every": 0}) == []


def test_student_spec_resolves_weights(tiny_cfg):
    tiny_cfg["settings"][2]["alpha"] = 0.5
    spec = student_spec(tiny_cfg, "spectral_last", 1)
    s = spec["setting"]
    assert (s["alpha"], s["tau"], s["feature_weight"], s["pairs"]) == (0.5, 1.0, 0.2, [[1, 2]])
    assert spec["seed"] == 1 and spec["checkpoint_epochs"] == [1]
    assert teacher_spec(tiny_cfg)["role"] == "teacher"


def test_numbers_written_as_strings_are_coerced_where_the_schema_wants_numbers(tiny_raw):
    """PyYAML reads 1e-3 as a string and Snakemake's --config passes strings throughout."""
    tiny_raw["seeds"] = ["0", "1"]
    tiny_raw["student"]["train"].update(lr="1e-3", epochs="2", checkpoint_every=["1"])
    tiny_raw["distill"] = {"projector_trainable": "false", "tau": "2"}
    tiny_raw["settings"][2]["layers"] = [["1", "2"]]
    tiny_raw["metrics"]["bootstrap"] = "20"
    cfg = load_config(tiny_raw)
    assert cfg["seeds"] == [0, 1]
    t = cfg["student"]["train"]
    assert (t["lr"], t["epochs"], t["checkpoint_every"]) == (0.001, 2, [1])
    assert cfg["distill"]["projector_trainable"] is False and cfg["distill"]["tau"] == 2.0
    assert cfg["settings"][2]["layers"] == [[1, 2]]
    # Strings stay strings where the schema takes a string ...
    tiny_raw["student"]["model"] = "vit_tiny_patch16_224"
    tiny_raw["settings"][2]["layers"] = "last"
    assert load_config(tiny_raw)["settings"][2]["layers"] == "last"
    # ... and a string that is no number is still refused, naming the key.
    tiny_raw["student"]["train"]["lr"] = "fast"
    with pytest.raises(ConfigError, match=r"student\.train\.lr"):
        load_config(tiny_raw)


def test_pretrained_teacher_spec_reads_the_fetched_weights(tiny_raw, tmp_path):
    weights = tmp_path / "teacher.pth"
    torch.save({}, weights)  # plan time looks at a weights file's bytes: an empty one is refused
    tiny_raw["teacher"]["pretrained"] = str(weights)
    tiny_raw["teacher"]["train"]["epochs"] = 0
    spec = teacher_spec(load_config(tiny_raw))
    assert spec["checkpoint"] == "results/models/teacher/weights.pt"
    tiny_raw["teacher"]["checkpoint"] = str(weights)
    with pytest.raises(ConfigError, match=r"teacher\.pretrained.*not both"):
        load_config(tiny_raw)
    tiny_raw["teacher"].update(checkpoint=None, pretrained=str(tmp_path / "absent.pth"))
    with pytest.raises(ConfigError, match=r"teacher\.pretrained.*absent\.pth does not exist"):
        load_config(tiny_raw)


def test_analysis_only_config_is_valid_and_needs_weights(tiny_raw, tmp_path):
    ckpt = tmp_path / "mine.pt"
    torch.save({}, ckpt)
    raw = {"data": tiny_raw["data"], "probe": tiny_raw["probe"],
           "extra_models": [{"name": "mine", **copy.deepcopy(TINY_VIT), "checkpoint": str(ckpt)}]}
    cfg = load_config(raw)
    assert cfg["settings"] == [] and cfg["extra_models"][0]["pretrained"] is False
    raw["extra_models"][0]["checkpoint"] = None
    with pytest.raises(ConfigError, match=r"extra_models\[0\] \(mine\)\.checkpoint.*needs its weights"):
        load_config(raw)
    raw["extra_models"][0].update(checkpoint=str(ckpt), name="teacher")
    with pytest.raises(ConfigError, match=r"extra_models\[0\] \(teacher\)\.name.*'teacher'"):
        load_config(raw)
    raw["extra_models"][0].update(name="mine", model="no_such_model")
    with pytest.raises(ConfigError, match=r"extra_models\[0\] \(mine\)\.model"):
        load_config(raw)
    with pytest.raises(ConfigError, match=r"settings.*nothing to run"):
        load_config({"data": tiny_raw["data"], "probe": tiny_raw["probe"]})


def test_imagefolder_description_is_kept_on_disk_until_a_class_folder_changes(tmp_path, monkeypatch):
    """Every SLURM job parses the Snakefile: only the first walks the ImageFolder tree."""
    from distdyn import config, data

    monkeypatch.chdir(tmp_path)
    cfg = config.validate_schema({"data": {"source": "imagefolder", "root": str(fake_imagefolder(tmp_path / "f"))}})
    walks = []
    real = data.describe
    monkeypatch.setattr(data, "describe", lambda c: walks.append(1) or real(c))
    first = config.data_info(cfg["data"])
    config._DATA_INFO.clear()
    assert config.data_info(cfg["data"]) == first and len(walks) == 1  # a new process: read from disk
    (tmp_path / "f/val/n01/extra.JPEG").write_bytes((tmp_path / "f/val/n01/0.JPEG").read_bytes())
    config._DATA_INFO.clear()
    assert config.data_info(cfg["data"]).val_size == first.val_size + 1 and len(walks) == 2


def test_run_spec_holds_the_data_content_not_its_path_nor_the_tuning_keys(tiny_raw, tmp_path, monkeypatch):
    """The specs the rules pass (params, hashed into a run's key) leave out CPU threads, loader workers and
    the data's path, and hold the data's content digest: the same for a moved copy of the files, another
    when the data changes (a file's content for Fashion-MNIST; a file added to an ImageFolder, whose digest is
    of its listing, kept on disk until a class folder changes)."""
    import shutil

    from distdyn import config

    from distdyn.config import data_environment, run_spec, student_spec, teacher_spec
    from helpers import fake_fashion

    def spec_of(data, workers=0, threads=1):
        raw = copy.deepcopy(tiny_raw)
        raw["data"], raw["probe"] = {**data, "img_size": 8, "num_workers": workers}, {"size": 3}
        raw["student"]["train"]["threads"] = threads
        cfg = load_config(raw)
        return run_spec(student_spec(cfg, "logit", 0)), cfg

    monkeypatch.chdir(tmp_path)  # the ImageFolder's description is kept under results/.cache
    fake_fashion(tmp_path / "f1", train=20, test=10)
    fake_imagefolder(tmp_path / "i1", per_class=(2, 1), size=(40, 36))
    for source, first in (("fashion_mnist", tmp_path / "f1"), ("imagefolder", tmp_path / "i1")):
        spec, cfg = spec_of({"source": source, "root": str(first)})
        assert "root" not in spec["data"] and "num_workers" not in spec["data"] and "threads" not in spec["train"]
        assert spec["data"]["content"].startswith("sha256:" if source == "fashion_mnist" else "listing:")
        assert run_spec(teacher_spec(cfg))["data"] == spec["data"]
        moved = tmp_path / f"{source}_moved"
        shutil.copytree(first, moved)
        assert spec_of({"source": source, "root": str(moved)}, workers=3, threads=2)[0] == spec, source
        assert data_environment(cfg["data"]) == {"DISTDYN_DATA_ROOT": str(first), "DISTDYN_NUM_WORKERS": "0"}
        if source == "imagefolder":
            shutil.copy(moved / "val/n01/0.JPEG", moved / "val/n01/added.JPEG")
        else:
            changed = moved / "train-labels-idx1-ubyte.gz"
            changed.write_bytes(changed.read_bytes() + b"x")
        config._DATA_INFO.clear()  # a new process
        assert spec_of({"source": source, "root": str(moved)}, workers=3, threads=2)[0]["data"]["content"] \
            != spec["data"]["content"], source
    digits = spec_of({"source": "digits"})[0]
    assert digits["data"]["content"] is None  # the config alone determines bundled and synthetic data
