"""The deleter under a directory renamed in and out of base_dir while it deletes.

Linux has no unlink-by-fd: between the check that the directory still hangs below base_dir
and the unlink (the next system call) a rename can take the directory out, and the file in
hand goes with it. What holds, and is tested here against a real racing rename: the only
file that can be removed is the one judged (same device and inode, inside base_dir one
system call earlier); a file the deleter did not report deleted is never gone; files it was
not asked about, beside it or outside, are never touched.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from tempwatch.deleter import Deleter, FileId, Outcome

ROUNDS = 2
FILES = 200


def _file_id(path: Path) -> FileId:
    st = os.lstat(path)
    return FileId(st.st_dev, st.st_ino)


def _shuffle(base: Path, outside: Path, done: threading.Event) -> None:
    """Move base/sub out and back in, as fast as it goes, until `done`."""
    while not done.is_set():
        for src, dst in ((base / "sub", outside / "sub"), (outside / "sub", base / "sub")):
            try:
                os.rename(src, dst)
            except FileNotFoundError:
                pass


def test_a_racing_rename_out_of_base_dir_costs_at_most_the_file_judged(
    base: Path, outside: Path
) -> None:
    sentinel = outside / "sentinel"
    sentinel.write_text("never touched")
    for round_ in range(ROUNDS):
        sub = base / "sub"
        sub.mkdir()
        targets = [sub / f"t{i:04}" for i in range(FILES)]
        keep = [sub / f"keep{i:02}" for i in range(20)]
        for path in (*targets, *keep):
            path.write_bytes(b"x")
        items = [(str(p), _file_id(p)) for p in targets]
        names = {p.name: _file_id(p) for p in (*targets, *keep)}
        done = threading.Event()

        renamer = threading.Thread(target=_shuffle, args=(base, outside, done),
                                   name=f"renamer-{round_}")
        renamer.start()
        try:
            results = list(Deleter(base).delete_many(items))
        finally:
            done.set()
            renamer.join()
        where = base / "sub" if (base / "sub").exists() else outside / "sub"
        left = {p.name: _file_id(p) for p in where.iterdir()}
        deleted = {Path(r.path).name for r in results if r.outcome is Outcome.DELETED}
        # Every file the deleter did not report deleted is still there, the same file.
        assert {n: names[n] for n in names if n not in deleted} == left
        # Only the files asked about went; those beside them stayed.
        assert deleted <= {p.name for p in targets}
        assert all(p.name in left for p in keep)
        assert all(r.outcome in (Outcome.DELETED, Outcome.VANISHED, Outcome.SWAPPED)
                   for r in results), {r.outcome for r in results}
        for path in where.iterdir():
            path.unlink()
        where.rmdir()
    assert sentinel.read_text() == "never touched"
