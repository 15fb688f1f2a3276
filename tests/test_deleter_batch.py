"""Deleter.delete_many: the batch path keeps every guarantee of delete()."""

from __future__ import annotations

import os
from pathlib import Path

from tempwatch.deleter import Deleter, FileId, Outcome


def _id(path: Path) -> FileId:
    st = os.lstat(path)
    return FileId(st.st_dev, st.st_ino)


def test_batch_mixes_flat_nested_outside_and_swapped_files(tmp_path: Path) -> None:
    base = tmp_path / "base"
    (base / "sub").mkdir(parents=True)
    outside = tmp_path / "sentinel"
    outside.write_text("keep")
    flat = base / "flat"
    flat.write_text("x")
    nested = base / "sub" / "nested"
    nested.write_text("y")
    swapped = base / "swapped"
    swapped.write_text("judged")
    judged = _id(swapped)
    replacement = base / "replacement"
    replacement.write_text("swapped in")
    os.replace(replacement, swapped)
    link = base / "link"
    link.symlink_to(outside)

    items = [
        (str(flat), _id(flat)),
        (str(outside), None),
        (str(base / ".." / "sentinel"), None),
        (str(nested), _id(nested)),
        (str(swapped), judged),
        (str(link), None),
        (str(base / "gone"), None),
    ]
    outcomes = [r.outcome for r in Deleter(base).delete_many(items)]

    assert outcomes == [
        Outcome.DELETED,
        Outcome.OUTSIDE,
        Outcome.OUTSIDE,
        Outcome.DELETED,
        Outcome.SWAPPED,
        Outcome.DELETED,
        Outcome.VANISHED,
    ]
    assert outside.read_text() == "keep"
    assert swapped.read_text() == "swapped in"
    assert sorted(p.name for p in base.iterdir()) == ["sub", "swapped"]


def test_batch_closes_its_descriptors(tmp_path: Path) -> None:
    files = [tmp_path / f"f{i}" for i in range(50)]
    for path in files:
        path.write_text("x")
    before = len(os.listdir("/proc/self/fd"))
    results = list(Deleter(tmp_path).delete_many((str(p), None) for p in files))
    assert all(r.ok for r in results)
    assert len(os.listdir("/proc/self/fd")) == before


def test_batch_dry_run_deletes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("x")
    results = list(Deleter(tmp_path, dry_run=True).delete_many([(str(target), None)]))
    assert results[0].ok and target.exists()
