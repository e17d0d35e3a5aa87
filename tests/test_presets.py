"""Every preset validates against the schema and its data checks (the documented commands: test_commands.py)."""
import pytest
import yaml

from distdyn.config import ConfigError, load_config, validate_schema
from helpers import ROOT, fake_cifar100, fake_fashion

PRESETS = sorted((ROOT / "presets").glob("*.yaml"))


def _preset(name):
    return yaml.safe_load((ROOT / "presets" / f"{name}.yaml").read_text())


def test_all_presets_exist():
    assert {p.stem for p in PRESETS} == {"fashion_mnist", "fashion_mnist_cpu", "cifar100", "imagenet_paper",
                                        "cait_s24_analysis", "digits_decide"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_passes_the_schema(path):
    cfg = validate_schema(yaml.safe_load(path.read_text()))
    assert cfg["settings"] or cfg["extra_models"]


@pytest.mark.parametrize("name", ["fashion_mnist", "fashion_mnist_cpu"])
def test_fashion_presets_validate_against_idx_files(name, tmp_path):
    raw = _preset(name)
    raw["data"]["root"] = str(fake_fashion(tmp_path, train=3200, test=1200, gz=True))
    cfg = load_config(raw)
    assert cfg["seeds"] == [0, 1, 2]
    assert cfg["student"]["overrides"]["embed_dim"] * 2 == cfg["teacher"]["overrides"]["embed_dim"]


def test_fashion_preset_names_a_missing_directory(tmp_path):
    raw = _preset("fashion_mnist_cpu")
    raw["data"]["root"] = str(tmp_path / "absent")
    with pytest.raises(ConfigError, match=r"data\.root"):
        load_config(raw)


def test_cifar100_preset_validates_against_a_pickle_folder(tmp_path):
    raw = _preset("cifar100")
    raw["data"]["root"] = str(fake_cifar100(tmp_path))
    cfg = load_config(raw)
    assert cfg["data"]["source"] == "cifar100"


def test_digits_decide_is_the_default_study_with_the_seeds_to_decide():
    """config.yaml's data, models and training; 20 seeds, the five settings of the accuracy claims, final
    checkpoints only."""
    from distdyn.config import student_spec

    cfg = load_config(_preset("digits_decide"))
    default = load_config(yaml.safe_load((ROOT / "config.yaml").read_text()))
    assert cfg["seeds"] == list(range(20))
    assert [s["name"] for s in cfg["settings"]] == ["logit", "spectral_first", "spectral_last", "projector_first",
                                                     "projector_last"]
    for key in ("data", "probe", "teacher", "distill"):
        assert cfg[key] == default[key], key
    assert {k: v for k, v in cfg["student"].items() if k != "train"} == \
           {k: v for k, v in default["student"].items() if k != "train"}
    assert cfg["student"]["train"] == {**default["student"]["train"], "checkpoint_every": 0}
    assert student_spec(cfg, "spectral_last", 19)["checkpoint_epochs"] == []
