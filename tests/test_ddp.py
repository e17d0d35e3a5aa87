"""gpus > 1: torchrun with DDP gives the same numbers as one process (gloo on CPU)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distdyn import train
from distdyn.config import student_spec, teacher_spec
from distdyn.models import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tiny_cfg, tmp_path):
    train.run(teacher_spec(tiny_cfg), tmp_path / "teacher")
    teacher = tmp_path / "teacher" / "final.pt"
    spec = student_spec(tiny_cfg, "spectral_last", 0)
    train.run(spec, tmp_path / "single", teacher_path=str(teacher))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "distdyn.train",
           "--spec", json.dumps(spec), "--out", str(tmp_path / "ddp"), "--teacher", str(teacher)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x2 (DDP)" in proc.stderr
    single, ddp = load_checkpoint(tmp_path / "single" / "final.pt")["model"], load_checkpoint(tmp_path / "ddp" / "final.pt")["model"]
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-4, atol=1e-5, msg=k)
    a = [json.loads(l) for l in (tmp_path / "single" / "log.jsonl").read_text().splitlines()]
    b = [json.loads(l) for l in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [round(l["train_loss"], 4) for l in a] == [round(l["train_loss"], 4) for l in b]
    assert [l["test_acc1"] for l in a] == [l["test_acc1"] for l in b]
