"""`tempwatch status`: what is in base_dir, how old, and what a clean would remove now."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Container
from dataclasses import asdict, dataclass, field

from tempwatch.config import Config
from tempwatch.oneshot import limits_of, read_disk
from tempwatch.policy import plan_pass
from tempwatch.units import format_age, format_size, printable

__all__ = ["AgeBucket", "StatusReport", "gather_status", "render_text"]

# Upper bounds of the age histogram's buckets, in seconds.
_BUCKETS: tuple[tuple[str, float], ...] = (
    ("< 1m", 60),
    ("1m-10m", 600),
    ("10m-1h", 3600),
    ("1h-6h", 6 * 3600),
    ("6h-1d", 86400),
    ("1d-7d", 7 * 86400),
    (">= 7d", float("inf")),
)
_BAR_WIDTH = 30


@dataclass(slots=True)
class AgeBucket:
    """Files and bytes whose age falls in one range."""

    label: str
    files: int = 0
    size_bytes: int = 0


@dataclass(slots=True)
class StatusReport:
    """Everything `status` shows, JSON-serialisable with `to_json`."""

    base_dir: str
    files: int
    total_bytes: int
    oldest_path: str | None
    oldest_age_seconds: float | None
    buckets: list[AgeBucket]
    would_remove: dict[str, int] = field(default_factory=dict)  # reason -> files
    would_remove_bytes: int = 0
    skipped_open: int = 0
    scan_errors: int = 0

    def to_json(self) -> str:
        """The report as one JSON object."""
        return json.dumps(asdict(self), indent=2)


def gather_status(
    config: Config, *, open_paths: Container[str], clock: Callable[[], float] = time.time
) -> StatusReport:
    """Scan base_dir and ask the policy what a clean would do, deleting nothing."""
    state = read_disk(config)
    now = clock()
    entries = state.registry.oldest_first()
    buckets = [AgeBucket(label) for label, _ in _BUCKETS]
    for _, entry in entries:
        age = now - entry.registered_at
        index = next(i for i, (_, bound) in enumerate(_BUCKETS) if age < bound)
        buckets[index].files += 1
        buckets[index].size_bytes += entry.size_bytes
    plan = plan_pass(entries, now=now, limits=limits_of(config), open_paths=open_paths)
    oldest = entries[0] if entries else None
    return StatusReport(
        base_dir=str(config.watch.base_dir),
        files=len(entries),
        total_bytes=state.registry.total_bytes,
        oldest_path=oldest[0] if oldest else None,
        oldest_age_seconds=round(now - oldest[1].registered_at, 3) if oldest else None,
        buckets=buckets,
        would_remove=dict(Counter(d.reason.value for d in plan.deletions)),
        would_remove_bytes=sum(d.size_bytes for d in plan.deletions),
        skipped_open=len(plan.skipped_open),
        scan_errors=len(state.scan.errors),
    )


def render_text(report: StatusReport) -> str:
    """A short human summary with a histogram of files and bytes by age."""
    lines = [
        f"base_dir: {printable(report.base_dir)}",
        f"files:    {report.files} ({format_size(report.total_bytes)})",
    ]
    if report.oldest_path is not None and report.oldest_age_seconds is not None:
        age = format_age(report.oldest_age_seconds)
        lines.append(f"oldest:   {printable(report.oldest_path)} ({age} old)")
    lines.append("")
    lines.append(f"{'age':<8} {'files':>8} {'bytes':>10}")
    widest = max((b.files for b in report.buckets), default=0) or 1
    for bucket in report.buckets:
        bar = "#" * round(_BAR_WIDTH * bucket.files / widest)
        lines.append(
            f"{bucket.label:<8} {bucket.files:>8} {format_size(bucket.size_bytes):>10} {bar}"
        )
    lines.append("")
    if report.would_remove:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(report.would_remove.items()))
        lines.append(
            f"a clean now would remove {sum(report.would_remove.values())} files "
            f"({format_size(report.would_remove_bytes)}): {reasons}"
        )
    else:
        lines.append("a clean now would remove nothing")
    if report.skipped_open:
        lines.append(f"{report.skipped_open} files that would go are open and would be kept")
    if report.scan_errors:
        lines.append(f"{report.scan_errors} entries could not be read")
    return "\n".join(lines)
