"""The LLM layer's part of the benchmark (sections 1-3), kept under its old name.

    python -m bench.bench_llm [--latency 1.0]

Same as ``python -m bench.run --only document,targets,scaling,tails``; see bench/run.py.
"""

from __future__ import annotations

import sys

from bench.run import main

if __name__ == "__main__":
    main(["--only", "document,targets,scaling,tails", *sys.argv[1:]])
