"""Training: real LoRA runs of the tiny model on CPU, cancel and resume, out-of-memory backoff, bad input.

The runs train a 2-layer Qwen2 for ~24 steps on 32 rows (a few seconds each); unsloth is never imported.
"""

from __future__ import annotations

import json
import sys
import threading
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from backend.chat import to_prompt_completion
from backend.config import REPO_ROOT
from backend.config_base import ConfigError
from backend.tiny_model import ensure_tiny_model
from backend.train import (
    _sft_config,
    build_hf_model,
    free_unsloth_memory,
    load_adapter_weights,
    merge_to_16bit,
    rows_to_dataset,
    run_with_oom_backoff,
    train_adapter,
    unsloth_environment,
)
from backend.train_config import load_preset, resolve_for_hardware

CPU = {"cuda": False, "bf16_supported": False, "unsloth_available": False}
needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")


def synthetic_rows(n: int = 40) -> list[dict]:
    """Single-turn rows (some with input) and two-turn conversations, like a curated dataset's."""
    rows = []
    for i in range(n):
        if i % 5 == 4:
            rows.append({"instruction": "", "input": "", "output": "", "messages": [
                {"role": "user", "content": f"What does berth {i} hold?"},
                {"role": "assistant", "content": f"Berth {i} holds container TM-{i}."},
                {"role": "user", "content": "And its weight?"},
                {"role": "assistant", "content": f"It weighs {i} tonnes."}]})
        else:
            rows.append({"instruction": f"What does tidemark.quote_{i}() return?",
                         "input": f"quote_{i}(weight={i})" if i % 2 else "",
                         "output": f"It returns a Quote for {i} tonnes.", "messages": None})
    return rows


class RecordingSink:
    """Keeps every log and event; can set `stop` once a step is reached (the dashboard's cancel button)."""

    def __init__(self, stop: threading.Event | None = None, stop_at: int | None = None):
        self.logs: list[tuple[int, dict]] = []
        self.events: list[tuple[str, dict]] = []
        self.stop, self.stop_at = stop, stop_at

    def log(self, step, metrics):
        self.logs.append((step, metrics))
        if self.stop is not None and step >= self.stop_at:
            self.stop.set()

    def event(self, kind, detail):
        self.events.append((kind, detail))

    def train_logs(self) -> list[tuple[int, dict]]:
        return [(s, m) for s, m in self.logs if "loss" in m]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return ensure_tiny_model(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def rows():
    data = synthetic_rows()
    return data[:32], data[32:]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny, rows):
    """One complete run of the tiny preset: (result, sink, out_dir)."""
    out = tmp_path_factory.mktemp("run")
    sink = RecordingSink()
    result = train_adapter(load_preset("tiny"), *rows, out, sink=sink, base_model_path=tiny)
    return result, sink, out


# ---- data ------------------------------------------------------------------------------------------

def test_single_turn_rows_become_prompt_and_completion():
    row = {"instruction": "Explain quote()", "input": "quote(3)", "output": "It prices a shipment.", "messages": None}
    assert to_prompt_completion(row) == {
        "prompt": [{"role": "user", "content": "Explain quote()\n\nquote(3)"}],
        "completion": [{"role": "assistant", "content": "It prices a shipment."}]}
    assert to_prompt_completion({**row, "input": ""})["prompt"][0]["content"] == "Explain quote()"


def test_multiturn_rows_complete_the_last_assistant_turn():
    messages = [{"role": "system", "content": "You know tidemark."},
                {"role": "user", "content": "a?"}, {"role": "assistant", "content": "A."},
                {"role": "user", "content": "b?"}, {"role": "assistant", "content": "B."}]
    example = to_prompt_completion({"instruction": "", "input": "", "output": "", "messages": messages})
    assert example["prompt"] == messages[:-1]
    assert example["completion"] == [{"role": "assistant", "content": "B."}]
    # the store's JSON column is accepted as well
    assert to_prompt_completion({"messages": json.dumps(messages)}) == example


def test_malformed_conversations_are_refused():
    bad = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
    with pytest.raises(ValueError, match="alternate"):
        rows_to_dataset([bad])


def test_dataset_has_trl_conversational_columns():
    ds = rows_to_dataset(synthetic_rows(10))
    assert ds.column_names == ["prompt", "completion"] and len(ds) == 10


def test_loss_is_on_the_assistant_answer_only(tiny, tmp_path):
    """What the trainer will train on: labels cover the final answer and its end-of-turn, nothing else."""
    from trl import SFTTrainer

    cfg = resolve_for_hardware(load_preset("tiny"), **CPU)
    model, tok = build_hf_model(cfg, tiny)
    rows = synthetic_rows(5)
    trainer = SFTTrainer(model=model, args=_sft_config(cfg, tmp_path, 4, 1, False, False),
                         train_dataset=rows_to_dataset(rows), processing_class=tok)
    for row, example in zip(rows, trainer.train_dataset, strict=True):
        trained = tok.decode([t for t in example["labels"] if t != -100])
        answer = row["messages"][-1]["content"] if row["messages"] else row["output"]
        assert trained == answer + "<|im_end|>\n"


# ---- a real run ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_run_completes_and_the_loss_goes_down(trained):
    result, sink, _ = trained
    assert result.status == "completed" and result.global_step == 24 and result.epochs_done == 3.0
    losses = [m["loss"] for _, m in sink.train_logs()]
    assert len(losses) == 24  # logging_steps 1
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5
    evals = [m["eval_loss"] for _, m in sink.logs if "eval_loss" in m]
    assert len(evals) >= 4 and evals[-1] < evals[0] and result.eval_loss == evals[-1]
    assert result.train_loss == losses[-1]
    assert (result.batch_size, result.grad_accum) == (4, 1)
    assert [e["kind"] for e in result.events] == ["start", "model", "completed"]
    assert "unsloth" not in sys.modules


@pytest.mark.slow
def test_sink_receives_training_and_resource_metrics(trained):
    _, sink, _ = trained
    steps = [s for s, _ in sink.train_logs()]
    assert steps == list(range(1, 25))
    for _, metrics in sink.train_logs():
        assert {"loss", "learning_rate", "grad_norm", "epoch", "tokens_per_second", "num_tokens",
                "cpu_percent", "rss_mb", "ram_percent"} <= set(metrics)
        assert metrics["tokens_per_second"] > 0 and metrics["rss_mb"] > 0
        assert all(isinstance(v, float) for v in metrics.values())
    assert not any(k.startswith("gpu_") for _, m in sink.logs for k in m)  # only on CUDA


@pytest.mark.slow
def test_only_lora_is_trained_and_every_lora_tensor_changed(trained, tiny):
    result, _, _ = trained
    cfg = resolve_for_hardware(load_preset("tiny"), **CPU)
    initial, _ = build_hf_model(cfg, tiny)  # the same seeded initialisation the run started from
    trainable = {n: p.detach().clone() for n, p in initial.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(trainable) == 2 * 2 * 7  # A and B, 2 layers, 7 projections
    saved = load_file(result.adapter_dir / "adapter_model.safetensors")
    assert set(saved) == {n.replace(".default", "") for n in trainable}
    for name, before in trainable.items():
        assert not torch.equal(saved[name.replace(".default", "")], before), f"{name} did not change"


@pytest.mark.slow
def test_artifacts_tensorboard_and_adapter(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, _, out = trained
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    scalars = EventAccumulator(str(events[0].parent)).Reload().Tags()["scalars"]
    assert {"train/loss", "train/learning_rate", "eval/loss"} <= set(scalars)
    adapter = result.adapter_dir
    assert adapter == out / "adapter" and not (out / "adapter.partial").exists()
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json",
            "doctune_train_config.json"} <= {p.name for p in adapter.iterdir()}
    record = json.loads((adapter / "doctune_train_config.json").read_text())
    assert record["train_config"]["preset"] == "tiny" and record["train_config"]["model"]["dtype"] == "fp32"
    assert record["global_step"] == 24 and (record["train_rows"], record["val_rows"]) == (32, 8)
    assert result.last_checkpoint == out / "checkpoints" / "checkpoint-24"
    assert len(list((out / "checkpoints").glob("checkpoint-*"))) == 2  # save_total_limit


@pytest.mark.slow
def test_merged_model_equals_base_plus_adapter(trained, tiny, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result, _, _ = trained
    merged_dir = merge_to_16bit(result.adapter_dir, None, tmp_path / "merged", dtype="fp32")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), result.adapter_dir)
    ids = torch.tensor([[5, 17, 301, 42, 7]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, with_adapter(ids).logits, atol=1e-4)
    assert merge_to_16bit(result.adapter_dir, tiny, tmp_path / "bf16").joinpath("model.safetensors").is_file()


# ---- continuing an adapter -------------------------------------------------------------------------

@pytest.mark.slow
def test_a_continued_run_starts_from_the_parent_adapter(trained, tiny, rows, tmp_path):
    parent, fresh_sink, _ = trained
    cfg = resolve_for_hardware(load_preset("tiny"), **CPU)
    model, _ = build_hf_model(cfg, tiny)
    load_adapter_weights(model, parent.adapter_dir)
    saved = load_file(parent.adapter_dir / "adapter_model.safetensors")
    loaded = {n.replace(".default", ""): p for n, p in model.named_parameters() if p.requires_grad}
    assert set(loaded) == set(saved) and all(torch.equal(loaded[n], saved[n]) for n in saved)

    cfg = load_preset("tiny")
    cfg.training.max_steps = 2
    sink = RecordingSink()
    continued = train_adapter(cfg, *rows, tmp_path, sink=sink, base_model_path=tiny, init_adapter=parent.adapter_dir)
    assert continued.status == "completed" and continued.global_step == 2
    # the same seed and data: the fresh run's first batch is this one's, and the parent has learned it
    first, fresh_first = sink.train_logs()[0][1]["loss"], fresh_sink.train_logs()[0][1]["loss"]
    assert first < fresh_first - 1.0, (first, fresh_first)
    assert [e["kind"] for e in continued.events] == ["start", "init_adapter", "model", "completed"]
    record = json.loads((continued.adapter_dir / "doctune_train_config.json").read_text())
    assert record["init_adapter"] == str(parent.adapter_dir)


@pytest.mark.slow
def test_an_adapter_of_another_lora_shape_is_refused(trained, tiny):
    cfg = resolve_for_hardware(load_preset("tiny"), **CPU)
    cfg.lora.target_modules = ["q_proj"]
    model, _ = build_hf_model(cfg, tiny)
    with pytest.raises(ValueError, match="does not fit this model's LoRA"):
        load_adapter_weights(model, trained[0].adapter_dir)


# ---- cancel, resume, out of memory -----------------------------------------------------------------

@pytest.mark.slow
def test_cancel_saves_a_checkpoint_and_resume_continues_from_it(tmp_path, tiny, rows, trained):
    stop = threading.Event()
    first = RecordingSink(stop, stop_at=3)
    cancelled = train_adapter(load_preset("tiny"), *rows, tmp_path, sink=first, stop=stop, base_model_path=tiny)
    assert cancelled.status == "cancelled" and cancelled.global_step == 3
    assert cancelled.last_checkpoint == tmp_path / "checkpoints" / "checkpoint-3"
    assert cancelled.adapter_dir is None and not (tmp_path / "adapter").exists()
    assert cancelled.events[-1]["kind"] == "cancelled"

    second = RecordingSink()
    resumed = train_adapter(load_preset("tiny"), *rows, tmp_path, sink=second, resume=True, base_model_path=tiny)
    assert resumed.status == "completed" and resumed.global_step == 24
    assert second.train_logs()[0][0] == 4  # the first step after the checkpoint's
    assert ("resume", {"checkpoint": str(cancelled.last_checkpoint)}) in second.events
    # the trainer restores optimizer, scheduler, RNG and data position: the same run as without the cancel
    uninterrupted = {s: m["loss"] for s, m in trained[1].train_logs()}
    assert second.train_logs()[-1][1]["loss"] == pytest.approx(uninterrupted[24], rel=1e-3)
    # tokens seen go on from the checkpoint's count, to the uninterrupted run's total: no fold-back at the resume
    tokens = [m["num_tokens"] for _, m in first.train_logs() + second.train_logs()]
    assert all(b > a for a, b in zip(tokens, tokens[1:])), tokens
    assert tokens[-1] == trained[1].train_logs()[-1][1]["num_tokens"]
    assert ("steps", {"max_steps": 24, "from_step": 3}) in second.events  # the page's "step x of N"


@pytest.mark.slow
def test_resume_without_a_checkpoint_starts_fresh_and_says_so(tmp_path, tiny, rows):
    cfg = load_preset("tiny")
    cfg = replace(cfg, training=replace(cfg.training, max_steps=2))
    sink = RecordingSink()
    result = train_adapter(cfg, *rows, tmp_path, sink=sink, resume=True, base_model_path=tiny)
    assert result.status == "completed" and result.global_step == 2
    assert [k for k, _ in sink.events].count("resume_without_checkpoint") == 1


class OutOfMemoryOnce(RecordingSink):
    """Raises CUDA's out-of-memory error from the log of step `at`, once: as a step on a too-full GPU would."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.raised = at, False

    def log(self, step, metrics):
        super().log(step, metrics)
        if step == self.at and not self.raised:
            self.raised = True
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.slow
def test_out_of_memory_halves_the_batch_and_resumes_from_the_checkpoint(tmp_path, tiny, rows):
    sink = OutOfMemoryOnce(at=6)  # after checkpoint-5
    result = train_adapter(load_preset("tiny"), *rows, tmp_path, sink=sink, base_model_path=tiny)
    assert result.status == "completed" and result.global_step == 24
    assert (result.batch_size, result.grad_accum) == (2, 2)  # same effective batch of 4
    oom = next(d for k, d in sink.events if k == "oom")
    assert (oom["previous_batch_size"], oom["batch_size"], oom["grad_accum"]) == (4, 2, 2)
    resumed = next(d for k, d in sink.events if k == "resume")
    assert resumed["checkpoint"].endswith("checkpoint-5")
    steps = [s for s, _ in sink.train_logs()]
    assert steps[steps.index(6) + 1] == 6  # step 6 again, from checkpoint-5, at half the batch


def test_oom_backoff_keeps_the_effective_batch():
    calls, reported = [], []

    def run_once(batch, accum, resume):
        calls.append((batch, accum, resume))
        if len(calls) < 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return "trained"

    assert run_with_oom_backoff(run_once, 8, 2, resume=False, on_oom=reported.append) == ("trained", 2, 8)
    assert calls == [(8, 2, False), (4, 4, True), (2, 8, True)]
    assert [(r["batch_size"], r["grad_accum"]) for r in reported] == [(4, 4), (2, 8)]


def test_oom_backoff_rounds_odd_batches_up_in_accumulation():
    def run_once(batch, accum, resume):
        if batch == 3:
            raise RuntimeError("CUDA error: out of memory")  # raised as a plain RuntimeError by some kernels
        return batch * accum

    assert run_with_oom_backoff(run_once, 3, 4, resume=False) == (12, 1, 12)


def test_oom_backoff_gives_up_at_batch_one_and_passes_other_errors_through():
    def always_oom(batch, accum, resume):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    with pytest.raises(RuntimeError, match="at per-device batch 1") as err:
        run_with_oom_backoff(always_oom, 2, 1, resume=False)
    assert isinstance(err.value.__cause__, torch.cuda.OutOfMemoryError)

    def broken(batch, accum, resume):
        raise KeyError("labels")

    with pytest.raises(KeyError):
        run_with_oom_backoff(broken, 4, 1, resume=False)


def test_oom_backoff_frees_memory_between_attempts_only():
    freed, calls = [], []

    def run_once(batch, accum, resume):
        calls.append(batch)
        if len(calls) < 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return "trained"

    run_with_oom_backoff(run_once, 4, 1, resume=False, free_memory=lambda: freed.append(len(calls)))
    assert freed == [1, 2]  # after each failed attempt, before the next one; not after the one that succeeded


def test_unsloths_offloaded_checkpointing_buffers_are_reset_before_a_retry(monkeypatch):
    """unsloth resets them only after a train() that succeeded; the retry after an out-of-memory must too."""
    resets = []
    zoo = types.ModuleType("unsloth_zoo")
    checkpointing = types.ModuleType("unsloth_zoo.gradient_checkpointing")
    checkpointing.reset_unsloth_gradient_checkpointing_buffers = lambda: resets.append("reset")
    monkeypatch.setitem(sys.modules, "unsloth_zoo", zoo)
    monkeypatch.setitem(sys.modules, "unsloth_zoo.gradient_checkpointing", checkpointing)
    attempts = []

    def run_once(batch, accum, resume):
        attempts.append(len(resets))
        if batch == 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return "trained"

    assert run_with_oom_backoff(run_once, 4, 1, resume=False, free_memory=free_unsloth_memory) == ("trained", 2, 2)
    assert attempts == [0, 1]


def test_unsloth_runs_offline_and_compiles_into_the_run_folder(tmp_path):
    env = unsloth_environment(tmp_path / "run")
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == env["HF_DATASETS_OFFLINE"] == "1"
    assert Path(env["UNSLOTH_COMPILE_LOCATION"]) == (tmp_path / "run" / "unsloth_compiled_cache").resolve()


def test_the_hf_engine_keeps_the_16bit_weights_of_a_4bit_model(monkeypatch, tiny):
    """No fp32 upcast of the weights bitsandbytes leaves in 16-bit (embedding, norms, the tied LM head), which
    peft's prepare_model_for_kbit_training did. The 4-bit load is faked: a bf16 model reporting 4-bit."""
    from transformers import AutoModelForCausalLM

    load = AutoModelForCausalLM.from_pretrained
    seen = {}

    def fake_4bit_load(path, **kwargs):
        seen.update(kwargs)
        model = load(path, dtype=kwargs["dtype"], local_files_only=True)
        model.is_loaded_in_4bit = True
        return model

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fake_4bit_load)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    cfg = load_preset("tiny")
    cfg = replace(cfg, model=replace(cfg.model, dtype="bf16", load_in_4bit=True))
    model, _ = build_hf_model(cfg, tiny)
    assert seen["quantization_config"].load_in_4bit and seen["dtype"] == torch.bfloat16
    base = {n: p for n, p in model.named_parameters() if "lora_" not in n}
    assert base and all(p.dtype == torch.bfloat16 and not p.requires_grad for p in base.values())
    assert all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)


# ---- bad input, refused before anything is written -------------------------------------------------

def test_no_train_rows(tmp_path, rows):
    with pytest.raises(ValueError, match="dataset version v3 has no train samples"):
        train_adapter(load_preset("tiny"), [], rows[1], tmp_path / "run", sink=RecordingSink(),
                      dataset_version="v3")
    assert not (tmp_path / "run").exists()


def test_sequence_longer_than_the_model_takes(tmp_path, tiny, rows):
    cfg = load_preset("tiny")
    cfg = replace(cfg, model=replace(cfg.model, max_seq_length=4096))
    with pytest.raises(ConfigError) as err:
        train_adapter(cfg, *rows, tmp_path / "run", sink=RecordingSink(), base_model_path=tiny)
    assert "4096" in str(err.value) and "1024" in str(err.value)
    assert not (tmp_path / "run").exists()


def test_unknown_model(tmp_path, rows):
    cfg = load_preset("tiny")
    for name in ("no-such-org/no-such-model", str(tmp_path / "missing-folder")):
        bad = replace(cfg, model=replace(cfg.model, name_or_path=name))
        with pytest.raises(ConfigError) as err:
            train_adapter(bad, *rows, tmp_path / "run", sink=RecordingSink())
        assert name in str(err.value) and "hf download" in str(err.value)
    assert not (tmp_path / "run").exists()


@needs_no_gpu
def test_gpu_preset_without_a_gpu(tmp_path, rows):
    with pytest.raises(ConfigError, match="--preset smol"):
        train_adapter(load_preset("seed"), *rows, tmp_path / "run", sink=RecordingSink())
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_finished_run_is_not_overwritten_without_resume(trained, tiny, rows):
    _, _, out = trained
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train_adapter(load_preset("tiny"), *rows, out, sink=RecordingSink(), base_model_path=tiny)


def test_importing_the_trainer_imports_neither_unsloth_nor_transformers():
    """unsloth patches transformers and TRL on import, and wants to come first: both are loaded lazily."""
    import subprocess

    code = "import sys, backend.train; print(sorted(m for m in ('unsloth', 'transformers', 'trl') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_checkpoint_cut_off_mid_save_is_skipped(tmp_path):
    from backend.train import _last_checkpoint

    for step, complete in ((4, True), (8, True), (12, False)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "adapter_model.safetensors").write_bytes(b"x")
        if complete:
            (d / "trainer_state.json").write_text('{"global_step": %d}' % step)
    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text('{"global_st')  # torn write
    assert _last_checkpoint(tmp_path) == tmp_path / "checkpoint-8"
    assert _last_checkpoint(tmp_path / "none") is None


def test_data_settings_choose_whole_chunks_by_task_and_length_and_add_replay():
    from backend.train import replay_rows, select_training_rows
    from backend.train_config import DataSettings

    rows = [{"sample_id": f"s{i:02d}", "chunk_id": f"c{i // 3}", "task": "facts" if i % 3 else "qa",
             "instruction": "Q " + "word " * (i if i < 30 else 300), "input": "", "output": "A.", "messages": None}
            for i in range(36)]
    assert select_training_rows(rows, DataSettings(), 1) == rows
    facts = select_training_rows(rows, DataSettings(tasks=["facts"]), 1)
    assert facts and all(r["task"] == "facts" for r in facts)
    short = select_training_rows(rows, DataSettings(max_sample_tokens=40), 1)
    assert [r["sample_id"] for r in short] == [f"s{i:02d}" for i in range(30)]
    capped = select_training_rows(rows, DataSettings(max_samples=10), 7)
    chunks = {r["chunk_id"] for r in capped}
    assert len(capped) <= 10 and all(sum(r["chunk_id"] == c for r in capped) == 3 for c in chunks)  # whole chunks
    assert capped == select_training_rows(rows, DataSettings(max_samples=10), 7)  # the same every time
    assert capped != select_training_rows(rows, DataSettings(max_samples=10), 8)
    replay = replay_rows(0.25, 30, seed=3)
    assert len(replay) == 10 and all(r["task"] == "replay" and r["output"] for r in replay)
    assert len({r["sample_id"] for r in replay_rows(0.9, 300, seed=3)}) == 2700  # cycles, with distinct ids
    assert replay_rows(0.0, 30, seed=3) == []


def test_the_replay_set_is_apart_from_the_retention_set():
    from backend.curate import jaccard, shingles
    from backend.evaluate import load_retention_set
    from backend.train import REPLAY_SET

    replay = [json.loads(line) for line in REPLAY_SET.read_text().splitlines() if line.strip()]
    retention = load_retention_set()
    text = lambda r: " ".join([r["instruction"], r.get("input", ""), r["output"]])
    assert len(replay) >= 100 and len({r["id"] for r in replay}) == len(replay)
    worst = max(jaccard(shingles(text(a)), shingles(text(b))) for a in replay for b in retention)
    assert worst < 0.3
