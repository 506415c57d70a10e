"""DICOM upper layer and DIMSE encoding: the receiver's acceptor, the exporter's requestor.

Why not pynetdicom's acceptor: measured with bench/receiver_bench.py, pynetdicom's association
reactor (two polling threads per association, every command set encoded and decoded through
pydicom Datasets) received about 90-120 objects/s per association here, below Orthanc (~165/s)
and far below DCMTK's storescp (~740/s); the per-object cost is in the library's design, not in
a setting. The acceptor needs only a small part of the protocol (associate, C-ECHO, C-STORE,
release, abort), so it is written here: one blocking thread per association that streams each
dataset straight from the socket to its spool file. pynetdicom still decodes and encodes the
association PDUs (A-ASSOCIATE-RQ/AC/RJ), where correctness matters and speed does not. The
exporter's C-STORE SCU (services/exporter/store_scu.py) was written for the same reason and
shares these encoders.
"""

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from pydicom.uid import UID
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import ServiceClass, StorageServiceClass, VerificationServiceClass
from pynetdicom.sop_class import uid_to_service_class

# FIONA's own implementation identity (a UUID-derived UID under 2.25, PS3.5 B.2).
IMPLEMENTATION_CLASS_UID = "2.25.255204880412097339624566563213735826466"
IMPLEMENTATION_VERSION_NAME = "FIONA_0_1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"


class PduType(IntEnum):
    ASSOCIATE_RQ = 0x01
    ASSOCIATE_AC = 0x02
    ASSOCIATE_RJ = 0x03
    P_DATA_TF = 0x04
    RELEASE_RQ = 0x05
    RELEASE_RP = 0x06
    ABORT = 0x07


class CommandField(IntEnum):
    C_STORE_RQ = 0x0001
    C_STORE_RSP = 0x8001
    C_ECHO_RQ = 0x0030
    C_ECHO_RSP = 0x8030
    C_CANCEL_RQ = 0x0FFF


NO_DATASET = 0x0101
UNRECOGNIZED_OPERATION = 0x0211


@dataclass(frozen=True)
class AssociationRequest:
    """What the A-ASSOCIATE-RQ asked for, decoded."""

    calling_aet: str
    called_aet: str
    protocol_version: int
    contexts: list[PresentationContext]
    primitive: A_ASSOCIATE


@dataclass
class NegotiatedContexts:
    """Accepted presentation contexts: context ID -> (abstract syntax, transfer syntax)."""

    accepted: dict[int, tuple[str, str]] = field(default_factory=dict)
    results: list[PresentationContext] = field(default_factory=list)


def decode_associate_rq(pdu: bytes) -> AssociationRequest:
    """Decode a whole A-ASSOCIATE-RQ PDU (header included).

    Raises:
        ValueError: the PDU is malformed (pynetdicom checks item lengths with ``assert``).
    """
    rq = A_ASSOCIATE_RQ()
    try:
        rq.decode(pdu)
        primitive = rq.to_primitive()
    except (AssertionError, AttributeError, TypeError, NotImplementedError) as err:
        # Without this, a PDU whose item lengths lie ended the association thread with an
        # unhandled exception (no A-ABORT, a traceback in the log) instead of a clean abort.
        raise ValueError(f"malformed A-ASSOCIATE-RQ ({type(err).__name__})") from err
    return AssociationRequest(
        calling_aet=str(primitive.calling_ae_title).strip(),
        called_aet=str(primitive.called_ae_title).strip(),
        protocol_version=int(rq.protocol_version),
        contexts=list(primitive.presentation_context_definition_list),
        primitive=primitive,
    )


def is_acceptable_abstract_syntax(uid: str) -> bool:
    """Storage (known or not, like storescp --promiscuous) and Verification; no other service."""
    service = uid_to_service_class(UID(uid))
    return service in (StorageServiceClass, VerificationServiceClass, ServiceClass)


def negotiate(
    contexts: list[PresentationContext], transfer_syntaxes: set[str]
) -> NegotiatedContexts:
    """Accept each proposed context we can store, in the first transfer syntax we support."""
    result = NegotiatedContexts()
    for rq in contexts:
        ac = PresentationContext()
        ac.context_id = rq.context_id
        ac.abstract_syntax = rq.abstract_syntax
        proposed = [str(ts) for ts in rq.transfer_syntax]
        chosen = next((ts for ts in proposed if ts in transfer_syntaxes), None)
        if not is_acceptable_abstract_syntax(str(rq.abstract_syntax)):
            ac.result = 0x03  # abstract syntax not supported
            ac.transfer_syntax = [proposed[0]] if proposed else []
        elif chosen is None:
            ac.result = 0x04  # transfer syntaxes not supported
            ac.transfer_syntax = [proposed[0]] if proposed else []
        else:
            ac.result = 0x00
            ac.transfer_syntax = [chosen]
            result.accepted[rq.context_id or 0] = (str(rq.abstract_syntax), chosen)
        result.results.append(ac)
    return result


def user_information(max_pdu: int) -> list[Any]:
    """FIONA's user information items: the PDU size it accepts and its implementation."""
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = max_pdu
    impl_uid = ImplementationClassUIDNotification()
    impl_uid.implementation_class_uid = UID(IMPLEMENTATION_CLASS_UID)
    impl_name = ImplementationVersionNameNotification()
    impl_name.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    return [max_length, impl_uid, impl_name]


def encode_associate_ac(
    rq: AssociationRequest, contexts: NegotiatedContexts, max_pdu: int
) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = UID(APPLICATION_CONTEXT)
    primitive.calling_ae_title = rq.primitive.calling_ae_title
    primitive.called_ae_title = rq.primitive.called_ae_title
    primitive.result = 0x00
    primitive.result_source = 0x01
    primitive.presentation_context_definition_results_list = contexts.results
    primitive.user_information = user_information(max_pdu)
    ac = A_ASSOCIATE_AC()
    ac.from_primitive(primitive)
    return bytes(ac.encode())


def encode_associate_rj(result: int, source: int, reason: int) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.result = result
    primitive.result_source = source
    primitive.diagnostic = reason
    rj = A_ASSOCIATE_RJ()
    rj.from_primitive(primitive)
    return bytes(rj.encode())


def encode_release_rp() -> bytes:
    return struct.pack(">BBL4x", PduType.RELEASE_RP, 0, 4)


def encode_release_rq() -> bytes:
    return struct.pack(">BBL4x", PduType.RELEASE_RQ, 0, 4)


def encode_abort(source: int = 0x02, reason: int = 0x00) -> bytes:
    return struct.pack(">BBLBBBB", PduType.ABORT, 0, 4, 0, 0, source, reason)


# --- DIMSE command sets: group 0000, always implicit VR little endian (PS3.7 6.3.1) -----------

_US = {0x0100, 0x0110, 0x0120, 0x0700, 0x0800, 0x0900, 0x1031}


def decode_command(data: bytes) -> dict[int, int | str]:
    """Command set elements by element number: US values as int, the rest as stripped str."""
    elements: dict[int, int | str] = {}
    offset = 0
    while offset + 8 <= len(data):
        group, elem, length = struct.unpack_from("<HHL", data, offset)
        value = data[offset + 8 : offset + 8 + length]
        offset += 8 + length
        if group != 0:
            continue
        if elem in _US and length == 2:
            elements[elem] = struct.unpack("<H", value)[0]
        elif elem != 0x0000:
            elements[elem] = value.decode("ascii", "replace").strip("\0 ")
    return elements


def command_element(elem: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0, elem, len(value)) + value


def uid_bytes(value: str) -> bytes:
    raw = value.encode("ascii", "replace")
    return raw + b"\0" if len(raw) % 2 else raw


def encode_response(
    command: int, message_id: int, status: int, sop_class: str, sop_instance: str | None = None
) -> bytes:
    """A response command set (C-STORE-RSP, C-ECHO-RSP...), with no dataset."""
    body = command_element(0x0002, uid_bytes(sop_class)) + command_element(
        0x0100, struct.pack("<H", command)
    )
    body += command_element(0x0120, struct.pack("<H", message_id))
    body += command_element(0x0800, struct.pack("<H", NO_DATASET))
    body += command_element(0x0900, struct.pack("<H", status))
    if sop_instance is not None:
        body += command_element(0x1000, uid_bytes(sop_instance))
    return command_element(0x0000, struct.pack("<L", len(body))) + body


def encode_command_pdu(context_id: int, command: bytes) -> bytes:
    """One P-DATA-TF PDU carrying a whole command set in one PDV (last fragment)."""
    pdv = struct.pack(">LBB", len(command) + 2, context_id, 0x03) + command
    return struct.pack(">BBL", PduType.P_DATA_TF, 0, len(pdv)) + pdv
