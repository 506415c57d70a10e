import shutil
from pathlib import Path

import pytest

from fiona_common.errors import BadInput
from fiona_common.layout import Layout
from services.receiver.archive import StoreOutcome, read_identity, store
from tests.builders import mr_dataset, write_part10


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "data")
    layout.ensure()
    return layout


def spooled(tmp_path: Path, name: str, **kw: object) -> Path:
    return write_part10(mr_dataset(**kw), tmp_path / name)


def test_object_is_linked_into_its_study_folder(tmp_path: Path, layout: Layout) -> None:
    source = spooled(tmp_path, "a.dcm", study_uid="1.2.3", sop_uid="1.2.3.9")
    result = store(layout, source, read_identity(source))
    assert result.outcome is StoreOutcome.STORED
    assert result.path == layout.archive_dir / "scp_1.2.3" / "MR.1.2.3.9"
    assert result.path.read_bytes() == source.read_bytes()
    assert result.path.stat().st_mode & 0o777 == 0o640


def test_identical_resend_is_a_duplicate_and_a_changed_one_a_conflict(
    tmp_path: Path, layout: Layout
) -> None:
    first = spooled(tmp_path, "a.dcm", study_uid="1.2.3", sop_uid="1.2.3.9")
    same = Path(shutil.copy(first, tmp_path / "b.dcm"))
    changed = spooled(tmp_path, "c.dcm", study_uid="1.2.3", sop_uid="1.2.3.9")
    assert store(layout, first, read_identity(first)).outcome is StoreOutcome.STORED
    assert store(layout, same, read_identity(same)).outcome is StoreOutcome.DUPLICATE
    assert store(layout, changed, read_identity(changed)).outcome is StoreOutcome.CONFLICT
    assert (layout.archive_dir / "scp_1.2.3" / "MR.1.2.3.9").read_bytes() == first.read_bytes()


def test_prefix_follows_dcmtk_for_known_classes_and_modality_otherwise(tmp_path: Path) -> None:
    ct = spooled(tmp_path, "ct.dcm", SOPClassUID="1.2.840.10008.5.1.4.1.1.2", Modality="CT")
    odd = spooled(tmp_path, "x.dcm", SOPClassUID="1.3.6.1.4.1.9.9", Modality="OT")
    assert read_identity(ct).file_prefix == "CT"
    assert read_identity(odd).file_prefix == "OT"


def test_unreadable_file_is_bad_input(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 20)
    with pytest.raises(BadInput):
        read_identity(junk)
