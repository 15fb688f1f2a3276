"""Results of the benchmarks: samples, medians and ratios, as a markdown table and as JSON.

Every figure compares tempwatch (the subject) with one or more peers measured in the same run
on the same data. Ratios are tempwatch's median divided by the peer's median, whatever the
unit: the `better` column says which direction wins, so a ratio needs no sign convention.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "BenchResult",
    "Figure",
    "Goal",
    "Series",
    "filesystem_of",
    "machine_info",
    "render_json",
    "render_markdown",
]


@dataclass(slots=True)
class Series:
    """The samples of one reader or tool for one figure; empty samples mean not measured."""

    name: str
    samples: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "samples": self.samples,
            "median": self.median,
            "min": min(self.samples) if self.samples else None,
            "max": max(self.samples) if self.samples else None,
            "runs": len(self.samples),
            "note": self.note,
        }


@dataclass(slots=True)
class Figure:
    """One measured quantity: tempwatch against each peer."""

    label: str
    unit: str
    higher_is_better: bool
    subject: Series
    peers: list[Series] = field(default_factory=list)

    def ratio(self, peer: Series) -> float | None:
        """tempwatch's median over the peer's median, or None when either is missing."""
        mine, theirs = self.subject.median, peer.median
        if mine is None or theirs is None or theirs == 0:
            return None
        return mine / theirs

    def to_json(self) -> dict[str, object]:
        return {
            "label": self.label,
            "unit": self.unit,
            "better": "higher" if self.higher_is_better else "lower",
            "subject": self.subject.to_json(),
            "peers": [
                {**peer.to_json(), "ratio_tempwatch_over_peer": self.ratio(peer)}
                for peer in self.peers
            ],
        }


@dataclass(slots=True)
class Goal:
    """A goal of the issue, and whether this run met it (None: could not be judged)."""

    text: str
    met: bool | None
    detail: str


@dataclass(slots=True)
class BenchResult:
    """Everything one benchmark measured."""

    key: str
    title: str
    params: dict[str, object]
    figures: list[Figure] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "title": self.title,
            "params": self.params,
            "figures": [figure.to_json() for figure in self.figures],
            "goals": [{"text": g.text, "met": g.met, "detail": g.detail} for g in self.goals],
            "notes": self.notes,
            "raw": self.raw,
            "seconds": round(self.seconds, 2),
            "error": self.error,
        }


def filesystem_of(path: str | os.PathLike[str]) -> str:
    """The filesystem type of the mount holding `path` (longest matching mount point)."""
    target = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, fields[2]
    except OSError:
        pass
    return kind


def _first_line(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None and not os.path.exists(command[0]):
        return None
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_info(workdir: str) -> dict[str, object]:
    """Cores, kernel, CPU, memory, the work directory's filesystem, and the peers' versions."""
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    tmpreaper = shutil.which("tmpreaper") or (
        "/usr/sbin/tmpreaper" if os.path.exists("/usr/sbin/tmpreaper") else None
    )
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "memory_gib": round(pages / 1024**3, 1),
        "python": platform.python_version(),
        "workdir": workdir,
        "filesystem": filesystem_of(workdir),
        "inotify_max_queued_events": _read_int("/proc/sys/fs/inotify/max_queued_events"),
        "versions": {
            "watchdog": _package_version("watchdog"),
            "psutil": _package_version("psutil"),
            "inotify_simple": _package_version("inotify_simple"),
            "find": _first_line(["find", "--version"]),
            "systemd-tmpfiles": _first_line(["systemd-tmpfiles", "--version"]),
            "tmpreaper": _first_line([tmpreaper, "--help"]) if tmpreaper else None,
        },
    }


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _ratio_text(ratio: float | None) -> str:
    if ratio is None:
        return "–"
    return f"{ratio:.2f}×" if ratio >= 0.1 else f"{ratio:.2g}×"


def _rows(result: BenchResult) -> list[str]:
    rows: list[str] = []
    for figure in result.figures:
        better = "higher" if figure.higher_is_better else "lower"
        for series in [figure.subject, *figure.peers]:
            if series is figure.subject:
                ratios = "; ".join(
                    f"{_ratio_text(figure.ratio(peer))} {peer.name}" for peer in figure.peers
                )
            else:
                ratios = _ratio_text(figure.ratio(series))
            stats = (
                [_fmt(series.median), _fmt(min(series.samples)), _fmt(max(series.samples))]
                if series.samples
                else ["–", "–", "–"]
            )
            name = f"**{series.name}**" if series is figure.subject else series.name
            note = f" ({series.note})" if series.note else ""
            rows.append(
                f"| {result.key} | {figure.label} | {name}{note} | {' | '.join(stats)} | "
                f"{figure.unit}, {better} is better | {len(series.samples)} | {ratios} |"
            )
    return rows


def render_markdown(
    results: list[BenchResult], machine: dict[str, object], date: dt.datetime, mode: str
) -> str:
    """The table of every figure, the goals met or missed, and the machine."""
    versions = machine.get("versions", {})
    assert isinstance(versions, dict)
    lines = [
        f"# tempwatch benchmarks ({mode} run, {date.strftime('%Y-%m-%d %H:%M UTC')})",
        "",
        f"Machine: {machine['cores']} cores ({machine['cpu']}), Linux {machine['kernel']}, "
        f"{machine['memory_gib']} GiB RAM, Python {machine['python']}; work directory "
        f"{machine['workdir']} on {machine['filesystem']}; inotify max_queued_events "
        f"{machine['inotify_max_queued_events']}.",
        "Peers: " + ", ".join(f"{k} {v or 'missing'}" for k, v in versions.items()) + ".",
        "",
        "Ratio: tempwatch's median ÷ the peer's median (the unit says which way is better).",
        "",
        "| # | figure | reader / tool | median | min | max | unit | runs | tempwatch ÷ peer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        lines += _rows(result)
    lines += ["", "## Goals", "", "| # | goal | result | detail |", "|---|---|---|---|"]
    for result in results:
        if result.error:
            lines.append(f"| {result.key} | {result.title} | error | {result.error} |")
        for goal in result.goals:
            verdict = {True: "met", False: "**missed**", None: "not judged"}[goal.met]
            lines.append(f"| {result.key} | {goal.text} | {verdict} | {goal.detail} |")
    lines += ["", "## Benchmarks", ""]
    for result in results:
        params = ", ".join(f"{k}={v}" for k, v in result.params.items())
        lines.append(f"- **{result.key}. {result.title}** ({result.seconds:.0f} s; {params})")
        lines += [f"  - {note}" for note in result.notes]
    return "\n".join(lines) + "\n"


def render_json(
    results: list[BenchResult], machine: dict[str, object], date: dt.datetime, mode: str
) -> str:
    """The same content as the table, with every sample."""
    document = {
        "date": date.isoformat(),
        "mode": mode,
        "machine": machine,
        "benchmarks": {result.key: result.to_json() for result in results},
    }
    return json.dumps(document, indent=2) + "\n"
