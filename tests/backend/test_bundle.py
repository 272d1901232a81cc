"""The export bundle's texts: the Ollama Modelfile follows the architecture and the model's own chat template, the
README names this bundle's paths, the manifest hashes every file."""

import json

import pytest

from backend.base_models import sha256_file
from backend.bundle import SAMPLE_CONVERSATION, chatml_system, ollama_modelfile, readme, render_chatml, write_manifest
from backend.tiny_model import ensure_tiny_model

SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
LLAMA3 = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHow do I open the berth window?<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\n")


@pytest.fixture(scope="module")
def tiny_rendered(tmp_path_factory) -> str:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_model(tmp_path_factory.mktemp("models")))
    return tokenizer.apply_chat_template(SAMPLE_CONVERSATION, tokenize=False, add_generation_prompt=True)


@pytest.mark.slow  # builds the tiny model's tokenizer
def test_the_ollama_template_renders_what_the_models_own_template_renders(tiny_rendered):
    system = chatml_system(tiny_rendered)
    assert system == "You are a helpful assistant."  # Qwen's default system turn, which the template adds
    assert render_chatml(system, SAMPLE_CONVERSATION) == tiny_rendered
    assert chatml_system(LLAMA3) is None and chatml_system(render_chatml("", SAMPLE_CONVERSATION)) == ""


@pytest.mark.slow
def test_qwen2_imports_the_merged_model_with_its_chatml_template(tiny_rendered, tmp_path):
    text, adapter = ollama_modelfile("Qwen2ForCausalLM", tmp_path / "base", tiny_rendered)
    lines = text.splitlines()
    assert not adapter and "FROM ./merged" in lines and not any(line.startswith("ADAPTER") for line in lines)
    assert "Qwen2ForCausalLM" in text and "Llama" in text  # says why: which architectures Ollama takes adapters for
    assert 'SYSTEM """You are a helpful assistant."""' in lines
    assert 'PARAMETER stop "<|im_end|>"' in lines and any(line.startswith('TEMPLATE """') for line in lines)
    assert "PARAMETER temperature 0" in lines  # Ollama takes no comment after a value


def test_llama_takes_the_adapter_on_its_base_and_an_unknown_template_is_left_to_ollama(tmp_path):
    smol = render_chatml(SMOL_SYSTEM, SAMPLE_CONVERSATION)
    text, adapter = ollama_modelfile("LlamaForCausalLM", tmp_path / "base", smol)
    lines = text.splitlines()
    assert adapter and f"FROM {tmp_path / 'base'}" in lines and "ADAPTER ./adapter" in lines
    assert f'SYSTEM """{SMOL_SYSTEM}"""' in lines
    text, _ = ollama_modelfile("LlamaForCausalLM", tmp_path / "base", LLAMA3)
    assert "TEMPLATE" not in text.replace("derives TEMPLATE", "") and "PARAMETER stop" not in text


def test_the_readme_names_this_bundles_paths_and_a_rank_above_vllms_default(tmp_path):
    text = readme(run="train-1", name="doctune-train-1", base=tmp_path / "base", base_name="smol", out=tmp_path,
                  dtype="bf16", lora_rank=32, ollama_adapter=True, architecture="LlamaForCausalLM",
                  gguf=[tmp_path / "m.gguf"])
    assert (f"vllm serve {tmp_path / 'base'} --tokenizer {tmp_path / 'adapter'} --enable-lora --lora-modules "
            f"doctune-train-1={tmp_path / 'adapter'} --max-lora-rank 32") in text
    assert f"vllm serve {tmp_path / 'merged'} --served-model-name doctune-train-1" in text
    assert f"llama-server -m {tmp_path / 'm.gguf'}" in text and "merged in (bf16" in text
    small = readme(run="r", name="n", base=tmp_path, base_name="tiny", out=tmp_path, dtype="fp32", lora_rank=8,
                   ollama_adapter=False, architecture="Qwen2ForCausalLM", gguf=[])
    assert "--max-lora-rank" not in small and "--gguf" in small and "this base is Qwen2ForCausalLM" in small


def test_the_manifest_lists_every_file_with_its_sha256(tmp_path):
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "README.md").write_text("hi")
    (tmp_path / "manifest.json").write_text("{}")  # an older one is replaced, not listed
    manifest = json.loads(write_manifest(tmp_path, {"run": "r"}).read_text())
    assert manifest["run"] == "r" and sorted(manifest["files"]) == ["README.md", "merged/model.safetensors"]
    assert manifest["files"]["merged/model.safetensors"] == {
        "sha256": sha256_file(tmp_path / "merged" / "model.safetensors"), "bytes": 7}
