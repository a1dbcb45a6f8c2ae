"""bench.gpu: the compute node's device in the document, the refusal of a missing GPU, and a
smoke run on the CPU that writes its table."""

from __future__ import annotations

import json

import pytest
import torch

from bench.gpu import check_devices, doc_for, main, rows_of


def test_the_device_is_the_compute_nodes():
    doc = doc_for("cuda:1", quick=False)
    assert [c["device"] for c in doc["compute_nodes"]] == ["cuda:1"]
    assert doc["model"] == {"name": "vgg19", "norm": "none"}
    assert doc["plan"] == {"cuts": [2], "micro_batches": 4}


def test_a_missing_gpu_is_refused_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert check_devices(["cpu"]) is None
    assert check_devices(["cpu", "cuda"]).startswith("torch sees no CUDA device here")
    assert main(["--quick"]) == 2
    assert "torch sees no CUDA device here" in capsys.readouterr().out


def test_rows_compare_each_device_with_the_cpu_and_the_first_weights():
    runs = {"cpu": [{"epoch_s": 4.0, "steal_pct": 0.0}, {"epoch_s": 6.0, "steal_pct": 1.0}],
            "cuda": [{"epoch_s": 1.0, "steal_pct": 0.0}, {"epoch_s": 2.0, "steal_pct": 0.0}]}
    first = {"cpu": {"w": torch.tensor([1.0, 2.0])}, "cuda": {"w": torch.tensor([1.0, 2.5])}}
    cpu, cuda = rows_of(runs, first)
    assert cpu["epoch_s"] == 5.0 and cpu["cpu_over_this"] == 1.0 and cpu["max_weight_diff"] == 0
    assert cuda["epoch_s"] == 1.5 and cuda["cpu_over_this"] == pytest.approx(5.0 / 1.5)
    assert cuda["max_weight_diff"] == 0.5


def test_a_smoke_run_on_the_cpu_writes_its_table(tmp_path, monkeypatch):
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")  # main sets it for its node processes
    assert main(["--quick", "--devices", "cpu", "--results", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "gpu.quick.json").read_text())
    (row,) = doc["rows"]
    assert row["device"] == "cpu" and row["runs"] == 1 and row["epoch_s"] > 0
    assert doc["meta"]["gpu"] == "none" or torch.cuda.is_available()
    assert (tmp_path / "gpu.quick.md").read_text().startswith("`python3 -m bench.gpu --quick`")
