import json
from pathlib import Path

import pytest

from fiona_common.errors import ConfigError
from fiona_common.settings import Settings


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_original_config_json_is_accepted_as_it_is(tmp_path: Path) -> None:
    config = write(
        tmp_path / "config.json",
        {
            "DICOMIP": "10.0.0.5",
            "DICOMPORT": 4006,
            "DICOMAETITLE": "UCSDFIONA",
            "DATADIR": None,
            "SCANNERIP": "10.0.0.9",
            "SCANNERPORT": 4006,
            "CONNECTION": "",
            "PROCESSING_USER": "processing",
            "LOCALTIMEZONE": "America/Chicago",
            "Authentication": {"Table-based": {"enabled": 1}},
        },
    )
    settings = Settings.load(config)
    assert (settings.dicomport, settings.dicomaetitle) == (4006, "UCSDFIONA")
    assert settings.processing_user == "processing"
    assert settings.extras["scannerip"] == "10.0.0.9"  # unknown keys kept, ignored


def test_environment_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "config.json", {"DICOMPORT": 4006, "DATADIR": "/srv/a"})
    monkeypatch.setenv("FIONA_DICOMPORT", "11112")
    monkeypatch.setenv("FIONA_DATADIR", str(tmp_path / "b"))
    monkeypatch.setenv("FIONA_RECEIVER__HTTP_PORT", "9999")
    settings = Settings.load(config)
    assert settings.dicomport == 11112
    assert settings.datadir == tmp_path / "b"
    assert settings.receiver.http_port == 9999


def test_config_file_can_be_named_by_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIONA_CONFIG", str(write(tmp_path / "c.json", {"DICOMPORT": 5000})))
    assert Settings.load().dicomport == 5000


def test_wrong_type_is_an_error_naming_the_key(tmp_path: Path) -> None:
    config = write(tmp_path / "config.json", {"DICOMPORT": "eleven"})
    with pytest.raises(ConfigError, match="DICOMPORT"):
        Settings.load(config)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_unreadable_file_is_a_clear_error(tmp_path: Path, content: str) -> None:
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(ConfigError, match="config.json"):
        Settings.load(tmp_path / "config.json")


def test_sites_become_listeners_with_their_own_data_dirs(tmp_path: Path) -> None:
    config = write(
        tmp_path / "config.json",
        {
            "DICOMPORT": 4006,
            "DATADIR": str(tmp_path / "data"),
            "SITES": {
                "ABCD": {"DICOMPORT": 4006, "DATADIR": str(tmp_path / "data")},
                "PCGC": {
                    "DICOMPORT": 4010,
                    "DATADIR": str(tmp_path / "dataPCGC"),
                    "DICOMAETITLE": "PCGCFIONA",
                    "SCANNERTYPE": "SIEMENS",
                    "ALLOWED_CALLING_AETS": "SCANNER",
                },
            },
        },
    )
    listeners = Settings.load(config).listeners()
    assert [(x.name, x.port, x.aetitle) for x in listeners] == [
        ("default", 4006, "FIONA"),
        ("PCGC", 4010, "PCGCFIONA"),
    ]
    assert listeners[1].datadir == tmp_path / "dataPCGC"
    assert listeners[1].access.allowed_calling_aets == ["SCANNER"]


def test_allow_lists_from_environment_as_csv_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIONA_RECEIVER__ALLOWED_CALLING_AETS", "A, B")
    monkeypatch.setenv("FIONA_RECEIVER__ALLOWED_PEERS", '["10.0.0.0/8", "127.0.0.1"]')
    rx = Settings.load().receiver
    assert rx.allowed_calling_aets == ["A", "B"]
    assert [str(n) for n in rx.allowed_peers] == ["10.0.0.0/8", "127.0.0.1/32"]
