"""Run a test on both databases: as it is in `make test`'s SQLite pass, and as a
postgres-marked twin in its PostgreSQL pass (for defects only PostgreSQL raises, such as its
refusal of NUL in text and jsonb). The test takes a ``database`` argument: "default" or
"postgresql"."""

from __future__ import annotations

import pytest

ON_BOTH_DATABASES = pytest.mark.parametrize(
    "database", ["default", pytest.param("postgresql", marks=pytest.mark.postgres)])
