"""The registry held per directory: tables, tree operations, slot reuse, the path kept whole."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tempwatch import dirtable
from tempwatch import registry as registry_module
from tempwatch.dirtable import DirTable
from tempwatch.registry import Entry, Registry

_DIRS = ["/b/", "/b/d/", "/b/d/sub/", "/b/dd/", "/b/e/", "/", ""]


def _path(d: int, n: int) -> str:
    return f"{_DIRS[d % len(_DIRS)]}f{n}"


def _model_add(model: dict[str, Entry], path: str, when: float, size: int, ino: int) -> bool:
    old = model.get(path)
    if old is not None and (ino == 0 or old.ino == 0 or old.ino == ino):
        model[path] = Entry(old.registered_at, size, ino or old.ino)
        return False
    model[path] = Entry(when, size, ino)
    return True


def _model_move_tree(model: dict[str, Entry], src: str, dst: str) -> int:
    src_prefix, dst_prefix = src.rstrip("/") + "/", dst.rstrip("/") + "/"
    moving = {p: e for p, e in model.items() if p.startswith(src_prefix)}
    for path in moving:
        del model[path]
    for path, entry in moving.items():
        model[dst_prefix + path[len(src_prefix) :]] = entry
    return len(moving)


_OPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "add",
                "load",
                "load_dir",
                "move",
                "discard",
                "renew",
                "resize",
                "tree_move",
                "tree_drop",
                "window",
            ]
        ),  # fmt: skip
        st.integers(min_value=0, max_value=6),
        st.integers(min_value=0, max_value=12),
        st.integers(min_value=0, max_value=6),
        st.integers(min_value=0, max_value=12),
        st.floats(min_value=-100, max_value=1000, allow_nan=False),
    ),
    max_size=250,
)


def _apply(
    registry: Registry, model: dict[str, Entry], op: str, d1: int, n1: int, d2: int, n2: int,
    when: float,
) -> None:  # fmt: skip
    """One operation on the registry and on the model, with the answers compared."""
    src, dst, ino = _path(d1, n1), _path(d2, n2), n2 % 4
    if op == "add":
        assert registry.add(src, when, n2, ino) == _model_add(model, src, when, n2, ino)
    elif op == "load":
        batch = [(_path(d1, n1 + k), when - k, k, (n2 + k) % 4) for k in range(4)]
        assert registry.load(batch) == sum(_model_add(model, *item) for item in batch)
    elif op == "load_dir" and _DIRS[d1 % len(_DIRS)]:  # a directory's names, as a scan's
        directory = _DIRS[d1 % len(_DIRS)]
        names = [f"f{n1 + k * (n2 % 3)}" for k in range(4)]  # repeated when n2 % 3 == 0
        times, sizes, inos = [when + k for k in range(4)], [1, 2, 3, 4], [0, 1, 2, 3]
        expected = sum(
            _model_add(model, directory + n, t, z, i)
            for n, t, z, i in zip(names, times, sizes, inos, strict=True)
        )
        assert registry.load_directory(directory, names, times, sizes, inos) == expected
    elif op == "move" and src in model and src != dst:
        assert registry.move(src, dst)
        model[dst] = model.pop(src)
    elif op == "discard":
        assert registry.discard(src) == model.pop(src, None)
    elif op == "renew":
        old = model.get(src)
        assert registry.renew(src, when) == (old is not None and when > old.registered_at)
        if old is not None and when > old.registered_at:
            model[src] = old._replace(registered_at=when)
    elif op == "resize":
        assert registry.update_size(src, n2) == (src in model)
        if src in model:
            model[src] = model[src]._replace(size_bytes=n2)
    else:
        _apply_tree(registry, model, op, d1, d2)


def _apply_tree(registry: Registry, model: dict[str, Entry], op: str, d1: int, d2: int) -> None:
    top, to = _DIRS[d1 % 5], _DIRS[d2 % 5]
    if op == "tree_move" and not (to.startswith(top) or top.startswith(to)):
        assert registry.move_tree(top, to) == _model_move_tree(model, top, to)
    elif op == "tree_drop":
        doomed = [p for p in model if p.startswith(top)]
        assert registry.discard_tree(top) == len(doomed)
        for path in doomed:
            del model[path]


def _check(registry: Registry, model: dict[str, Entry], op: str) -> None:
    listed = registry.oldest_first()
    times = [entry.registered_at for _, entry in listed]
    assert times == sorted(times), f"not oldest first after {op}"
    assert dict(listed) == model
    iterated = list(registry.iter_oldest())
    assert [entry.registered_at for _, entry in iterated] == times
    assert dict(iterated) == model
    assert len(registry) == len(model)
    assert registry.total_bytes == sum(entry.size_bytes for entry in model.values())


@settings(deadline=None, max_examples=300)
@given(_OPS, st.sampled_from([1, 4, 1024]))
def test_every_directory_stays_exact_and_iteration_oldest_first(
    operations: list[tuple[str, int, int, int, int, float]], rebuild_min: int
) -> None:
    registry = Registry()
    model: dict[str, Entry] = {}
    with pytest.MonkeyPatch.context() as mp, contextlib.ExitStack() as windows:
        mp.setattr(registry_module, "_REBUILD_MIN", rebuild_min)
        window: contextlib.ExitStack | None = None
        for op, d1, n1, d2, n2, when in operations:
            if op == "window":  # open a tracking window, or close the open one
                if window is None:
                    window = windows.enter_context(contextlib.ExitStack())
                    window.enter_context(registry.tracking())
                else:
                    window.close()
                    window = None
            else:
                _apply(registry, model, op, d1, n1, d2, n2, when)
            _check(registry, model, op)
    for path, entry in model.items():
        assert path in registry and registry.get(path) == entry
        assert registry.matches(path, entry.size_bytes, entry.ino)
    assert sorted(registry.paths()) == sorted(model) == sorted(registry.times())
    assert all(not table.unsorted for table in registry._dirs.values())
    assert not dirtable._NO_FREE and not dirtable._NO_LATE, "the shared stand-ins stay empty"


def test_a_bare_name_and_a_name_at_the_root_are_two_paths() -> None:
    registry = Registry()
    registry.add("f", 1.0, 1, 1)
    registry.add("/f", 2.0, 2, 2)
    assert registry.get("f") == (1.0, 1, 1) and registry.get("/f") == (2.0, 2, 2)
    assert [p for p, _ in registry.oldest_first()] == ["f", "/f"]
    assert registry.discard_tree("/") == 1
    assert registry.paths() == ["f"]


def test_freed_slots_are_reused_and_a_churned_table_is_compacted() -> None:
    registry = Registry()
    for i in range(1000):
        registry.add(f"/t/{i}", float(i), i, i + 1)
    for i in range(900):
        assert registry.discard(f"/t/{i}") == (float(i), i, i + 1)
    (table,) = registry._dirs.values()
    assert len(table.times) < 1000, "compacted once the free slots outnumbered the live"
    for i in range(1000, 1500):
        registry.add(f"/t/{i}", float(i), i, i + 1)
    assert [p for p, _ in registry.oldest_first()] == [f"/t/{i}" for i in range(900, 1500)]
    assert all(registry.get(f"/t/{i}") == (float(i), i, i + 1) for i in range(900, 1500))
    assert registry.total_bytes == sum(range(900, 1500))
    assert len(table.times) <= 1000 + 1, "the new files took the freed slots"


def test_an_emptied_directory_leaves_no_table() -> None:
    registry = Registry()
    registry.add("/x/a/f", 1.0)
    registry.add("/x/b/g", 2.0)
    registry.discard("/x/a/f")
    registry.move("/x/b/g", "/x/c/g")
    assert [table.prefix for table in registry._dirs.values()] == ["/x/c/"]


def test_a_directory_renamed_keeps_its_table_and_its_order() -> None:
    registry = Registry()
    for i in range(5):
        registry.add(f"/r/old/sub/{i}", float(i), 1, i + 1)
    table = registry._dirs["/r/old/sub"]
    assert registry.move_tree("/r/old", "/r/new") == 5
    assert registry._dirs["/r/new/sub"] is table, "renamed, not copied entry by entry"
    assert [p for p, _ in registry.oldest_first()] == [f"/r/new/sub/{i}" for i in range(5)]


def test_paths_not_in_lists_only_the_missing() -> None:
    registry = Registry()
    for path in ("/p/a", "/p/b", "/p/q/c"):
        registry.add(path, 1.0)
    assert sorted(registry.paths_not_in({"/p/a"})) == ["/p/b", "/p/q/c"]
    assert registry.paths_not_in({"/p/a", "/p/b", "/p/q/c", "/p/other"}) == []


def test_slot_ints_are_shared_by_every_table() -> None:
    registry = Registry()
    for d in range(3):
        for i in range(300):
            registry.add(f"/s/{d}/{i}", float(i))
    slots = [table.names[str(299)] for table in registry._dirs.values()]
    assert slots[0] is slots[1] is slots[2], "one int object for slot 299, whatever the table"
    assert isinstance(registry._dirs["/s/0"], DirTable)


def test_a_directory_loaded_whole_or_name_by_name_when_it_must() -> None:
    registry = Registry()
    with registry.tracking():
        assert registry.load_directory("/w", ["b", "a"], [2.0, 1.0], [5, 6], [1, 2]) == 2
        assert registry.load_directory("/", ["top"], [0.5], [1], [3]) == 1
        assert registry.load_directory("/w/", [], [], [], []) == 0
        # A name known already keeps its time and takes the new size; one listed twice
        # counts once.
        names, times = ["a", "c", "c"], [9.0, 3.0, 4.0]
        assert registry.load_directory("/w", names, times, [7, 8, 8], [2, 4, 4]) == 1
    assert registry.get("/w/a") == (1.0, 7, 2)
    assert [p for p, _ in registry.oldest_first()] == ["/top", "/w/a", "/w/b", "/w/c"]
    assert registry.total_bytes == 7 + 5 + 1 + 8 and len(registry) == 4
