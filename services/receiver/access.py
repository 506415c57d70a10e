"""Who may open an association: the allow-lists and the ``config/enabled`` switch."""

import asyncio
import logging
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import ip_address
from pathlib import Path

from fiona_common.settings import AccessRules
from services.receiver import metrics

log = logging.getLogger(__name__)


@dataclass
class Switch:
    """The current state of one listener's ``config/enabled`` (read by the DICOM threads)."""

    listener: str = ""
    enabled: bool = True


class Admission(StrEnum):
    ACCEPTED = "accepted"
    REJECTED_DISABLED = "rejected_disabled"
    REJECTED_CALLING_AET = "rejected_calling_aet"
    REJECTED_PEER = "rejected_peer"


def admit(calling_aet: str, peer_address: str, rules: AccessRules, enabled: bool) -> Admission:
    """Decide on an association request. Empty allow-lists accept everyone, as the original did."""
    if not enabled:
        return Admission.REJECTED_DISABLED
    if rules.allowed_calling_aets and calling_aet.strip() not in rules.allowed_calling_aets:
        return Admission.REJECTED_CALLING_AET
    if rules.allowed_peers:
        try:
            address = ip_address(peer_address)
        except ValueError:
            return Admission.REJECTED_PEER
        if not any(address in net for net in rules.allowed_peers):
            return Admission.REJECTED_PEER
    return Admission.ACCEPTED


def read_enabled(path: Path) -> bool:
    """``config/enabled``: receiving is off only when the file's first character is ``0``."""
    try:
        with path.open("rb") as f:
            return f.read(1) != b"0"
    except FileNotFoundError:
        return True
    except OSError:
        return True  # unreadable switch: keep receiving rather than silently refuse a scanner


async def watch_enabled(
    switches: dict[Path, Switch], stop: asyncio.Event, poll_seconds: float
) -> None:
    """Re-read each ``config/enabled`` every ``poll_seconds`` and flip its listener's switch."""
    while not stop.is_set():
        for path, switch in switches.items():
            enabled = read_enabled(path)
            if enabled != switch.enabled:
                log.info("receiving switched", extra={"enabled": enabled, "file": str(path)})
            switch.enabled = enabled
            metrics.RECEIVING_ENABLED.labels(switch.listener).set(1 if enabled else 0)
        try:
            await asyncio.wait_for(stop.wait(), poll_seconds)
        except TimeoutError:
            pass
