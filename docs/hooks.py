"""mkdocs hooks: the pages' doctest sessions read as sessions and copy as code.

The examples in pages/ are doctests (pytest runs them), so they carry ``>>>`` prompts, their
output and doctest's ``<BLANKLINE>`` for an empty output line. On the built page a blank line
shows as blank, and the copy button copies only the code: the session's statements without
prompts or output (mkdocs-material copies an enclosing element's ``data-copy`` attribute when
there is one), with a blank line after each compound statement so the copy also pastes into a
Python prompt.
"""

from __future__ import annotations

import html
import re
from typing import Any

_BLOCK = re.compile(r'<div class="highlight">(<pre>.*?</pre>)</div>', re.S)
_TAG = re.compile(r"<[^>]+>")
_BLANKLINE = '<span class="go">&lt;BLANKLINE&gt;</span>'


def session_code(text: str) -> str:
    """The code of a doctest session: statements without prompts, output left out.

    As doctest reads a session, ``...`` continues a statement only right after its other lines;
    after output it is output.
    """
    code: list[str] = []
    continued = False  # the last statement has continuation lines
    in_source = False  # the previous line was a statement's
    for line in text.splitlines():
        prompt, rest = line[:3], line[3:]
        is_prompt = rest[:1] in ("", " ")
        if prompt == ">>>" and is_prompt:
            if continued:
                code.append("")
            code.append(rest[1:])
            continued, in_source = False, True
        elif prompt == "..." and is_prompt and in_source:
            code.append(rest[1:])
            continued = True
        else:
            in_source = False
    return "\n".join(code)


def _session(match: re.Match[str]) -> str:
    pre = match.group(1)
    if '<span class="gp">' not in pre:
        return match.group(0)
    pre = pre.replace(_BLANKLINE, '<span class="go"></span>')
    code = session_code(html.unescape(_TAG.sub("", pre)))
    return f'<div class="highlight" data-copy="{html.escape(code, quote=True)}">{pre}</div>'


def on_page_content(content: str, **kwargs: Any) -> str:
    return _BLOCK.sub(_session, content)
