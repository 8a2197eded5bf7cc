"""Execute every notebook's code cells (small sizes), so the notebooks never rot.

The cells run in one namespace, in order, as a kernel would run them; no
Jupyter machinery is needed.
"""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("EMJAX_NOTEBOOK_SMALL", "1")
    monkeypatch.chdir(tmp_path)
    cells = json.loads(path.read_text())["cells"]
    namespace = {"__name__": "__main__"}
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        exec(compile(source, f"{path.name}[cell {i}]", "exec"), namespace)
    import matplotlib.pyplot as plt

    plt.close("all")


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ has no .ipynb files"
