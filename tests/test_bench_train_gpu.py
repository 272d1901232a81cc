"""bench/bench_train_gpu.py on a machine without CUDA: it stops at once saying why, builds its random model in
CPU memory, pins each child to one GPU, and its --cli part drives the real commands (up to the GPU preset's
refusal here)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
import torch

from backend.config import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))
import bench_train_gpu as bench  # noqa: E402


def test_without_cuda_it_fails_fast_and_says_why():
    out = subprocess.run([sys.executable, "bench/bench_train_gpu.py"], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1
    assert "no CUDA GPU here" in out.stdout and "RESULT skipped=no_cuda" in out.stdout


def test_the_random_model_is_built_in_cpu_memory(tmp_path, monkeypatch):
    def no_gpu(*args, **kwargs):
        raise AssertionError("the model must not be built on the GPU")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # even where a GPU is present
    monkeypatch.setattr(torch.cuda, "init", no_gpu)
    small = {**bench.QWEN25_3B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 4096, "max_window_layers": 2}
    bench.build_model_dir(tmp_path / "model", tmp_path / "tiny", small)
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_children_get_one_gpu_and_their_own_compile_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    env = bench.one_gpu_env(tmp_path)
    assert env["CUDA_VISIBLE_DEVICES"] == "3" and env["HF_HUB_OFFLINE"] == "1"
    assert env["UNSLOTH_COMPILE_LOCATION"] == str(tmp_path / "unsloth_compiled_cache")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert bench.one_gpu_env(tmp_path)["CUDA_VISIBLE_DEVICES"] == "0"
    assert bench.cap_gpu_memory(6.0) is None  # no CUDA: nothing to cap


@pytest.mark.slow
def test_the_cli_part_runs_the_real_commands(tmp_path, capsys):
    args = argparse.Namespace(cli_steps=2, child_timeout=300)
    bench.run_cli(args, tmp_path, tmp_path / "no-model-needed-before-train")
    out = capsys.readouterr().out
    # ingest and synthesis run on any machine; the seed preset then refuses without a GPU (bad input: exit 2)
    assert "RESULT_CLI ingest=ok synth=ok train=exit_2" in out and "`--preset smol` on a CPU" in out
