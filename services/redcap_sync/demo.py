"""The demo project ``fiona up`` starts with when there is no projects file yet."""

import json
from pathlib import Path

from fiona_common.layout import FILE_MODE, write_atomic

DEMO_AET = "DEMO"
DEMO = {
    "projects": [
        {
            "name": "DEMO",
            "active": True,
            "participant_pattern": "^DEMO[0-9]{4}$",
            "autoid": {"enabled": True, "called_aet": DEMO_AET},
            "deidentification": {"profile": "recommended"},
            "destinations": [{"kind": "outbox"}],
        }
    ],
    "routing": [],
}


def write_demo(path: Path) -> None:
    """Everything sent to AE title DEMO gets an automatic pseudonym and goes to the outbox."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(DEMO, indent=2) + "\n").encode(), FILE_MODE)
