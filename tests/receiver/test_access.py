from pathlib import Path

import pytest

from fiona_common.settings import AccessRules
from services.receiver.access import Admission, admit, read_enabled

OPEN = AccessRules()
RULES = AccessRules(allowed_calling_aets=["SCANNER"], allowed_peers=["10.1.0.0/16"])


def test_empty_allow_lists_accept_everyone() -> None:
    assert admit("ANY", "192.168.1.1", OPEN, enabled=True) is Admission.ACCEPTED


@pytest.mark.parametrize(
    ("aet", "address", "expected"),
    [
        ("SCANNER", "10.1.2.3", Admission.ACCEPTED),
        ("OTHER", "10.1.2.3", Admission.REJECTED_CALLING_AET),
        ("SCANNER", "10.2.0.1", Admission.REJECTED_PEER),
        ("SCANNER", "not-an-ip", Admission.REJECTED_PEER),
    ],
)
def test_allow_lists(aet: str, address: str, expected: Admission) -> None:
    assert admit(aet, address, RULES, enabled=True) is expected


def test_disabled_rejects_even_allowed_senders() -> None:
    assert admit("SCANNER", "10.1.2.3", RULES, enabled=False) is Admission.REJECTED_DISABLED


@pytest.mark.parametrize(
    ("content", "enabled"),
    [(None, True), ("110", True), ("1", True), ("010", False), ("0", False), ("", True)],
)
def test_enabled_file(tmp_path: Path, content: str | None, enabled: bool) -> None:
    path = tmp_path / "enabled"
    if content is not None:
        path.write_text(content)
    assert read_enabled(path) is enabled
