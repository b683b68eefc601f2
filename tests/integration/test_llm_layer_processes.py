"""The LLM layer needs no ORM and has no import cycle."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]


def test_the_llm_layer_imports_without_django_apps_loaded() -> None:
    # No django.setup(): importing batchgen.models here would raise AppRegistryNotReady.
    script = ("import sys\n"
              "from batchgen.llm import LLMBatchClient, LLMClient, MAX_BATCH_SIZE\n"
              "import batchgen.llm.attempts, batchgen.llm.keys, batchgen.llm.registry\n"
              "print('batchgen.models' in sys.modules)\n")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "botplatform.settings"}
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_DIR, env=env,
                          capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
