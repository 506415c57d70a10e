"""Quarantine: where input that cannot be processed goes, with a machine-readable reason.

Nothing is deleted silently: the object (or the bytes we got) is kept next to ``reason.json``
so an admin can inspect it, fix the cause and re-import it through the inbox.
"""

import json
import os
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

from fiona_common.layout import DIR_MODE, FILE_MODE, Layout, fsync_dir, write_atomic


def quarantine(
    layout: Layout,
    *,
    code: str,
    message: str,
    source: Path | None = None,
    move: bool = False,
    context: dict[str, str] | None = None,
) -> Path:
    """Keep ``source`` under ``quarantine/<date>/<id>/`` with a ``reason.json``; return that folder.

    ``move`` renames the source into quarantine (inbox files, spooled receptions); otherwise it is
    copied. The reason is written last, so a folder with a reason file is always complete.
    """
    now = datetime.now(UTC)
    name = f"{now:%H%M%S}-{uuid.uuid4().hex[:12]}"
    folder = layout.quarantine_dir / now.strftime("%Y%m%d") / name
    folder.mkdir(mode=DIR_MODE, parents=True)
    if source is not None:
        target = folder / (source.name or "object")
        if move:
            shutil.move(source, target)
        else:
            shutil.copyfile(source, target)
        os.chmod(target, FILE_MODE)
        fsync_dir(folder)
    reason = {"code": code, "message": message, "quarantined_at": now.isoformat()}
    reason.update(context or {})
    write_atomic(folder / "reason.json", json.dumps(reason, indent=2).encode())
    return folder
