"""Reading a finished run back from MLflow (reuse, reports on earlier runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from governance.contract.results import RunResult, run_from_dict


def load_previous_run(sink: Any, run_id: str, workdir: Path) -> RunResult:
    folder = sink.download_run_folder(run_id, Path(workdir) / f"reused-{run_id}")
    doc = json.loads((folder / "run.json").read_text())
    run = run_from_dict(doc, folder)
    run.reused = True
    return run
