"""What training jobs ask the scheduler for (distdyn.requests): runtime from the throughput table, memory
and CPUs from the processes and their loader workers."""
import copy

import pytest

from distdyn.config import validate_schema
from distdyn.data import DataInfo
from distdyn.requests import train_minutes, train_request

INFO = DataInfo(num_classes=1000, in_chans=3, img_size=224, train_size=1_200_000, val_size=50_000)
TABLE = {"student_step": 10_000.0, "student_eval": 30_000.0, "teacher_forward": 5_000.0, "teacher_step": 1_500.0,
         "loader_worker": 300.0}


def config(**changes) -> dict:
    raw = {"data": {"source": "imagefolder", "root": "/data", "num_workers": 10},
           "teacher": {"train": {"epochs": 0}},
           "student": {"train": {"epochs": 100, "gpus": 8, "batch_size": 2048, "threads": 2}},
           "resources": {"throughput": dict(TABLE)}}
    for key, value in changes.items():
        node = raw
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return validate_schema(copy.deepcopy(raw))


def test_a_student_job_takes_the_table_time_for_every_epoch_and_evaluation():
    cfg = config(**{"resources.throughput.loader_worker": 10**6})  # not loader-bound
    per_image = 1 / TABLE["teacher_forward"] + 1 / TABLE["student_step"]
    want = (100 * 1_200_000 * per_image + 100 * 50_000 / TABLE["student_eval"]) / 8 / 60
    assert train_minutes(cfg, "student", INFO, [True]) == pytest.approx(want)
    # the no-KD baseline reads no teacher forward
    want_alone = (100 * 1_200_000 / TABLE["student_step"] + 100 * 50_000 / TABLE["student_eval"]) / 8 / 60
    assert train_minutes(cfg, "student", INFO, [False]) == pytest.approx(want_alone)
    # twice the throughput, half the time
    fast = config(**{"resources.throughput": {k: 2 * v for k, v in TABLE.items()}})
    fast["resources"]["throughput"]["loader_worker"] = 10**6
    assert train_minutes(fast, "student", INFO, [True]) == pytest.approx(want / 2)


def test_a_group_shares_the_teacher_forward_and_the_loading():
    cfg = config(**{"resources.throughput.loader_worker": 10**6})
    one = train_minutes(cfg, "student", INFO, [True])
    seven = train_minutes(cfg, "student", INFO, [True] * 7)
    teacher_part = 100 * 1_200_000 / TABLE["teacher_forward"] / 8 / 60
    assert seven == pytest.approx(7 * one - 6 * teacher_part)
    assert seven < 7 * one


def test_a_job_whose_loader_workers_are_slower_than_its_gpu_is_loader_bound():
    cfg = config()  # 10 workers x 300 images/s = 3,000 images/s per process, below the GPU's 3,333
    want = (100 * 1_200_000 / 3000 + 100 * 50_000 / 3000) / 8 / 60
    assert train_minutes(cfg, "student", INFO, [True]) == pytest.approx(want)
    # in-memory data is not read through workers
    mem = config(**{"data.source": "digits", "data.root": None})
    assert train_minutes(mem, "student", INFO, [True]) < want


def test_requests_follow_processes_workers_and_students():
    cfg = config()
    req = train_request(cfg, "student", INFO, [True] * 7)
    res = cfg["resources"]
    assert req.gpu == 8 and req.nodes == 1
    assert req.cpus == 8 * (2 + 10)  # threads and loader workers of each process
    assert req.mem_mb == 8 * (res["rank_mem_mb"] + 10 * res["worker_mem_mb"] + 6 * res["group_member_mem_mb"])
    assert req.runtime == pytest.approx(res["startup_minutes"] + res["runtime_margin"] * req.estimate, abs=1)
    assert req.runtime >= res["startup_minutes"] + res["runtime_margin"] * req.estimate
    # a teacher that is imported (0 epochs) is evaluated once: a short job on one GPU
    teacher = train_request(cfg, "teacher", INFO)
    assert teacher.gpu == 1 and teacher.estimate == pytest.approx(50_000 / 3000 / 60)


def test_set_runtime_and_memory_replace_the_estimates():
    cfg = config(**{"resources.train_runtime": 600, "resources.train_mem_mb": 50_000})
    req = train_request(cfg, "student", INFO, [True] * 3)
    assert req.runtime == 3 * 600 and req.mem_mb == 50_000 + 2 * cfg["resources"]["group_member_mem_mb"]
    # on a cluster without GPUs (resources.gpu 0) the job asks for none
    assert train_request(config(**{"resources.gpu": 0}), "student", INFO, [True]).gpu == 0
