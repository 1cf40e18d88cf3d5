"""The docs test's reading of Markdown (tests/docblocks.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docblocks import blocks, console_steps, missing_lines

PAGE = """# A page

<!-- docs-test: file app.py -->
```python
x = 1
```

A picture, never run:

```
a --> b
```

<!-- docs-test: background -->
<!-- docs-test: wait-for ready -->

```sh
serve
```

```console
$ greet Ada
hello ...
```
"""


def test_blocks_carry_the_directives_written_above_them(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    found = blocks(page)
    assert [(b.language, b.runs) for b in found] == [
        ("python", True),
        ("", False),
        ("sh", True),
        ("console", True),
    ]
    assert found[0].values("file") == ["app.py"] and found[0].text == "x = 1\n"
    assert found[2].has("background") and found[2].values("wait-for") == ["ready"]
    assert found[3].directives == []


def test_a_skip_needs_a_reason_and_directives_must_be_known(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- docs-test: skip -->\n```sh\nmake\n```\n")
    with pytest.raises(ValueError, match="needs a reason"):
        blocks(page)
    page.write_text("<!-- docs-test: sometimes -->\n```sh\nmake\n```\n")
    with pytest.raises(ValueError, match="unknown docs-test directive"):
        blocks(page)


def test_console_output_is_matched_in_order_with_ellipses() -> None:
    assert console_steps("$ a\none\n$ b\n") == [("a", ["one"]), ("b", [])]
    assert missing_lines(["hello ...", "bye"], "noise\nhello Ada\nbye\n") == []
    assert missing_lines(["bye", "hello ..."], "hello Ada\nbye\n") == ["hello ..."]
    assert missing_lines(["exactly"], "not exactly\n") == ["exactly"]
