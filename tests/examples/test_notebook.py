"""The example notebook runs from top to bottom (nbclient, a real kernel) against the stub
server over HTTP, in local mode: embedded Redis and a local worker."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.integration.services import stub_server

pytestmark = pytest.mark.integration
NOTEBOOK = Path(__file__).parents[2] / "examples" / "movielens_api.ipynb"


def test_the_notebook_runs_against_the_stub(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith(("LUSIFER_", "OPENAI_"))]:
        monkeypatch.delenv(name)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    with stub_server() as stub:
        # The kernel inherits this environment: the notebook reads the usual settings.
        monkeypatch.setenv("LUSIFER_DATA_DIR", str(data_dir))
        monkeypatch.setenv("LUSIFER_LLM_BASE_URL", stub.base_url)
        monkeypatch.setenv("LUSIFER_LLM_MODEL", "stub-model")
        monkeypatch.setenv("LUSIFER_WORK_DIR", str(tmp_path / "work"))
        client = NotebookClient(
            notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
        )
        client.execute()
        calls = stub.chat_count()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(str(o.get("data", {}).get("text/plain", o.get("text", ""))) for o in outputs)
    assert "simulated_rating" in text and "rmse" in text
    assert calls > 0
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the plot
