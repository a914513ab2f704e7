"""The generated street's CSV files open in Excel as Chinese, not mojibake (issue 20): they
carry a UTF-8 byte-order mark, as the import's own files (credentials, reports) do, and
read back the same (the simulators' `load`; the import is exercised by the demo tests)."""

from __future__ import annotations

import codecs
import csv

from simulators import topology


def test_street_files_are_written_with_a_bom_and_read_back(tmp_path):
    files = topology.generate(tmp_path, "tiny", seed=1)
    for name, path in files.items():
        assert path.read_bytes().startswith(codecs.BOM_UTF8), name
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle))
        assert header[0].isascii() and header[0][0].isalpha(), (name, header)
    hierarchy = files["hierarchy"].read_text(encoding="utf-8-sig")
    assert "福田街道" in hierarchy
    street = topology.load(tmp_path)
    assert len(street.devices) > 0 and all(d.id.isascii() for d in street.devices)
