"""The SQL blocks of docs/audit.md, and running one against a world's database."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import text

from rotator.adapters.sql.schema import make_engine
from tests.integration.world import World

AUDIT_DOC = Path(__file__).resolve().parents[2] / "docs" / "audit.md"


def sql_blocks(markdown: str | None = None) -> list[str]:
    """Each fenced ``sql`` block of the audit doc (or of ``markdown``)."""
    source = AUDIT_DOC.read_text(encoding="utf-8") if markdown is None else markdown
    return re.findall(r"^```sql\n(.*?)^```$", source, flags=re.MULTILINE | re.DOTALL)


def query_rows(world: World, query: str) -> list[Any]:
    engine = make_engine(world.db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(query)).all())
    finally:
        engine.dispose()
