"""tests/fixtures/data: small, and what tests/fixtures/make_fixtures.py writes from the full data."""

import gzip
import subprocess
import sys

import pytest

from conftest import FIXTURE_DATA, REPO


def contents(root) -> dict[str, bytes]:
    """``{relative path: content}`` of every file under ``root``, ``.gz`` files gunzipped."""
    return {
        str(p.relative_to(root)): gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_the_fixtures_stay_small():
    sizes = {p.relative_to(FIXTURE_DATA): p.stat().st_size for p in FIXTURE_DATA.rglob("*") if p.is_file()}
    assert {p.parts[0] for p in sizes} == {"mnist", "fashion_mnist", "kang_synthetic", "school"}
    assert sum(sizes.values()) < 900_000, sizes


@pytest.mark.full_data
def test_the_fixtures_are_what_make_fixtures_writes(full_data_dir, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "fixtures" / "make_fixtures.py"), str(full_data_dir), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written, committed = contents(tmp_path), contents(FIXTURE_DATA)
    assert sorted(written) == sorted(committed)
    for name, content in written.items():  # compared gunzipped: another zlib may compress differently
        assert content == committed[name], f"{name} differs from what make_fixtures.py writes; rerun it"
