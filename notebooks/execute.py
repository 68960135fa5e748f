"""Execute the notebooks in place, so they are stored with their outputs.

    python notebooks/execute.py                   # all of them
    python notebooks/execute.py 02-partial-pooling.ipynb

Run it from the environment hmix is installed in (it starts that Python's kernel), after
changing a notebook or anything its outputs show.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbclient
import nbformat

HERE = Path(__file__).parent


def execute(path: Path) -> nbformat.NotebookNode:
    """The notebook run top to bottom in its own directory, its outputs replaced."""
    nb = nbformat.read(path, as_version=4)
    # no timings in the cells' metadata: a re-run changes the outputs it must, nothing else
    nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(HERE)}},
    ).execute()
    for cell in nb.cells:  # (progress bars drawn as text: a stored notebook shows the result)
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not _progress_bar(o)]
    return nb


def _progress_bar(output: nbformat.NotebookNode) -> bool:
    """A text progress bar (tqdm's, without ipywidgets), or what ends one."""
    if output.output_type != "stream" or output.name != "stderr":
        return False
    text = "".join(output.text) if isinstance(output.text, list) else output.text
    return text.strip() == "" or (text.startswith("\r") and "fit" in text and "|" in text)


if __name__ == "__main__":
    paths = [HERE / name for name in sys.argv[1:]] or sorted(HERE.glob("*.ipynb"))
    for path in paths:
        nbformat.write(execute(path), path)
        print(f"executed {path.name}")
