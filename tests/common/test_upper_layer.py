from pynetdicom.presentation import PresentationContext

from fiona_common.upper_layer import (
    CommandField,
    decode_command,
    encode_response,
    is_acceptable_abstract_syntax,
    negotiate,
)

MR = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def context(cid: int, abstract: str, *syntaxes: str) -> PresentationContext:
    cx = PresentationContext()
    cx.context_id = cid
    cx.abstract_syntax = abstract
    cx.transfer_syntax = list(syntaxes)
    return cx


def test_store_response_round_trips_through_the_decoder() -> None:
    data = encode_response(CommandField.C_STORE_RSP, 7, 0xA700, MR, "1.2.3.4")
    decoded = decode_command(data)
    assert decoded[0x0100] == 0x8001
    assert decoded[0x0120] == 7
    assert decoded[0x0900] == 0xA700
    assert decoded[0x0800] == 0x0101
    assert decoded[0x0002] == MR and decoded[0x1000] == "1.2.3.4"
    assert int.from_bytes(data[8:12], "little") == len(data) - 12  # group length


def test_negotiation_keeps_the_senders_first_supported_syntax() -> None:
    result = negotiate(
        [context(1, MR, JPEG_BASELINE, EXPLICIT_LE), context(3, MR, "1.2.3.999")],
        {EXPLICIT_LE, JPEG_BASELINE},
    )
    assert result.accepted == {1: (MR, JPEG_BASELINE)}
    assert [cx.result for cx in result.results] == [0x00, 0x04]


def test_query_retrieve_is_not_accepted_but_unknown_storage_classes_are() -> None:
    find = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve - FIND
    assert not is_acceptable_abstract_syntax(find)
    assert is_acceptable_abstract_syntax("1.2.840.10008.1.1")  # Verification
    assert is_acceptable_abstract_syntax("1.3.6.1.4.1.99999.1.1")  # a private storage class
    result = negotiate([context(1, find, EXPLICIT_LE)], {EXPLICIT_LE})
    assert result.accepted == {} and result.results[0].result == 0x03
