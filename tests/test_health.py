"""Health: each state from plain facts, then each state answered over HTTP by the server."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from tempwatch.config import CleanupConfig, Config, WatchConfig
from tempwatch.endpoint import MetricsServer
from tempwatch.health import (
    DEFAULT_GRACE_SECONDS,
    Health,
    assess,
    assess_service,
    is_pass_overdue,
)
from tempwatch.metrics import Metrics

NOW = 1_700_000_000.0
INTERVAL = 60.0


def judge(**facts: object) -> Health:
    defaults: dict[str, object] = {
        "now": NOW,
        "observer_alive": True,
        "base_dir_exists": True,
        "last_pass_at": NOW - 10,
        "interval_seconds": INTERVAL,
        "limit_pinned": False,
        "active_files": 12,
        "base_dir": "/tmp/tempwatch",
        "max_age_seconds": 3600.0,
        "started_at": NOW - 1000,
    }
    defaults.update(facts)
    return assess(**defaults)  # type: ignore[arg-type]


def test_healthy_when_all_is_well() -> None:
    health = judge()
    assert (health.status, health.http_status, health.reasons) == ("healthy", 200, [])


def test_the_body_has_the_fields_the_issue_lists() -> None:
    body = json.loads(judge().to_json())
    assert body["status"] == "healthy"
    assert body["active_files"] == 12
    assert body["base_dir"] == "/tmp/tempwatch"
    assert body["max_age"] == 3600.0
    assert body["observer_alive"] is True
    assert body["reasons"] == []
    assert datetime.fromisoformat(body["timestamp"]).timestamp() == NOW
    assert datetime.fromisoformat(body["last_pass_at"]).timestamp() == NOW - 10
    assert body["seconds_since_last_pass"] == 10
    assert body["uptime_seconds"] == 1000


def test_a_dead_observer_is_unhealthy() -> None:
    health = judge(observer_alive=False)
    assert (health.status, health.http_status) == ("unhealthy", 503)
    assert any("observer" in reason for reason in health.reasons)
    assert health.body["observer_alive"] is False


def test_a_dead_observer_says_why_and_a_recovered_failure_stays_told() -> None:
    failure = "inotify reader failed: OSError: [Errno 5] Input/output error"
    dead = judge(observer_alive=False, observer_failure=failure)
    assert dead.status == "unhealthy"
    assert dead.reasons == [
        f"the observer is not running ({failure}): new files are not being registered"
    ]
    recovered = judge(observer_restarts=1, observer_failure=failure)
    assert (recovered.status, recovered.reasons) == ("healthy", [])
    assert (recovered.body["observer_restarts"], recovered.body["observer_failure"]) == (
        1, failure,
    )


def test_a_missing_base_dir_is_unhealthy() -> None:
    health = judge(base_dir_exists=False)
    assert (health.status, health.http_status) == ("unhealthy", 503)
    assert any("/tmp/tempwatch does not exist" in reason for reason in health.reasons)


def test_a_pinned_limit_is_degraded_but_answers_200() -> None:
    health = judge(limit_pinned=True)
    assert (health.status, health.http_status) == ("degraded", 200)
    assert any("held open" in reason for reason in health.reasons)


def test_an_overdue_pass_is_degraded() -> None:
    late = NOW - 2 * INTERVAL - DEFAULT_GRACE_SECONDS - 1
    health = judge(last_pass_at=late)
    assert (health.status, health.http_status) == ("degraded", 200)
    assert health.body["pass_overdue"] is True
    assert any("no cleanup pass" in reason for reason in health.reasons)


def test_unhealthy_outranks_degraded_and_every_reason_is_listed() -> None:
    health = judge(observer_alive=False, base_dir_exists=False, limit_pinned=True)
    assert (health.status, health.http_status) == ("unhealthy", 503)
    assert len(health.reasons) == 3


@pytest.mark.parametrize(
    ("last_pass_at", "started_at", "overdue"),
    [
        (NOW - 2 * INTERVAL - 5, NOW - 10_000, False),  # inside the grace
        (NOW - 2 * INTERVAL - 5.1, NOW - 10_000, True),  # just past it
        (None, NOW - 2 * INTERVAL - 5, False),  # no pass yet: counted from the start
        (None, NOW - 2 * INTERVAL - 5.1, True),
    ],
)
def test_overdue_means_two_intervals_plus_grace(
    last_pass_at: float | None, started_at: float, overdue: bool
) -> None:
    assert (
        is_pass_overdue(
            now=NOW,
            last_pass_at=last_pass_at,
            started_at=started_at,
            interval_seconds=INTERVAL,
            grace_seconds=5.0,
        )
        is overdue
    )
    health = judge(last_pass_at=last_pass_at, started_at=started_at, grace_seconds=5.0)
    assert health.status == ("degraded" if overdue else "healthy")


def test_no_pass_yet_reports_null() -> None:
    body = judge(last_pass_at=None, started_at=NOW - 1).body
    assert body["last_pass_at"] is None and body["seconds_since_last_pass"] is None


@dataclass
class Stats:
    """The fields of Service.stats that health reads."""

    started_at: float = NOW - 100
    registered_files: int = 5
    observer_alive: bool = True
    last_pass_at: float | None = NOW - 1
    pinned_files: int = 0
    base_dir_problem: str | None = None
    sweep_denied_processes: int = 0
    observer_fallback: str | None = None
    unwatched_dirs: int = 0
    in_use_check: str = "kernel lease and /proc sweep"
    pressure_problem: str | None = None
    observer_restarts: int = 0
    observer_failure: str | None = None


def test_base_dir_no_longer_the_one_checked_is_unhealthy_with_what_it_became(
    tmp_path: Path,
) -> None:
    config = Config(watch=WatchConfig(base_dir=tmp_path))
    changed = Stats(observer_alive=False, base_dir_problem="has another mount over it (mount id 9)")
    health = assess_service(changed, config, now=NOW, base_dir_exists=True)
    assert (health.status, health.http_status) == ("unhealthy", 503)
    # The observer is stopped on purpose: the one reason is the directory.
    assert health.reasons == [
        f"base_dir {tmp_path} has another mount over it (mount id 9): nothing is cleaned"
    ]
    assert health.body["base_dir_problem"] == "has another mount over it (mount id 9)"
    assert assess_service(Stats(), config, now=NOW, base_dir_exists=True).body[
        "base_dir_problem"] is None


def test_assess_service_reads_the_stats_and_the_config_in_force(tmp_path: Path) -> None:
    config = Config(
        watch=WatchConfig(base_dir=tmp_path),
        cleanup=CleanupConfig(max_age_seconds=90.0, interval_seconds=10.0),
    )
    health = assess_service(Stats(), config, now=NOW, base_dir_exists=True)
    assert health.status == "healthy"
    assert health.body["base_dir"] == str(tmp_path)
    assert health.body["max_age"] == 90.0
    assert health.body["active_files"] == 5
    assert assess_service(Stats(pinned_files=2), config, now=NOW, base_dir_exists=True).status == (
        "degraded"
    )
    # The interval comes from the config: 2 x 10 s + 30 s of grace.
    late = Stats(last_pass_at=NOW - 51)
    assert assess_service(late, config, now=NOW, base_dir_exists=True).status == "degraded"
    assert assess_service(Stats(last_pass_at=NOW - 49), config, now=NOW,
                          base_dir_exists=True).status == "healthy"
    no_lease = "/proc sweep only (leases refused here (Invalid argument))"
    blind = assess_service(Stats(sweep_denied_processes=3, in_use_check=no_lease), config,
                           now=NOW, base_dir_exists=True)
    assert (blind.status, blind.http_status, blind.body["sweep_denied_processes"]) == (
        "degraded", 200, 3)
    assert blind.reasons == [
        "the open-file check cannot inspect 3 processes: files they hold open look closed "
        "and may be deleted"
    ]
    # With the kernel lease in force their files are still kept: only names are missing.
    named_less = assess_service(Stats(sweep_denied_processes=3), config, now=NOW,
                                base_dir_exists=True)
    assert (named_less.status, named_less.body["sweep_denied_processes"]) == ("healthy", 3)
    dead = assess_service(Stats(observer_alive=False), config, now=NOW, base_dir_exists=True)
    assert dead.http_status == 503
    gone = assess_service(Stats(), config, now=NOW, base_dir_exists=False)
    assert gone.http_status == 503


@dataclass
class Facts:
    """What a service would know about itself; the test changes it between requests."""

    base_dir: Path
    observer_alive: bool = True
    limit_pinned: bool = False
    last_pass_at: float | None = NOW - 5
    active_files: int = 0
    now: list[float] = field(default_factory=lambda: [NOW])

    def health(self) -> Health:
        return assess(
            now=self.now[0],
            observer_alive=self.observer_alive,
            base_dir_exists=os.path.isdir(self.base_dir),
            last_pass_at=self.last_pass_at,
            interval_seconds=INTERVAL,
            limit_pinned=self.limit_pinned,
            active_files=self.active_files,
            base_dir=self.base_dir,
            max_age_seconds=600.0,
            started_at=NOW - 100,
        )


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.headers["Content-Type"] == "application/json"
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        with e:
            assert e.headers["Content-Type"] == "application/json"
            return e.code, json.loads(e.read())


def test_healthz_answers_each_state_over_http(tmp_path: Path) -> None:
    base = tmp_path / "watched"
    base.mkdir()
    facts = Facts(base_dir=base, active_files=4)
    with MetricsServer(Metrics(), port=0, health=facts.health) as server:
        url = server.url + "/healthz"
        status, body = get(url)
        assert (status, body["status"], body["active_files"]) == (200, "healthy", 4)
        assert body["base_dir"] == str(base)

        facts.limit_pinned = True
        status, body = get(url)
        assert (status, body["status"]) == (200, "degraded")
        facts.limit_pinned = False

        facts.now[0] = NOW + 3 * INTERVAL + DEFAULT_GRACE_SECONDS
        status, body = get(url)
        assert (status, body["status"], body["pass_overdue"]) == (200, "degraded", True)
        facts.now[0] = NOW

        facts.observer_alive = False
        status, body = get(url)
        assert (status, body["status"], body["observer_alive"]) == (503, "unhealthy", False)
        facts.observer_alive = True

        shutil.rmtree(base)
        status, body = get(url)
        assert (status, body["status"], body["base_dir_exists"]) == (503, "unhealthy", False)

        base.mkdir()
        status, body = get(url)
        assert (status, body["status"]) == (200, "healthy")


def test_healthz_reports_a_failing_source_as_500() -> None:
    def broken() -> Health:
        raise RuntimeError("stats unavailable")

    with MetricsServer(Metrics(), port=0, health=broken) as server:
        status, body = get(server.url + "/healthz")
    assert status == 500
    assert body["status"] == "unknown" and "stats unavailable" in str(body["error"])
