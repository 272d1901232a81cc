from pathlib import Path

import pytest

from backend.chunk import FileItem, chunk_files, chunk_sections, chunker_fingerprint
from backend.config import SAMPLE_REPO
from backend.config_base import ConfigError
from backend.ingest_config import ChunkConfig, IngestConfig
from backend.readers import Section, read_sections
from backend.tokens import TokenCounter, token_counter, train_bpe_tokenizer

LONG_MD = "# Manual\n\n" + "\n\n".join(
    f"## Part {i}\n\n" + " ".join(f"Sentence {i}.{j} explains the berth window rule." for j in range(30))
    for i in range(6))


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory) -> Path:
    texts = [p.read_text() for p in SAMPLE_REPO.rglob("*") if p.suffix in {".md", ".py", ".rst"}]
    texts.append(LONG_MD)
    return train_bpe_tokenizer(texts, 600, tmp_path_factory.mktemp("tok") / "tokenizer.json")


def item(path: str, text: str | bytes, kind: str) -> FileItem:
    data = text.encode() if isinstance(text, str) else text
    return FileItem(path, kind, None, data, "sha-" + path, len(data), None)


@pytest.mark.parametrize("max_tokens", [32, 64, 200])
def test_chunks_respect_token_bound_and_line_ranges(max_tokens):
    cfg = ChunkConfig(max_tokens=max_tokens, overlap_tokens=max_tokens // 8, min_tokens=4)
    files, chunks = chunk_files("p", [item("docs/manual.md", LONG_MD, "markdown")], cfg)
    rows = chunks.to_pylist()
    counter = token_counter(None)
    lines = LONG_MD.splitlines()
    assert files.column("n_chunks")[0].as_py() == len(rows) > 1
    for r in rows:
        assert r["token_count"] == counter(r["text"]) <= max_tokens
        # the chunk's text lies inside its line range
        span = "\n".join(lines[r["start_line"] - 1:r["end_line"]])
        assert r["text"].split("\n")[0] in span and r["text"].split("\n")[-1] in span
        assert r["heading_path"][0] == "Manual"
    assert [r["ord"] for r in rows] == list(range(len(rows)))


def test_split_pieces_overlap():
    cfg = ChunkConfig(max_tokens=40, overlap_tokens=10, min_tokens=0)
    section = Section(("A",), " ".join(f"word{i}" for i in range(200)), 1, 1)
    pieces = chunk_sections([section], cfg, token_counter(None))
    assert len(pieces) > 3
    for a, b in zip(pieces, pieces[1:]):
        assert set(a.text.split()[-3:]) & set(b.text.split()[:6]), "neighbouring pieces share words"


def test_small_sections_merge_forward():
    cfg = ChunkConfig(max_tokens=100, overlap_tokens=0, min_tokens=8)
    _, sections = read_sections("x.md", "# API\n\n## fetch\n\nFetch returns the manifest for a berth id.\n", "markdown")
    pieces = chunk_sections(sections, cfg, token_counter(None))
    assert len(pieces) == 1
    assert pieces[0].heading_path == ("API", "fetch") and pieces[0].text.startswith("# API")
    assert pieces[0].start_line == 1


def test_big_class_splits_on_methods():
    methods = "\n".join(f"    def m{i}(self, x: int) -> int:\n        \"\"\"Doubles {i}.\"\"\"\n        return x * {i}\n"
                        for i in range(20))
    text = f'class Big:\n    """Big class."""\n\n{methods}'
    cfg = ChunkConfig(max_tokens=60, overlap_tokens=0, min_tokens=0)
    _, chunks = chunk_files("p", [item("big.py", text, "python")], cfg)
    symbols = chunks.column("symbol").to_pylist()
    assert symbols[0] == "Big" and "Big.m0" in symbols and "Big.m19" in symbols


def test_bad_files_become_skipped_rows():
    cfg = ChunkConfig()
    files, chunks = chunk_files("p", [item("bad.md", b"ok \xff\xfe broken", "markdown"),
                                      item("bad.ipynb", "{nope", "notebook"),
                                      item("good.md", "# Fine\n\nAll good here, nothing to see.", "markdown")], cfg)
    by_path = {r["path"]: r for r in files.to_pylist()}
    assert by_path["bad.md"]["skip_reason"] == "invalid_utf8" and "byte 3" in by_path["bad.md"]["skip_detail"]
    assert by_path["bad.ipynb"]["skip_reason"] == "parse_error"
    assert by_path["good.md"]["status"] == "ok"
    assert set(chunks.column("path").to_pylist()) == {"good.md"}


def test_local_tokenizer_counts_exactly(tiny_tokenizer):
    from tokenizers import Tokenizer

    cfg = ChunkConfig(max_tokens=64, overlap_tokens=8, tokenizer=str(tiny_tokenizer.parent))
    _, chunks = chunk_files("p", [item("docs/manual.md", LONG_MD, "markdown")], cfg)
    tok = Tokenizer.from_file(str(tiny_tokenizer))
    assert set(chunks.column("token_counter").to_pylist()) == {"tokenizer:" + tiny_tokenizer.parent.name}
    for r in chunks.to_pylist():
        assert r["token_count"] == len(tok.encode(r["text"], add_special_tokens=False).ids) <= 64
    assert chunker_fingerprint(cfg) != chunker_fingerprint(ChunkConfig(max_tokens=64, overlap_tokens=8))


def test_missing_tokenizer_falls_back_to_estimate():
    assert token_counter("no/such-model").name == "estimate"
    assert TokenCounter()("def f(x): return 42") == 9  # def f ( x ) : return 4 2


def test_config_lists_every_problem():
    with pytest.raises(ConfigError) as err:
        IngestConfig(max_file_bytes=0, include=[" "], chunk=ChunkConfig(max_tokens=8, overlap_tokens=50)).validate()
    assert len(err.value.problems) == 5
    assert "max_file_bytes" in str(err.value) and "overlap_tokens" in str(err.value)
