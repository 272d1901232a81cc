"""The model bundle `doctune export-model` writes: what teams need to run the tuned model in vLLM or Ollama.

    DIR/merged/      base + adapter merged, 16-bit (transformers folder: vLLM, Ollama, llama.cpp's converter)
    DIR/adapter/     the LoRA adapter alone (adapter_config.json, adapter_model.safetensors, tokenizer files)
    DIR/gguf/        with --gguf: llama.cpp's conversion of merged/ (`backend.gguf`)
    DIR/README.md    the exact `vllm serve` and `ollama create` commands for these paths
    DIR/Modelfile    Ollama: FROM the base + ADAPTER adapter/ where Ollama takes adapters, else FROM merged/
    DIR/manifest.json run, base, dataset version, every file with its sha256 — written last, so its presence
                     means the bundle is whole

Ollama imports safetensors adapters only for Llama, Mistral and Gemma models (docs.ollama.com/import, "Importing
a fine tuned adapter from Safetensors weights"); for the others (Qwen2 among them) the Modelfile imports the
merged folder instead. Its TEMPLATE is written only when it renders the same text as the model's own chat
template (checked here on a sample conversation), so Ollama sees the prompts evaluation saw. Pure file writing,
except `replay_evaluation`, which loads the merged model (torch is imported there).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from backend.base_models import sha256_file

OLLAMA_ADAPTER_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM", "GemmaForCausalLM",
                                "Gemma2ForCausalLM")
"""Architectures whose safetensors LoRA adapters `ollama create` imports (docs.ollama.com/import)."""
CHATML_TEMPLATE = ('{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
                   '{{- range .Messages }}{{- if ne .Role "system" }}<|im_start|>{{ .Role }}\n{{ .Content }}'
                   '<|im_end|>\n{{ end }}{{ end }}<|im_start|>assistant\n')
"""ChatML (Qwen, SmolLM2, the tiny model) as an Ollama Go template; Ollama gathers system messages into .System,
so the loop leaves them out."""
CHATML_STOPS = ("<|im_end|>", "<|im_start|>")
SAMPLE_CONVERSATION = [{"role": "user", "content": "How do I open the berth window?"},
                       {"role": "assistant", "content": "Call berth.open()."},
                       {"role": "user", "content": "And close it?"}]


def copy_adapter(adapter_dir: Path, out: Path) -> Path:
    """The training run's adapter folder, copied whole (weights, config, tokenizer, chat template, run record)."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(adapter_dir, out)
    return out


def chatml_system(rendered: str) -> str | None:
    """The default system prompt a ChatML template puts before a conversation that has none, or None when the
    rendered sample is not ChatML. `rendered`: the template applied to SAMPLE_CONVERSATION with its generation
    prompt."""
    tail = render_chatml("", SAMPLE_CONVERSATION)
    if not rendered.endswith(tail):
        return None
    head = rendered[:-len(tail)]
    if head == "":
        return ""
    if head.startswith("<|im_start|>system\n") and head.endswith("<|im_end|>\n") and head.count("<|im_start|>") == 1:
        return head[len("<|im_start|>system\n"):-len("<|im_end|>\n")]
    return None


def ollama_modelfile(architecture: str, base: Path, rendered_sample: str) -> tuple[str, bool]:
    """The Modelfile text (paths relative to the bundle) and whether it uses the adapter (else merged/).

    Args:
        architecture: the merged model's `config.json` architecture (LlamaForCausalLM, Qwen2ForCausalLM, ...).
        base: the base model's folder (the FROM of the adapter route).
        rendered_sample: the model's chat template applied to SAMPLE_CONVERSATION with the generation prompt.
    """
    adapter = architecture in OLLAMA_ADAPTER_ARCHITECTURES
    lines = ["# Ollama: `ollama create NAME -f Modelfile` in this folder, then `ollama run NAME`."]
    if adapter:
        lines += [f"# {architecture}: Ollama imports this safetensors LoRA adapter onto the same base weights.",
                  "# FROM may name the same base in Ollama's library instead; other weights answer differently.",
                  f"FROM {base}", "ADAPTER ./adapter"]
    else:
        lines += [f"# Ollama imports safetensors adapters only for {', '.join(OLLAMA_ADAPTER_ARCHITECTURES)}; "
                  f"this is {architecture},",
                  "# so it imports the merged model (or use gguf/ from `doctune export-model --gguf`).",
                  "FROM ./merged"]
    system = chatml_system(rendered_sample)
    if system is None:
        lines += ["# The chat template is not ChatML: Ollama derives TEMPLATE from tokenizer.chat_template itself."]
    else:
        lines += ["# The model's own chat template (ChatML), checked to render the prompts evaluation used.",
                  f'TEMPLATE """{CHATML_TEMPLATE}"""']
        if system:
            lines.append(f'SYSTEM """{system}"""')
        lines += [f'PARAMETER stop "{s}"' for s in CHATML_STOPS]
    lines += ["# greedy, as evaluated (a Modelfile comment must have a line of its own)", "PARAMETER temperature 0"]
    return "\n".join(lines) + "\n", adapter


def render_chatml(system: str, messages: list[dict]) -> str:
    """What CHATML_TEMPLATE renders for `messages` (SYSTEM `system`): the check that it matches the model's."""
    head = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return head + body + "<|im_start|>assistant\n"


def readme(*, run: str, name: str, base: Path, base_name: str, out: Path, dtype: str, lora_rank: int,
           ollama_adapter: bool, architecture: str, gguf: list[Path]) -> str:
    """The bundle's README: what is in it and the commands that serve it, with this bundle's absolute paths."""
    adapter, merged = out / "adapter", out / "merged"
    rank = f" --max-lora-rank {lora_rank}" if lora_rank > 16 else ""  # vLLM's default cap is 16
    ollama = (f"`Modelfile` imports the adapter onto the base ({architecture}: Ollama takes safetensors adapters "
              "for Llama, Mistral and Gemma models)." if ollama_adapter else
              f"`Modelfile` imports the merged model: Ollama takes safetensors adapters only for Llama, Mistral and "
              f"Gemma models, and this base is {architecture}.")
    gguf_text = ("\n".join(f"- `{f}`" for f in gguf) + "\n\nllama.cpp: `llama-server -m " + str(gguf[-1]) +
                 "`; Ollama: a Modelfile with `FROM " + str(gguf[-1]) + "`.\n") if gguf else \
        "Not written; `doctune export-model RUN --out DIR --gguf` converts merged/ with llama.cpp.\n"
    return f"""# {name}: DocTune training run {run}

Base model: {base_name} (`{base}`). `manifest.json` lists every file's sha256, and under `verify` whether the
merged model answered the prompts of the run's latest evaluation exactly as evaluated (greedy).

| path | what |
|---|---|
| `merged/` | the base with the adapter merged in ({dtype}, a transformers folder) |
| `adapter/` | the LoRA adapter alone, with the tokenizer and chat template it was trained with |
| `Modelfile` | Ollama |
| `manifest.json` | run, base, dataset version, the verification, files and sha256s |

## vLLM: the base with the adapter (several adapters can share one base)

```sh
vllm serve {base} --tokenizer {adapter} --enable-lora --lora-modules {name}={adapter}{rank}
```

`--tokenizer` takes the chat template training used from the adapter folder. Ask for model `{name}`.

## vLLM: the merged model

```sh
vllm serve {merged} --served-model-name {name}
```

Then, greedy as evaluated:

```sh
curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
  -d '{{"model": "{name}", "temperature": 0, "messages": [{{"role": "user", "content": "..."}}]}}'
```

## Ollama

```sh
cd {out} && ollama create {name} -f Modelfile && ollama run {name}
```

{ollama}

## GGUF

{gguf_text}"""


def write_manifest(out: Path, record: dict) -> Path:
    """manifest.json: `record` plus every file under `out` (relative path → sha256, size); written last."""
    files = {str(p.relative_to(out)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(out.rglob("*")) if p.is_file() and p.name != "manifest.json"}
    path = out / "manifest.json"
    path.write_text(json.dumps({**record, "files": files}, indent=2))
    return path


def replay_evaluation(merged_dir: Path, rows: list[dict], *, max_new_tokens: int, batch_size: int) -> list[str]:
    """The merged model's greedy answers to stored evaluation rows, generated as the evaluation did: one
    `generate` call per set, its rows in the evaluation's order (by sample id), the same batch size and token
    limit, the tokenizer and chat template of `merged_dir`. CPU fp32, like the evaluation on a CPU.

    Returns the answers in the rows' order.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backend.generate import generate

    model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(merged_dir, local_files_only=True)
    answers: list[str | None] = [None] * len(rows)
    sets: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        sets.setdefault(row["eval_set"], []).append(i)
    for indices in sets.values():
        indices.sort(key=lambda i: rows[i]["sample_id"])
        out = generate(model, tokenizer, [rows[i]["prompt"] for i in indices], adapter=False,
                       batch_size=batch_size, max_new_tokens=max_new_tokens)
        for i, answer in zip(indices, out, strict=True):
            answers[i] = answer["text"]
    return answers  # type: ignore[return-value]
