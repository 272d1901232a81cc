"""GGUF through llama.cpp's converter: where llama.cpp is looked for, what runs, and what is said without it."""

import json
import os
import stat
import sys
import textwrap

import pytest

from backend.gguf import LlamaCppMissing, convert_to_gguf, find_llama_cpp

# a stand-in for llama.cpp's convert_hf_to_gguf.py: records its argv, writes the --outfile it was given
FAKE_CONVERTER = textwrap.dedent("""
    import json, pathlib, sys
    here = pathlib.Path(__file__).parent
    (here / "calls.jsonl").open("a").write(json.dumps(sys.argv[1:]) + "\\n")
    out = sys.argv[sys.argv.index("--outfile") + 1]
    pathlib.Path(out).write_bytes(b"GGUF" + sys.argv[sys.argv.index("--outtype") + 1].encode())
""")
FAKE_QUANTIZE = textwrap.dedent(f"""\
    #!{sys.executable}
    import json, pathlib, shutil, sys
    (pathlib.Path(__file__).parent / "calls.jsonl").open("a").write(json.dumps(sys.argv) + "\\n")
    shutil.copy(sys.argv[1], sys.argv[2])
""")


def fake_llama_cpp(root, quantize=False):
    root.mkdir(parents=True)
    (root / "convert_hf_to_gguf.py").write_text(FAKE_CONVERTER)
    if quantize:
        binary = root / "llama-quantize"
        binary.write_text(FAKE_QUANTIZE)
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return root


def calls(root):
    return [json.loads(line) for line in (root / "calls.jsonl").read_text().splitlines()]


def test_without_llama_cpp_the_message_names_the_places_and_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("UNSLOTH_LLAMA_CPP_PATH", str(tmp_path / "nowhere"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(LlamaCppMissing) as err:
        convert_to_gguf(tmp_path / "merged", tmp_path / "gguf")
    message = str(err.value)
    assert str(tmp_path / "nowhere") in message and str(tmp_path / ".unsloth" / "llama.cpp") in message
    assert "git clone https://github.com/ggml-org/llama.cpp ~/.unsloth/llama.cpp" in message
    assert "requirements-convert_hf_to_gguf.txt" in message and "--llama-cpp" in message
    assert not (tmp_path / "gguf").exists()  # nothing started, nothing downloaded or built


def test_the_converter_is_found_flag_first_then_the_environment_then_unsloths_folder(tmp_path, monkeypatch):
    home = fake_llama_cpp(tmp_path / ".unsloth" / "llama.cpp")
    env = fake_llama_cpp(tmp_path / "env")
    flag = fake_llama_cpp(tmp_path / "flag")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("UNSLOTH_LLAMA_CPP_PATH", raising=False)
    assert find_llama_cpp() == home
    monkeypatch.setenv("UNSLOTH_LLAMA_CPP_PATH", str(env))
    assert find_llama_cpp() == env and find_llama_cpp(flag) == flag
    with pytest.raises(LlamaCppMissing, match="flag-typo"):
        find_llama_cpp(tmp_path / "flag-typo")  # a named folder is the only place looked


def test_the_converter_writes_q8_0_itself_and_returns_the_real_file(tmp_path):
    root = fake_llama_cpp(tmp_path / "llama.cpp")
    files = convert_to_gguf(tmp_path / "merged", tmp_path / "gguf", "q8_0", root)
    assert files == [tmp_path / "gguf" / "model-q8_0.gguf"] and files[0].read_bytes() == b"GGUFq8_0"
    assert calls(root) == [[str(tmp_path / "merged"), "--outfile", str(files[0]), "--outtype", "q8_0"]]


def test_other_types_are_quantized_from_f16_by_llama_quantize_or_refused_without_it(tmp_path):
    bare = fake_llama_cpp(tmp_path / "bare")
    with pytest.raises(LlamaCppMissing, match="llama-quantize, not built"):
        convert_to_gguf(tmp_path / "merged", tmp_path / "gguf", "q4_k_m", bare)
    root = fake_llama_cpp(tmp_path / "built", quantize=True)
    files = convert_to_gguf(tmp_path / "merged", tmp_path / "gguf", "q4_k_m", root)
    f16, q4 = tmp_path / "gguf" / "model-f16.gguf", tmp_path / "gguf" / "model-q4_k_m.gguf"
    assert files == [f16, q4] and q4.read_bytes() == b"GGUFf16"
    assert calls(root)[1] == [str(root / "llama-quantize"), str(f16), str(q4), "Q4_K_M"]


def test_a_failing_converter_says_why(tmp_path):
    root = tmp_path / "llama.cpp"
    root.mkdir()
    (root / "convert_hf_to_gguf.py").write_text("raise SystemExit('BPE pre-tokenizer was not recognized')")
    with pytest.raises(RuntimeError, match="convert_hf_to_gguf.py failed .exit 1.: BPE pre-tokenizer"):
        convert_to_gguf(tmp_path / "merged", tmp_path / "gguf", "q8_0", root)


@pytest.mark.slow
def test_llama_cpps_real_converter_writes_a_gguf_of_smollm2(request, tmp_path):
    """Runs where llama.cpp is installed (UNSLOTH_LLAMA_CPP_PATH or ~/.unsloth/llama.cpp, with its converter's
    requirements); SmolLM2 is a Llama model whose tokenizer llama.cpp knows."""
    import gguf

    try:
        find_llama_cpp()
    except LlamaCppMissing as exc:
        pytest.skip(str(exc))
    smol_models = request.getfixturevalue("smol_models")  # converted only where llama.cpp is there to use it
    model = next(p for p in smol_models.iterdir() if (p / "config.json").is_file())
    files = convert_to_gguf(model, tmp_path / "gguf", "q8_0")
    reader = gguf.GGUFReader(files[-1])
    fields = {name: reader.fields[name] for name in ("general.architecture", "tokenizer.chat_template")}
    assert bytes(fields["general.architecture"].parts[-1]).decode() == "llama"
    assert "<|im_start|>" in bytes(fields["tokenizer.chat_template"].parts[-1]).decode()
    assert len(reader.tensors) > 100 and os.path.getsize(files[-1]) > 100_000_000
