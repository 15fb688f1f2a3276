"""Per-pattern rules: which rule governs a path (plain data), and the service and clean obeying."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from types import SimpleNamespace

from support import wait_for

from tempwatch.age import DEFAULT_AGE_BY
from tempwatch.config import CleanupConfig, Config, LimitsConfig, WatchConfig
from tempwatch.directory import limits_of
from tempwatch.oneshot import clean_once
from tempwatch.policy import Limits, Reason, plan_pass
from tempwatch.registry import Entry
from tempwatch.rules import Rule, RuleSet, rule_for
from tempwatch.service import Service

RULES = (
    Rule("*.pid", keep=True),
    Rule("keep/**", keep=True),
    Rule("*.log", max_age_seconds=7 * 86400.0),
    Rule("cache/*.bin", max_file_size_bytes=100),
    Rule("*.log", max_age_seconds=1.0),  # never reached: an earlier rule matches first
    Rule("atime/*", age_by=frozenset({"accessed"})),
)


def rule_set(rules: tuple[Rule, ...] = RULES) -> RuleSet:
    return RuleSet(
        "/base", rules, max_age_seconds=3600.0, max_file_size_bytes=0, age_by=DEFAULT_AGE_BY
    )


def test_the_first_matching_rule_wins() -> None:
    assert rule_for("app.pid", RULES) == 0
    assert rule_for("run/app.pid", RULES) == 0, "a pattern without / matches at any depth"
    assert rule_for("keep/a/b/c.log", RULES) == 1, "keep/** wins over *.log: it comes first"
    assert rule_for("x.log", RULES) == 2
    assert rule_for("cache/blob.bin", RULES) == 3
    assert rule_for("cache/sub/blob.bin", RULES) is None, "* stays within one component"
    assert rule_for("other.tmp", RULES) is None


def test_a_pattern_matching_a_directory_governs_everything_below_it() -> None:
    directory_rule = (Rule("build", max_age_seconds=60.0),)
    assert rule_for("build/obj/x.o", directory_rule) == 0
    assert rule_for("keep/x", RULES) == 1
    assert rule_for("atime/deep/file", RULES) == 5


def test_the_governing_settings_fall_back_to_the_directorys() -> None:
    rules = rule_set()
    assert rules.governing("/base/a.pid").keep
    assert rules.is_kept("/base/keep/x/y")
    log = rules.governing("/base/x.log")
    assert (log.keep, log.max_age_seconds, log.max_file_size_bytes) == (False, 7 * 86400.0, 0)
    assert log.age_by == DEFAULT_AGE_BY and log.rule_index == 2
    assert rules.governing("/base/cache/b.bin").max_file_size_bytes == 100
    assert rules.age_by_for("/base/atime/f") == {"accessed"}
    assert rules.governing("/base/other") == rules.default
    assert rules.governing("/elsewhere/a.pid") == rules.default, "outside the directory"


def test_scanned_files_kept_by_a_rule_are_left_out_and_the_rest_aged_by_their_rule() -> None:
    files = [
        SimpleNamespace(path=f"/base/{name}", mtime=100.0, ctime=200.0, atime=300.0)
        for name in ("a.pid", "x.log", "atime/f")
    ]
    aged = [(info.path, at) for info, at in rule_set().aged(files)]  # type: ignore[arg-type]
    assert aged == [("/base/x.log", 200.0), ("/base/atime/f", 300.0)]


def test_the_policy_applies_each_files_rule() -> None:
    now = 10 * 86400.0
    entries = [
        ("/base/old.pid", Entry(0.0, 1, 1)),  # kept, however old
        ("/base/old.log", Entry(now - 2 * 86400, 1, 2)),  # 2 days < 7 days: stays
        ("/base/old.tmp", Entry(now - 2 * 86400, 1, 3)),  # > 1h: expired
        ("/base/cache/big.bin", Entry(now - 10, 500, 4)),  # > 100 bytes: oversize
        ("/base/young.tmp", Entry(now - 10, 1, 5)),
    ]
    limits = Limits(max_age_seconds=3600.0, age_by=DEFAULT_AGE_BY, rules=rule_set())
    plan = plan_pass(entries, now=now, limits=limits, open_paths=set())
    assert {(d.path, d.reason) for d in plan.deletions} == {
        ("/base/old.tmp", Reason.EXPIRED),
        ("/base/cache/big.bin", Reason.OVERSIZE),
    }
    expired = next(d for d in plan.deletions if d.reason is Reason.EXPIRED)
    assert expired.age_check is not None and expired.age_check.cutoff == now - 3600.0


def test_kept_files_do_not_count_against_the_limits() -> None:
    entries = [(f"/base/{i}.pid", Entry(float(i), 1, i + 1)) for i in range(5)]
    entries.append(("/base/a.tmp", Entry(10.0, 1, 99)))
    limits = Limits(max_age_seconds=3600.0, max_files=2, rules=rule_set())
    plan = plan_pass(entries, now=11.0, limits=limits, open_paths=set())
    assert plan.deletions == () and not plan.pinned


# --- on a real filesystem -------------------------------------------------------------------


def make_config(base: Path, rules: tuple[Rule, ...], **cleanup: object) -> Config:
    return Config(
        watch=WatchConfig(base_dir=base, rescan_interval_seconds=3600.0),
        cleanup=dataclasses.replace(
            CleanupConfig(max_age_seconds=3600.0, interval_seconds=3600.0, skip_open_files=False),
            **cleanup,  # type: ignore[arg-type]
        ),
        limits=LimitsConfig(max_files=0, max_file_size_bytes=0),
        rules=rules,
    )


def test_the_service_and_clean_obey_first_match_and_keep(base: Path) -> None:
    rules = (
        Rule("*.pid", keep=True),
        Rule("keep/**", keep=True),
        Rule("*.log", age_by=frozenset({"modified"})),  # the rest: by last use, the default
    )
    (base / "keep" / "deep").mkdir(parents=True)
    names = ["app.pid", "keep/deep/state.log", "old.log", "old.tmp"]
    for name in names:
        (base / name).write_bytes(b"x")
        os.utime(base / name, (1_000_000, 1_000_000))  # old by mtime, young by ctime
    config = make_config(base, rules, dry_run=True)
    report, _ = clean_once(config)
    assert [d.path for d, _ in report.deleted] == [str(base / "old.log")]
    with Service(make_config(base, rules)) as service:
        assert set(service.registry.paths()) == {str(base / "old.log"), str(base / "old.tmp")}
        (base / "late.pid").write_bytes(b"x")
        (base / "sentinel").write_bytes(b"x")
        wait_for(lambda: str(base / "sentinel") in service.registry, message="events seen")
        assert str(base / "late.pid") not in service.registry, "kept: never registered"
        assert [d.path for d, _ in service.run_pass_now().deleted] == [str(base / "old.log")]
    assert all((base / name).exists() for name in names if name != "old.log")
    limits = limits_of(config)
    assert limits.rules is not None and limits.rules.is_kept(str(base / "app.pid"))


def test_a_per_rule_size_limit_is_enforced_as_files_close(base: Path) -> None:
    config = dataclasses.replace(
        make_config(base, (Rule("*.bin", max_file_size_bytes=10),)),
        limits=LimitsConfig(max_files=0, max_file_size_bytes=0),
    )
    with Service(config) as service:
        (base / "big.bin").write_bytes(b"x" * 100)
        (base / "big.txt").write_bytes(b"x" * 100)
        wait_for(lambda: not (base / "big.bin").exists(), message="oversize *.bin removed")
        assert (base / "big.txt").exists(), "no per-file limit outside the rule"
        # Its registration may land just after the *.bin eviction: wait for it, not race it.
        wait_for(lambda: str(base / "big.txt") in service.registry, message="big.txt registered")
