"""Analysis of models you already have: extra_models, alone (no settings: no training) and beside a study."""
import h5py
import pandas as pd
import pytest
import torch

from helpers import TINY, make_workdir, planned_jobs, snakemake

pytestmark = pytest.mark.slow

WIDE = {"img_size": 8, "patch_size": 2, "embed_dim": 16, "depth": 3, "num_heads": 2}
NARROW = {"img_size": 8, "patch_size": 2, "embed_dim": 8, "depth": 2, "num_heads": 1}


@pytest.fixture(scope="module")
def analysis_only(tmp_path_factory):
    """Two models of one's own, one as a plain timm state dict and one as a local pretrained file."""
    from distdyn.models import create_model

    tmp = tmp_path_factory.mktemp("analysis_only")
    torch.manual_seed(0)
    torch.save(create_model({"model": "vit_tiny_patch16_224", "overrides": WIDE}, 4, 1).state_dict(), tmp / "wide.pth")
    torch.save({"model": create_model({"model": "vit_tiny_patch16_224", "overrides": NARROW}, 4, 1).state_dict()},
               tmp / "narrow.pt")
    config = {"data": TINY["data"], "probe": TINY["probe"], "metrics": TINY["metrics"],
              "extra_models": [
                  {"name": "wide", "model": "vit_tiny_patch16_224", "overrides": WIDE,
                   "pretrained": str(tmp / "wide.pth")},
                  {"name": "narrow", "model": "vit_tiny_patch16_224", "overrides": NARROW,
                   "checkpoint": str(tmp / "narrow.pt")}]}
    workdir = make_workdir(tmp / "wd", config)
    jobs = planned_jobs(workdir)
    snakemake(workdir, "--cores", "2")
    return workdir, jobs


def test_analysis_only_runs_no_training(analysis_only):
    _, jobs = analysis_only
    assert jobs == {"select_probe": 1, "fetch_weights": 2, "dump_model_activations": 2, "build_kernels": 1,
                    "compute_model_metrics": 2, "gather_metrics": 1, "phases": 1, "encoding": 1, "plot": 1, "all": 1}


def test_each_model_is_dumped_measured_and_plotted(analysis_only):
    workdir, _ = analysis_only
    r = workdir / "results"
    for name, depth, width in (("wide", 3, 16), ("narrow", 2, 8)):
        with h5py.File(r / "activations" / f"{name}.h5") as f:
            assert f["blocks"].shape == (depth, 16, 16, width)
            assert f.attrs["role"] == "model" and f.attrs["setting"] == name
        for kind in ("entropy", "intensity", "spectra", "magnitudes", "outliers"):
            assert (r / "figures" / f"{name}_{kind}.png").stat().st_size > 5000
    layers = pd.read_csv(r / "metrics/layers.csv")
    assert set(layers.model) == {"wide", "narrow"} and set(layers.role) == {"model"}
    assert layers.groupby("model").layer.max().to_dict() == {"wide": 3, "narrow": 2}
    phases = pd.read_csv(r / "metrics/phases.csv")
    assert set(phases.model) == {"wide", "narrow"}
    assert set(pd.read_csv(r / "metrics/encoding.csv").model) == {"wide", "narrow"}
    assert (r / "figures/entropy_profiles.png").is_file()
    assert not (r / "teacher").joinpath("final.pt").exists() and not (r / "students").exists()


def test_extra_models_beside_a_study(tmp_path):
    """An extra model joins the teacher and the students in the tables and per-model figures (dry run)."""
    from distdyn.models import create_model

    torch.save(create_model({"model": "vit_tiny_patch16_224", "overrides": WIDE}, 4, 1).state_dict(),
               tmp_path / "w.pth")
    config = {**TINY, "extra_models": [{"name": "mine", "model": "vit_tiny_patch16_224", "overrides": WIDE,
                                        "checkpoint": str(tmp_path / "w.pth")}]}
    workdir = make_workdir(tmp_path / "wd", config)
    jobs = planned_jobs(workdir)
    assert jobs["fetch_weights"] == 1 and jobs["dump_model_activations"] == 2 and jobs["compute_model_metrics"] == 2
    out = snakemake(workdir, "-n", "-p", "--cores", "2").stdout
    assert "results/figures/mine_entropy.png" in out and "results/figures/teacher_entropy.png" in out


# ---------------------------------------------------------------- the authors' analysis, image for image

SMALL_CAIT = {"embed_dim": 32, "depth": 3, "num_heads": 2, "depth_token_only": 1}


def authors_analysis(val_dir, model):
    """spectrum_and_entrop_analysis.py as paper.md 2.1-2.3 transcribes it: the first batch of 32 of the
    sorted val ImageFolder through torchvision's Resize(256) (bilinear) and CenterCrop(224), fp32 block
    outputs [L, B, C, H, W], the channel FFT's mean magnitude averaged over all C bins, and the per-token
    histogram entropy over the whole array's min/max."""
    import numpy as np
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                    transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(val_dir, transform=transform), batch_size=32,
                                         shuffle=False)
    images, _ = next(iter(loader))
    model.eval()
    with torch.no_grad():
        _, intermediates = model.forward_intermediates(images)
    features = np.stack([f.cpu().numpy() for f in intermediates])  # [L, B, C, H, W]
    L, B, C, H, W = features.shape
    spectrum = np.abs(np.fft.fft(features, axis=2) / C).mean(axis=(1, 3, 4))  # S[l, k]
    intensity = spectrum.mean(axis=1)
    data_min, data_max = features.min(), features.max()
    entropy = np.zeros(L)
    for layer in range(L):
        values = []
        for b in range(B):
            for h in range(H):
                for w in range(W):
                    hist, _ = np.histogram(features[layer, b, :, h, w], bins=100, range=(data_min, data_max))
                    p = hist / C
                    p = p[p > 0]
                    values.append(-np.sum(p * np.log2(p)))
        entropy[layer] = np.mean(values)
    return intensity, entropy


def test_authors_probe_reproduces_the_released_analysis_image_for_image(tmp_path):
    """The documented analysis-only command with probe.mode authors, on smooth photo-like JPEGs larger than
    256 px, gives the transcribed script's per-layer frequency intensity and entropy to 1e-5 relative."""
    import shutil
    import subprocess

    import numpy as np
    import yaml
    from helpers import ROOT, command_argv, documented_commands, job_env, photo_imagefolder

    from distdyn.models import create_model

    command = next(c for w, c in documented_commands()
                   if w == "presets/cait_s24_analysis.yaml" and "mode: authors" in c)
    wd = make_workdir(tmp_path / "wd", {})
    shutil.copytree(ROOT / "presets", wd / "presets")
    photo_imagefolder(wd / "data" / "imagenet")  # 40 val images: the first batch is 20 of n01, 12 of n02
    torch.manual_seed(0)
    model = create_model({"model": "cait_s24_224", "overrides": SMALL_CAIT}, 2, 3)
    torch.save(model.state_dict(), wd / "cait.pth")
    # The user's paths file: the data, and a small random-init CaiT of one's own in place of the fetched one.
    (wd / "imagenet_paths.yaml").write_text(yaml.safe_dump({
        "data": {"root": "data/imagenet", "num_workers": 0},
        "extra_models": [{"name": "cait_s24", "model": "cait_s24_224", "overrides": SMALL_CAIT,
                          "checkpoint": "cait.pth"}]}))
    argv = command_argv(command)  # as documented, up to the table it checks (the target before --config's values)
    argv.insert(argv.index("snakemake") + 1, "results/metrics/layers.csv")
    proc = subprocess.run(argv, cwd=wd, env=job_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    layers = pd.read_csv(wd / "results/metrics/layers.csv").query("model == 'cait_s24'")
    got = layers.pivot(index="layer", columns="metric", values="value").sort_index()
    intensity, entropy = authors_analysis(wd / "data/imagenet/val", model)
    assert len(intensity) == SMALL_CAIT["depth"]
    np.testing.assert_allclose(got["frequency_intensity"], intensity, rtol=1e-5)
    np.testing.assert_allclose(got["entropy_global"], entropy, rtol=1e-5)
    # The DeiT evaluation transform (bicubic), which the balanced probe reads, gives other values.
    from distdyn.activations import val_split

    deit = val_split({"source": "imagefolder", "root": str(wd / "data/imagenet"), "img_size": 224, "augment": {}})
    authors = val_split({"source": "imagefolder", "root": str(wd / "data/imagenet"), "img_size": 224,
                         "augment": {}}, probe_mode="authors")
    assert not torch.allclose(deit[0][0], authors[0][0], atol=1e-3)
