"""The documentation site's hooks (docs/hooks.py): what a reader sees and what the copy button copies."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
assert spec is not None and spec.loader is not None
hooks = importlib.util.module_from_spec(spec)
sys.modules["docs_hooks"] = hooks
spec.loader.exec_module(hooks)

SESSION = """\
>>> import warnings, hmix
>>> with warnings.catch_warnings():
...     warnings.simplefilter("ignore")
...     m = hmix.lmer("Reaction ~ Days + (Days | Subject)", d)
>>> print(m.summary())
Linear mixed model fit by REML ['LinearMixedModel']
<BLANKLINE>
>>> m.fixef
(Intercept)    251.405
>>>
>>> print("x\\n... y")
x
... y
"""


def test_session_code_is_the_statements() -> None:
    assert hooks.session_code(SESSION) == (
        "import warnings, hmix\n"
        "with warnings.catch_warnings():\n"
        '    warnings.simplefilter("ignore")\n'
        '    m = hmix.lmer("Reaction ~ Days + (Days | Subject)", d)\n'
        "\n"  # ends the with block when pasted at a Python prompt
        "print(m.summary())\n"
        "m.fixef\n"
        "\n"
        'print("x\\n... y")'
    )


def test_page_blocks_copy_code_and_show_blank_lines() -> None:
    pygments = pytest.importorskip("pygments")
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonConsoleLexer

    pre = pygments.highlight(SESSION, PythonConsoleLexer(), HtmlFormatter(nowrap=True))
    page = f'<p>x</p><div class="highlight"><pre><span></span><code>{pre}</code></pre></div>'
    out = hooks.on_page_content(page)
    assert "BLANKLINE" not in out and 'data-copy="import warnings, hmix\nwith' in out
    assert hooks.on_page_content('<div class="highlight"><pre><code>x = 1</code></pre></div>') == (
        '<div class="highlight"><pre><code>x = 1</code></pre></div>'
    )


def test_material_copies_data_copy() -> None:
    material = pytest.importorskip("material")
    scripts = Path(material.__file__).parent / "templates" / "assets" / "javascripts"
    bundle = next(scripts.glob("bundle.*.js"))
    # the copy button copies the closest data-copy attribute (mkdocs-material 9.4.4 and later)
    assert re.search(r'closest\("\[data-copy\]"\)', bundle.read_text())
