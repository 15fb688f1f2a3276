"""The registry: ordered by age, thread-safe, with moves that keep the age."""

from __future__ import annotations

import threading

from hypothesis import given
from hypothesis import strategies as st

from tempwatch.registry import Registry


def paths_oldest_first(registry: Registry) -> list[str]:
    return [path for path, _ in registry.oldest_first()]


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


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "move", "discard", "resize"]),
            st.integers(min_value=0, max_value=30),
            st.integers(min_value=0, max_value=30),
            st.floats(min_value=0, max_value=1000, allow_nan=False),
        ),
        max_size=300,
    )
)
def test_iteration_is_oldest_first_under_any_history(
    operations: list[tuple[str, int, int, float]],
) -> None:
    registry = Registry()
    model: dict[str, tuple[float, int]] = {}
    for op, a, b, when in operations:
        src, dst = f"/b/{a}", f"/b/{b}"
        if op == "add":
            registry.add(src, when, a)
            model.setdefault(src, (when, a))
            model[src] = (model[src][0], a)
        elif op == "move" and src in model and src != dst:
            registry.move(src, dst)
            model[dst] = model.pop(src)
        elif op == "discard":
            registry.discard(src)
            model.pop(src, None)
        elif op == "resize":
            registry.update_size(src, b)
            if src in model:
                model[src] = (model[src][0], b)
    times = [entry.registered_at for _, entry in registry.oldest_first()]
    assert times == sorted(times)
    assert {p: (e.registered_at, e.size_bytes) for p, e in registry.oldest_first()} == model
    assert registry.total_bytes == sum(size for _, size in model.values())
    assert len(registry) == len(model)


def test_many_late_entries_trigger_a_rebuild_and_stay_ordered() -> None:
    registry = Registry()
    registry.add("/b/newest", 1e9)
    for i in range(5000):
        registry.add(f"/b/{i}", float(5000 - i))
    times = [entry.registered_at for _, entry in registry.oldest_first()]
    assert times == sorted(times) and len(times) == 5001


def test_concurrent_updates_lose_nothing() -> None:
    registry = Registry()
    barrier = threading.Barrier(8)

    def work(worker: int) -> None:
        barrier.wait()
        for i in range(2000):
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
    expected = 8 * sum(1 for i in range(2000) if i % 2 or i % 3)
    assert len(registry) == expected == registry.total_bytes
