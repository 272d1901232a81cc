"""The one Markdown parser: headings and fences of documents (CommonMark), fences of model answers (lenient)."""

from __future__ import annotations

from backend.markdown import Fence, parse_answer, parse_document, strip_fences

DOC = """# Guide #

Intro.

```python
# not a heading
x = 1
```

Setext title
spanning two lines
------------------

- item

  ## inside a list item

> # inside a quote

## C#
"""


def test_document_headings_levels_titles_and_lines():
    outline = parse_document(DOC)
    got = [(h.level, h.title, h.start, h.end, h.setext, h.nested) for h in outline.headings]
    assert got == [
        (1, "Guide", 0, 1, False, False),  # the closing #s are not part of the title
        (2, "Setext title\nspanning two lines", 9, 12, True, False),
        (2, "inside a list item", 15, 16, False, True),
        (1, "inside a quote", 17, 18, False, True),
        (2, "C#", 19, 20, False, False),  # a # not preceded by a space is text
    ]


def test_document_fences_with_info_content_lines_and_closure():
    (fence,) = parse_document(DOC).fences
    assert fence == Fence(info="python", content="# not a heading\nx = 1", start=4, end=8, closed=True)
    unclosed = parse_document("text\n~~~ {.Python} title\ncode\n").fences
    assert unclosed == [Fence(info="{.Python} title", content="code", start=1, end=3, closed=False)]
    assert unclosed[0].language == "python"


def test_document_fence_rules_follow_commonmark():
    # a longer fence holds a shorter one; a tilde line does not close a backtick fence
    (outer,) = parse_document("````md\n```\ninner\n```\n~~~\n````\n").fences
    assert outer.content == "```\ninner\n```\n~~~" and outer.closed
    # backticks in a backtick fence's info string make it inline code, not a fence
    assert parse_document("```a```b\n# Heading\n").fences == []
    assert [h.title for h in parse_document("```a```b\n# Heading\n").headings] == ["Heading"]
    # four spaces of indentation make indented code, which has no fences and no headings
    outline = parse_document("Text.\n\n    ```python\n    # comment\n    ```\n")
    assert outline.fences == [] and outline.headings == []
    # HTML blocks are not parsed: the heading inside one still counts
    assert [h.title for h in parse_document("<div>\n# Inside\n</div>\n").headings] == ["Inside"]


def test_document_line_numbers_count_normalised_newlines():
    outline = parse_document("# A\r\n\r\n```\r\ncode\r\n```\r\n# B\r\n")
    assert [(h.title, h.start) for h in outline.headings] == [("A", 0), ("B", 5)]
    assert (outline.fences[0].start, outline.fences[0].end, outline.fences[0].content) == (2, 5, "code")


def test_answer_fences_open_and_close_at_any_indentation():
    answer = ("1. Install it:\n"
              "    ```bash\n"
              "    pip install tidemark\n"
              "```\n"  # closed less indented than it was opened
              "2. Then:\n"
              "\t```py\n"
              "\tprint(1)\n"
              "\t```\n")
    assert [(f.language, f.content, f.closed) for f in parse_answer(answer)] == [
        ("bash", "pip install tidemark", True), ("py", "print(1)", True)]
    # CommonMark ends the first fence with its list item and runs the rest of the answer into a second one
    assert [(f.language, f.content.split("\n")[0], f.closed) for f in parse_document(answer).fences] == [
        ("bash", "pip install tidemark", False), ("", "2. Then:", False)]


def test_answer_fences_unclosed_quoted_and_inline():
    assert parse_answer("Try:\n```python\nx = 1\ny = (") == [
        Fence(info="python", content="x = 1\ny = (", start=1, end=4, closed=False)]
    # block quotes are not parsed in answers; neither is a fence that does not start its line
    assert parse_answer("> ```python\n> x = 1\n> ```\n") == []
    assert parse_answer("Use ```python x``` inline.\n") == []
    assert parse_answer("no code here") == []


def test_strip_fences_removes_the_fenced_lines_only():
    text = "Before `a`.\n```\n`b` in code\n```\nAfter `c`.\n~~~\nunclosed `d`\n"
    fences = parse_document(text).fences
    assert [f.closed for f in fences] == [True, False]
    assert strip_fences(text, fences) == "Before `a`.\nAfter `c`.\n"
    assert strip_fences(text, [f for f in fences if f.closed]) == "Before `a`.\nAfter `c`.\n~~~\nunclosed `d`\n"
