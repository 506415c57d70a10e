from pathlib import Path

import pytest

from fiona_common.errors import BadInput
from fiona_common.layout import Layout
from services.classifier.handlers import read_header, summary_path
from tests.builders import mr_dataset, write_part10


def test_header_is_read_without_touching_the_pixel_data(tmp_path: Path) -> None:
    path = write_part10(mr_dataset(rows=512, cols=512), tmp_path / "big.dcm")
    data = path.read_bytes()
    pixel_start = data.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010) Pixel Data
    path.write_bytes(data[: pixel_start + 12])  # the 512 KiB payload is gone entirely
    ds = read_header(path)
    assert ds.Rows == 512 and "PixelData" not in ds


def test_unreadable_or_missing_archive_file_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "junk").write_text("not dicom")
    with pytest.raises(BadInput):
        read_header(tmp_path / "junk")
    with pytest.raises(BadInput, match="gone"):
        read_header(tmp_path / "missing")


def test_summary_file_name_keeps_the_whole_series_uid(tmp_path: Path) -> None:
    path = summary_path(Layout(tmp_path), "1.2.3", "1.2.3.4")
    assert path == tmp_path / "site/raw/1.2.3/1.2.3.4.json"
