"""scripts/make_iod_types.py on a small stand-in for the PS3.3 module tables."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_iod_types.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_iod_types", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def attr(module: str, path: str, tag: str, kind: str) -> dict[str, str]:
    return {"moduleId": module, "path": f"{module}:{path}", "tag": tag, "type": kind}


def test_types_per_sop_class_and_level(tmp_path: Path) -> None:
    standard = tmp_path / "standard"
    standard.mkdir()
    files = {
        "sops.json": [{"id": "1.2.3", "ciod": "PS"}, {"id": "1.2.4", "ciod": "Other"}],
        "ciods.json": [{"name": "PS", "id": "ps"}, {"name": "Other", "id": "other"}],
        "ciod_to_modules.json": [
            {"ciodId": "ps", "moduleId": "relationship"},
            {"ciodId": "ps", "moduleId": "identification"},
        ],
        "module_to_attributes.json": [
            # Referenced Image Sequence: Type 1 inside the series item, not at the top level
            attr("relationship", "00081115:00081140", "(0008,1140)", "1"),
            attr("identification", "00700084", "(0070,0084)", "2C"),
            attr("identification", "00080020", "(0008,0020)", "2"),  # no combined action
            attr("identification", "00080023", "(0008,0023)", "3"),
        ],
    }
    for name, content in files.items():
        (standard / name).write_text(json.dumps(content))
    script = load_script()
    script.combined_tags = lambda: {"00081140", "00700084", "00080023"}
    result = script.generate(standard)
    assert result["sop_classes"] == {
        "1.2.3": {"top": {"00700084": "2"}, "nested": {"00081140": "1"}},
    }
