"""The README's config reference is the rendering of the configs' docstrings, defaults and flags."""

from backend.config_doc import README, rewrite


def test_readme_config_reference_matches_the_configs():
    text = README.read_text(encoding="utf-8")
    assert rewrite(text) == text, "README.md's config reference is stale: run `python -m backend.config_doc`"
