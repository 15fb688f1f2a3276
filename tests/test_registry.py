"""The registry: ordered by age, thread-safe, with moves that keep the age."""

from __future__ import annotations

import contextlib
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tempwatch import registry as registry_module
from tempwatch.dirtable import DirTable
from tempwatch.registry import Entry, Registry


def paths_oldest_first(registry: Registry) -> list[str]:
    return [path for path, _ in registry.oldest_first()]


def late_count(registry: Registry) -> int:
    """Entries held out of age order, in every directory's table."""
    return sum(len(table.late) for table in registry._dirs.values())


def test_re_registering_keeps_the_original_time_and_refreshes_the_size() -> None:
    registry = Registry()
    assert registry.add("/b/f", 10.0, 1, ino=7)
    assert not registry.add("/b/f", 20.0, 5, ino=7)
    entry = registry.get("/b/f")
    assert entry is not None and (entry.registered_at, entry.size_bytes) == (10.0, 5)
    assert registry.total_bytes == 5


def test_a_new_inode_under_a_known_name_starts_anew() -> None:
    registry = Registry()
    registry.add("/b/f", 10.0, 1, ino=7)
    assert registry.add("/b/f", 20.0, 2, ino=8)
    entry = registry.get("/b/f")
    assert entry is not None and entry.registered_at == 20.0


def test_a_rename_keeps_the_age_and_the_order() -> None:
    registry = Registry()
    for i in range(5):
        registry.add(f"/b/{i}", float(i))
    registry.move("/b/0", "/b/renamed")
    assert paths_oldest_first(registry) == ["/b/renamed", "/b/1", "/b/2", "/b/3", "/b/4"]
    assert registry.oldest(2) == registry.oldest_first()[:2]


def test_move_tree_and_discard_tree_touch_only_that_subtree() -> None:
    registry = Registry()
    registry.add("/b/d/x", 1.0, 3)
    registry.add("/b/d/sub/y", 2.0, 4)
    registry.add("/b/dd/z", 3.0, 5)
    assert registry.move_tree("/b/d", "/b/e") == 2
    assert sorted(registry.times()) == ["/b/dd/z", "/b/e/sub/y", "/b/e/x"]
    assert registry.discard_tree("/b/e") == 2
    assert list(registry.times()) == ["/b/dd/z"]
    assert registry.total_bytes == 5


_BATCH = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=30),
        st.floats(min_value=0, max_value=1000, allow_nan=False),
        st.integers(min_value=0, max_value=30),
        st.integers(min_value=0, max_value=3),
    ),
    max_size=20,
)


def _model_add(model: dict[str, Entry], path: str, when: float, size: int, ino: int) -> None:
    old = model.get(path)
    if old is not None and (ino == 0 or old.ino == 0 or old.ino == ino):
        model[path] = Entry(old.registered_at, size, ino or old.ino)
    else:
        model[path] = Entry(when, size, ino)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "add_many", "move", "discard", "resize", "window"]),
            st.integers(min_value=0, max_value=30),
            st.integers(min_value=0, max_value=30),
            st.floats(min_value=0, max_value=1000, allow_nan=False),
            _BATCH,
        ),
        max_size=300,
    ),
    st.sampled_from([1, 3, 1024]),
)
def test_iteration_is_oldest_first_under_any_history(
    operations: list[tuple[str, int, int, float, list[tuple[int, float, int, int]]]],
    rebuild_min: int,
) -> None:
    registry = Registry()
    model: dict[str, Entry] = {}
    window: contextlib.ExitStack | None = None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry_module, "_REBUILD_MIN", rebuild_min)
        for op, a, b, when, batch in operations:
            src, dst = f"/b/{a}", f"/b/{b}"
            if op == "add":
                registry.add(src, when, a, b % 3)
                _model_add(model, src, when, a, b % 3)
            elif op == "add_many":
                registry.add_many((f"/b/{i}", t, size, ino) for i, t, size, ino in batch)
                for i, t, size, ino in batch:
                    _model_add(model, f"/b/{i}", t, size, ino)
            elif op == "move" and src in model and src != dst:
                registry.move(src, dst)
                model[dst] = model.pop(src)
            elif op == "discard":
                registry.discard(src)
                model.pop(src, None)
            elif op == "resize":
                registry.update_size(src, b)
                if src in model:
                    model[src] = model[src]._replace(size_bytes=b)
            elif op == "window":  # open a tracking window, or close the open one
                if window is None:
                    window = contextlib.ExitStack()
                    window.enter_context(registry.tracking())
                else:
                    window.close()
                    window = None
            listed = registry.oldest_first()
            times = [entry.registered_at for _, entry in listed]
            assert times == sorted(times), f"not oldest first after {op}"
            assert dict(listed) == model
        if window is not None:
            window.close()
    assert dict(registry.oldest_first()) == model
    assert registry.total_bytes == sum(entry.size_bytes for entry in model.values())
    assert len(registry) == len(model)


def test_many_late_entries_trigger_a_rebuild_and_stay_ordered() -> None:
    registry = Registry()
    registry.add("/b/newest", 1e9)
    for i in range(5000):
        registry.add(f"/b/{i}", float(5000 - i))
    times = [entry.registered_at for _, entry in registry.oldest_first()]
    assert times == sorted(times) and len(times) == 5001


ROUNDS = 400  # per thread: enough to interleave; 2000 took 40 s on a loaded 2-core machine


def test_concurrent_updates_lose_nothing() -> None:
    registry = Registry()
    barrier = threading.Barrier(8)

    def work(worker: int) -> None:
        barrier.wait()
        for i in range(ROUNDS):
            registry.add(f"/b/{worker}/{i}", float(i), 1)
            if i % 2:
                registry.move(f"/b/{worker}/{i}", f"/b/{worker}/m{i}")
            if i % 3 == 0:
                registry.discard(f"/b/{worker}/{i}")
            registry.oldest(3)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = 8 * sum(1 for i in range(ROUNDS) if i % 2 or i % 3)
    assert len(registry) == expected == registry.total_bytes


# -- packed entries -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registered_at", "size_bytes", "ino"),
    [
        (1_763_737_000.123456789, 4096, 12_345_678),
        (-86_400.5, 0, 1),  # an mtime before 1970
        (0.1, 2**63 - 1, 2**64 - 1),  # the widest size and inode stat can give
        (float("inf"), 1, 0),
    ],
)
def test_entries_read_back_exactly_as_given(
    registered_at: float, size_bytes: int, ino: int
) -> None:
    registry = Registry()
    registry.add("/b/f", registered_at, size_bytes, ino)
    assert registry.get("/b/f") == Entry(registered_at, size_bytes, ino)
    assert registry.matches("/b/f", size_bytes, ino)
    assert not registry.matches("/b/f", size_bytes + 1, ino)
    assert registry.total_bytes == size_bytes
    registry.update_size("/b/f", 7)
    assert registry.get("/b/f") == Entry(registered_at, 7, ino)
    assert registry.times() == {"/b/f": registered_at}
    assert registry.discard("/b/f") == Entry(registered_at, 7, ino)
    assert registry.total_bytes == 0


# -- bulk insertion ---------------------------------------------------------------------------


def test_add_many_sorts_once_however_disordered(monkeypatch: pytest.MonkeyPatch) -> None:
    rebuilds: list[int] = []
    original = DirTable.sort

    def counting(self: DirTable) -> None:
        rebuilds.append(len(self))
        original(self)

    monkeypatch.setattr(DirTable, "sort", counting)
    registry = Registry()
    registry.add("/b/newest", 1e9, 1, 1)  # every bulk entry is older: all of them are late
    items = [(f"/b/{i}", float((i * 7919) % 20000), 2, i + 2) for i in range(20000)]
    assert registry.add_many(items) == 20000
    assert rebuilds == [20001], "one rebuild at the end, not one per len/8"
    times = [entry.registered_at for _, entry in registry.oldest_first()]
    assert times == sorted(times) and len(times) == 20001
    assert registry.total_bytes == 1 + 2 * 20000


def test_add_many_follows_the_rules_of_add() -> None:
    registry = Registry()
    registry.add("/b/same", 5.0, 1, 7)
    registry.add("/b/swapped", 5.0, 1, 7)
    added = registry.add_many(
        [("/b/same", 9.0, 3, 7), ("/b/swapped", 9.0, 3, 8), ("/b/new", 1.0, 4, 9)]
    )
    assert added == 2, "a new inode under a known name counts as new"
    assert registry.get("/b/same") == (5.0, 3, 7), "age kept, size refreshed"
    assert registry.get("/b/swapped") == (9.0, 3, 8)
    assert [path for path, _ in registry.oldest_first()] == ["/b/new", "/b/same", "/b/swapped"]
    assert registry.total_bytes == 10


# -- tracking windows ---------------------------------------------------------------------------


def test_tracking_records_what_every_update_touches() -> None:
    registry = Registry()
    registry.add("/b/before", 1.0)  # outside any window: not recorded
    registry.add("/b/d/x", 1.0)
    with registry.tracking() as touched:
        registry.add("/b/added", 2.0)
        registry.update_size("/b/before", 3)
        registry.discard("/b/never-registered")  # recorded even though it changed nothing
        registry.move("/b/added", "/b/moved")
        registry.discard_tree("/b/gone")
        registry.move_tree("/b/d", "/b/e")
        registry.add_many([("/b/bulk", 1.0, 0, 0)])  # a rescan's own load: not recorded
    assert touched.paths == {"/b/added", "/b/before", "/b/never-registered", "/b/moved"}
    for path in ("/b/gone/a", "/b/d/x", "/b/e/y/z"):
        assert path in touched
    for path in ("/b/bulk", "/b/goner", "/b/dd/x", "/b/other"):
        assert path not in touched
    assert touched.among(["/b/moved", "/b/e/q", "/b/other"]) == {"/b/moved", "/b/e/q"}
    registry.add("/b/after", 9.0)
    assert "/b/after" not in touched, "nothing is recorded once the window closed"


def test_nested_windows_each_record_and_ordering_waits_for_the_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry_module, "_REBUILD_MIN", 1)
    registry = Registry()
    registry.add("/b/newest", 100.0)
    with registry.tracking() as outer:
        with registry.tracking() as inner:
            for i in range(50):
                registry.add(f"/b/{i}", float(50 - i))
            assert late_count(registry) == 50, "no rebuild while a window is open"
            assert paths_oldest_first(registry)[:2] == ["/b/49", "/b/48"]
        assert late_count(registry) == 50
        registry.add("/b/late", 0.5)
    assert not late_count(registry), "rebuilt when the last window closed"
    assert "/b/late" in outer and "/b/late" not in inner
    times = [entry.registered_at for _, entry in registry.oldest_first()]
    assert times == sorted(times) and times[0] == 0.5


def test_load_in_no_order_is_sorted_once_when_the_window_closes() -> None:
    registry = Registry()
    # Negative times (mtimes before 1970) and -0.0 sort where the floats do.
    times = [float((i * 7919) % 5000) - 2500.0 for i in range(5000)] + [-0.0, 0.0, 1e9, -1e9]
    items = [(f"/l/{i}", at, 3, i + 1) for i, at in enumerate(times)]
    with registry.tracking():
        assert registry.load(items[:3000]) == 3000
        registry.add("/l/event", 5e8, 7, 99999)  # an event during the load, in order
        assert registry.load(items[3000:]) == len(items) - 3000
        during = [entry.registered_at for _, entry in registry.oldest_first()]
        assert during == sorted(during), "iteration is ordered while the load goes on"
    after = [entry.registered_at for _, entry in registry.oldest_first()]
    assert after == sorted([*times, 5e8])
    assert registry.total_bytes == 3 * len(times) + 7
    registry.add("/l/newest", 2e9, 1, 100000)  # the order carries on after the sort
    assert registry.oldest_first()[-1][0] == "/l/newest"
    assert [p for p, _ in registry.oldest(2)] == [p for p, _ in registry.oldest_first()[:2]]


def test_load_follows_the_rules_of_add_for_known_paths() -> None:
    registry = Registry()
    registry.add("/k/a", 10.0, 1, 5)
    with registry.tracking():
        # Known with the same inode: the time stays, the size is refreshed; a new inode is
        # a new file.
        assert registry.load([("/k/a", 1.0, 4, 5), ("/k/b", 2.0, 1, 6)]) == 1
        assert registry.load([("/k/b", 3.0, 1, 7)]) == 1
    assert registry.get("/k/a") == (10.0, 4, 5)
    assert registry.get("/k/b") == (3.0, 1, 7)
    assert registry.total_bytes == 5


def test_load_with_only_negative_times() -> None:
    registry = Registry()
    with registry.tracking():
        registry.load([("/n/a", -5.0, 0, 1), ("/n/b", -50.0, 0, 2), ("/n/c", -0.5, 0, 3)])
    assert [p for p, _ in registry.oldest_first()] == ["/n/b", "/n/a", "/n/c"]
