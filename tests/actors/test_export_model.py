"""`doctune export-model`: a tiny run trained, evaluated, exported; the bundle checked against the evaluation."""

import json

import pytest

from backend.eval_config import EvalConfig
from test_eval_run import fixed_answer_dataset
from test_train_run import tiny
from tests.backend.test_gguf import fake_llama_cpp


@pytest.mark.slow
def test_export_model_writes_a_bundle_that_answers_like_the_evaluation(client, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from actors.cli import main
    from actors.merge_run import latest_evaluation

    fixed_answer_dataset(client)
    trained = client.train("e", tiny(max_steps=30, learning_rate=1e-2, eval_steps=100, save_steps=100))
    assert trained["status"] == "completed", trained.get("error")
    run = trained["run_id"]
    assert "no completed evaluation" in latest_evaluation(client, run)["skipped"]
    evaluated = client.evaluate(run, EvalConfig(limit=4, limits={"retention": 3}, max_new_tokens=24, batch_size=3))
    assert evaluated["status"] == "completed", evaluated.get("error")

    out = tmp_path / "bundle"
    # fp32: the precision the evaluation ran in on this CPU (bf16 rounding may flip a near-tie greedy choice);
    # GGUF through a stand-in converter (llama.cpp's own knows no tokenizer like tiny's: see test_gguf.py)
    llama_cpp = fake_llama_cpp(tmp_path / "llama.cpp")
    assert main(["--home", str(client.home), "export-model", run, "--out", str(out), "--dtype", "fp32", "--gguf",
                 "--llama-cpp", str(llama_cpp)]) == 0
    printed = capsys.readouterr().out
    assert f"verify: identical: all 11 answers of evaluation {evaluated['run_id']}" in printed, printed
    gguf = out.resolve() / "gguf" / "model-q8_0.gguf"
    assert f"gguf: {gguf}" in printed and json.loads((llama_cpp / "calls.jsonl").read_text())[0] == str(
        out.resolve() / "merged")

    # the adapter alone, the merged 16-bit model (no LoRA left in it), the README, the Modelfile, the manifest
    adapter = client.home / "runs" / run / "adapter"
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == \
        (adapter / "adapter_model.safetensors").read_bytes()
    assert {"adapter_config.json", "tokenizer_config.json"} <= {p.name for p in (out / "adapter").iterdir()}
    merged = AutoModelForCausalLM.from_pretrained(out / "merged", local_files_only=True)
    assert str(merged.dtype) == "torch.float32" and not any("lora" in n for n, _ in merged.named_parameters())
    manifest = json.loads((out / "manifest.json").read_text())
    record = json.loads((adapter / "doctune_train_config.json").read_text())
    assert manifest["run"] == run and manifest["dataset"] == client.store.run(run)["config"]["dataset"]
    assert manifest["base"]["path"] == record["base_model_path"] and manifest["base"]["name"] == "tiny"
    assert manifest["verify"]["passed"] and manifest["verify"]["checked"] == 11
    from backend.base_models import sha256_file

    assert manifest["files"]["merged/model.safetensors"]["sha256"] == sha256_file(out / "merged" / "model.safetensors")
    assert manifest["files"]["adapter/adapter_model.safetensors"]["sha256"] == sha256_file(
        adapter / "adapter_model.safetensors")

    # tiny is a Qwen2: Ollama takes no safetensors adapter for it, so the Modelfile imports merged/, with ChatML
    modelfile = (out / "Modelfile").read_text()
    assert "FROM ./merged" in modelfile and "ADAPTER" not in modelfile.replace("adapters only", "")
    assert 'SYSTEM """You are a helpful assistant."""' in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    readme = (out / "README.md").read_text()
    name = f"doctune-{run}"
    base, adapter_out, merged_out = record["base_model_path"], out.resolve() / "adapter", out.resolve() / "merged"
    assert (f"vllm serve {base} --tokenizer {adapter_out} --enable-lora --lora-modules {name}={adapter_out}"
            in readme)
    assert f"vllm serve {merged_out} --served-model-name {name}" in readme
    assert f"cd {out.resolve()} && ollama create {name} -f Modelfile" in readme
    assert f"llama-server -m {gguf}" in readme and "gguf/model-q8_0.gguf" in manifest["files"]

    # a chat template lost on the way (here: changed in the adapter the bundle is built from) answers otherwise
    template = adapter / "chat_template.jinja"
    template.write_text(template.read_text().replace("You are a helpful assistant.", "You are a pirate."))
    assert main(["--home", str(client.home), "export-model", run, "--out", str(out), "--dtype", "fp32"]) == 1
    assert not (out / "gguf").exists() and "gguf/" not in (out / "README.md").read_text().split("## GGUF")[1]
    printed = capsys.readouterr().out
    assert "verify: DIFFERENT" in printed, printed
    export = client.follow_up_runs(run)[0]  # the newest: this export
    verify = export["summary"]["verify"]
    assert not verify["passed"] and verify["eval_run"] == evaluated["run_id"]
    first = verify["differences"][0]
    assert f"{first['eval_set']} sample {first['sample_id']}, prompt {first['prompt'][:80]!r}" in printed
    assert not json.loads((out / "manifest.json").read_text())["verify"]["passed"]


def test_bad_requests_exit_2_before_any_model_is_loaded(client, tmp_path, capsys, monkeypatch):
    from actors.cli import main

    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.unsloth/llama.cpp
    monkeypatch.delenv("UNSLOTH_LLAMA_CPP_PATH", raising=False)
    client.store.upsert_project("e", "/nowhere", None)
    client.store.create_run("train-x", "train", "e", {})
    client.store.finish_run("train-x", "completed", {"adapter": str(tmp_path / "adapter")})
    home = ["--home", str(client.home), "export-model"]

    assert main(home + ["train-nope", "--out", str(tmp_path / "b")]) == 2
    assert "run 'train-nope' has no adapter" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(home + ["train-x", "--out", str(tmp_path / "file")]) == 2
    assert "is a file; name a folder" in capsys.readouterr().err
    assert main(home + ["train-x", "--out", str(tmp_path / "b"), "--gguf"]) == 2
    err = capsys.readouterr().err
    assert "convert_hf_to_gguf.py, not found in" in err and str(tmp_path / ".unsloth" / "llama.cpp") in err
    assert "git clone https://github.com/ggml-org/llama.cpp" in err
    assert [r["kind"] for r in client.runs()] == ["train"]  # no run was started for any of them
