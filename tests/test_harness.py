"""The test harness itself: real peers start, stop, restart and move DICOM unchanged."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import nats
import pydicom
import pytest
from nats.js.api import StorageType
from pydicom import uid as tsuid
from pydicom.filereader import read_file_meta_info

from tests.builders import (
    canonical_testdata_files,
    dataset_bytes,
    mr_dataset,
    testdata_files_by_transfer_syntax,
    write_part10,
    write_series,
)
from tests.peers import (
    LOCALHOST,
    NatsServer,
    Orthanc,
    PeerStartupError,
    StoreScp,
    dcmtk,
    echo_scu,
    port_open,
    store_scu,
    store_scu_as_is,
)

ALL_SYNTAXES = {
    tsuid.ImplicitVRLittleEndian,
    tsuid.ExplicitVRLittleEndian,
    tsuid.ExplicitVRBigEndian,
    tsuid.DeflatedExplicitVRLittleEndian,
    tsuid.JPEGBaseline8Bit,
    tsuid.JPEGExtended12Bit,
    tsuid.JPEGLosslessSV1,
    tsuid.JPEGLSLossless,
    tsuid.JPEGLSNearLossless,
    tsuid.JPEG2000Lossless,
    tsuid.JPEG2000,
    tsuid.RLELossless,
}


def _sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _syntax(path: Path) -> str:
    return str(read_file_meta_info(path).TransferSyntaxUID)


def _by_sop_uid(paths: list[Path]) -> dict[str, Path]:
    return {_sop_uid(p): p for p in paths}


def test_dcmtk_finds_real_tools_not_pynetdicom_shims() -> None:
    for tool in ("storescu", "echoscu", "findscu", "movescu", "storescp", "dcmdump"):
        assert Path(dcmtk(tool)).is_file()
    with pytest.raises(FileNotFoundError, match="nosuchtool"):
        dcmtk("nosuchtool")


async def test_nats_restart_on_same_port_keeps_jetstream_data(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(name="HARNESS", subjects=["harness.>"], storage=StorageType.FILE)
    ack = await js.publish("harness.test", b"kept")
    await nc.close()

    port = nats_server.port
    await asyncio.to_thread(nats_server.stop)
    assert not port_open(port)
    await asyncio.to_thread(nats_server.start)
    assert nats_server.port == port

    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        info = await js.stream_info("HARNESS")
        assert info.state.messages == 1
        assert (await js.get_msg("HARNESS", ack.seq)).data == b"kept"
    finally:
        await nc.close()


def test_nats_kill_then_start_again(nats_server: NatsServer) -> None:
    nats_server.kill()
    assert not nats_server.running
    assert not port_open(nats_server.port)
    nats_server.start()
    assert port_open(nats_server.port)


def test_startup_failure_reports_the_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((LOCALHOST, 0))
        taken.listen()
        server = NatsServer(tmp_path / "nats", port=taken.getsockname()[1])
        with pytest.raises(PeerStartupError, match="address already in use"):
            server.start(timeout=10)
    assert not server.running


def test_storescu_sends_series_byte_identical(store_scp: StoreScp, tmp_path: Path) -> None:
    sent = write_series(tmp_path / "series", 3)
    store_scu(LOCALHOST, store_scp.port, [tmp_path / "series"], called_aet=store_scp.aet)
    received = _by_sop_uid(store_scp.wait_for_files(3))
    for path in sent:
        assert dataset_bytes(received[_sop_uid(path)]) == dataset_bytes(path), path.name


def test_store_as_is_keeps_syntax_and_bytes(store_scp: StoreScp, tmp_path: Path) -> None:
    files = canonical_testdata_files(tmp_path / "canonical")
    assert set(files) == ALL_SYNTAXES
    store_scu_as_is(LOCALHOST, store_scp.port, files.values(), called_aet=store_scp.aet)
    received = _by_sop_uid(store_scp.wait_for_files(len(files)))
    changed = []
    for syntax, path in files.items():
        got = received[_sop_uid(path)]
        if _syntax(got) != syntax or dataset_bytes(got) != dataset_bytes(path):
            changed.append(f"{tsuid.UID(syntax).name}: {path.name}")
    assert not changed


def test_store_as_is_keeps_syntax_of_shipped_files(store_scp: StoreScp) -> None:
    files = testdata_files_by_transfer_syntax()
    assert set(files) == ALL_SYNTAXES - {tsuid.JPEGLSNearLossless}
    for syntax, path in files.items():  # one by one: some files share a SOP Instance UID
        store_scu_as_is(LOCALHOST, store_scp.port, [path], called_aet=store_scp.aet)
        [got] = store_scp.wait_for_files(1)
        assert _syntax(got) == syntax, path.name
        assert pydicom.dcmread(got).PixelData == pydicom.dcmread(path).PixelData, path.name
        got.unlink()


def test_orthanc_receives_one_file(orthanc: Orthanc, tmp_path: Path) -> None:
    ds = mr_dataset()
    path = write_part10(ds, tmp_path / "one.dcm")
    echo_scu(LOCALHOST, orthanc.dicom_port, called_aet=orthanc.aet)
    store_scu(LOCALHOST, orthanc.dicom_port, [path], called_aet=orthanc.aet)
    [instance] = orthanc.instances()
    tags = orthanc.get_json(f"/instances/{instance}/simplified-tags")
    assert tags["SOPInstanceUID"] == ds.SOPInstanceUID
