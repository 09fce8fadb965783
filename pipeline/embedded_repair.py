"""Rebuild the embedded store's metadata files that a full disk left empty or cut short.

The embedded ClickHouse (Atomic databases) keeps each database's and table's definition in a small
`.sql` file under `metadata/`; its data lives under `store/<uuid>/`, reached through symlinks
(`metadata/<db>` and `data/<db>/<table>`). When the disk fills while such a file is rewritten, it
can be left empty, and the engine then refuses to start ("Empty query ... spans.sql"). The node
knows the definitions (its DDL) and the UUIDs are in the symlinks, so the files are rewritten from
those, and the table's data is attached again as it was. Runs before the store is opened.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pipeline.log import get_logger

log = get_logger("store_repair")

_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS `[^`]+`\.`([^`]+)`\s*", re.S)


def _uuid_of(link: Path) -> str | None:
    """The UUID an Atomic symlink points at (its target's last component), or None."""
    try:
        target = os.readlink(link)
    except OSError:
        return None
    name = Path(target).name
    return name if re.fullmatch(r"[0-9a-f-]{36}", name) else None


def _complete(path: Path) -> bool:
    try:
        return "ENGINE" in path.read_text(errors="replace")
    except OSError:
        return False


def _rewrite(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".repair")
    partial.write_text(text)
    partial.replace(path)


def repair_metadata(root: Path, database: str, statements: list[str]) -> list[Path]:
    """Rewrite the damaged metadata files of `database` under the embedded store at `root` from
    `statements` (the node's DDL); return the files rewritten. A damaged file whose UUID cannot
    be found is removed, so the DDL creates it anew rather than the engine refusing to start."""
    repaired: list[Path] = []
    db_file = root / "metadata" / f"{database}.sql"
    if db_file.exists() and not _complete(db_file):
        uuid = _uuid_of(root / "metadata" / database)
        if uuid:
            _rewrite(db_file, f"ATTACH DATABASE _ UUID '{uuid}'\nENGINE = Atomic\n")
        else:
            db_file.unlink()
        repaired.append(db_file)
    tables = {m.group(1): s[m.end():] for s in statements if (m := _CREATE_TABLE.match(s))}
    for table, body in tables.items():
        table_file = root / "metadata" / database / f"{table}.sql"
        if not table_file.exists() or _complete(table_file):
            continue
        uuid = _uuid_of(root / "data" / database / table)
        if uuid:
            _rewrite(table_file, f"ATTACH TABLE _ UUID '{uuid}'\n{body}\n")
        else:
            table_file.unlink()
        repaired.append(table_file)
    for path in repaired:
        log.error("store_metadata_rebuilt", file=str(path), reason="empty or cut short (full disk?)")
    return repaired
