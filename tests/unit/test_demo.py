"""`scripts/demo.py`'s helpers. The demo as a real process tree, stopped by SIGTERM:
tests/integration/test_demo_processes.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.processes import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import demo  # noqa: E402


@pytest.mark.parametrize(("keep", "survives"), [(False, False), (True, True)])
def test_each_run_starts_from_a_fresh_database_unless_asked_to_keep_it(
        tmp_path: Path, keep: bool, survives: bool) -> None:
    path = tmp_path / "demo.sqlite3"
    path.write_text("last run's batches")
    Path(f"{path}-journal").write_text("")
    assert demo.fresh_database(path, keep) == f"sqlite:///{path}"
    assert path.exists() is survives
    assert Path(f"{path}-journal").exists() is survives
