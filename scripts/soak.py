"""A soak of `tempwatch run` under mixed load (issue 13); run by scripts/soak, not in CI.

For `--minutes` (30 by default) it drives the service with creates, writes, renames,
deletes and `mkdir -p` across 100 directories at a few thousand operations a second, with
the limits active, one file held open the whole time and a SIGHUP every minute. Once a
minute it pauses the load, lets the service settle, and checks that the registry equals
the disk (file count and bytes, from /metrics against a walk of base_dir); it samples the
service's RSS. At the end it prints a Markdown summary (and writes it with --out):
drift seen, RSS growth after the first 5 minutes, error lines in the log.

Goal: zero drift, RSS growth under 5 % after the first 5 minutes, no error lines.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DIRECTORIES = 100
SETTLE_SECONDS = 3.0  # after the load pauses: events drained, enforcer done


@dataclass
class Sample:
    minute: int
    ops: int
    registered: int
    on_disk: int
    registered_bytes: int
    disk_bytes: int
    rss_kib: int

    @property
    def drift(self) -> int:
        return abs(self.registered - self.on_disk)


@dataclass
class Load:
    """The load generator: one process's worth of mixed file operations in `base`."""

    base: Path
    rng: random.Random = field(default_factory=lambda: random.Random(13))
    ops: int = 0
    serial: int = 0

    def step(self) -> None:
        d = self.base / f"d{self.rng.randrange(DIRECTORIES):03}"
        roll = self.rng.random()
        try:
            if roll < 0.40:
                self.serial += 1
                (d / f"f{self.serial}").write_bytes(b"x" * self.rng.randrange(0, 8192))
            elif roll < 0.55:
                victim = self._pick(d)
                if victim is not None:
                    with victim.open("ab") as f:
                        f.write(b"y" * self.rng.randrange(1, 4096))
            elif roll < 0.70:
                victim = self._pick(d)
                if victim is not None:
                    other = self.base / f"d{self.rng.randrange(DIRECTORIES):03}"
                    self.serial += 1
                    victim.rename(other / f"r{self.serial}")
            elif roll < 0.90:
                victim = self._pick(d)
                if victim is not None:
                    victim.unlink()
            elif roll < 0.97:
                self.serial += 1
                deep = d / f"p{self.serial % 7}" / f"q{self.serial % 5}"
                deep.mkdir(parents=True, exist_ok=True)
                (deep / f"n{self.serial}").write_bytes(b"z")
            else:
                sub = d / f"p{self.rng.randrange(7)}"
                if sub.is_dir():
                    shutil.rmtree(sub, ignore_errors=True)
        except OSError:
            pass  # raced with the service's own deletions: that is the point
        self.ops += 1

    def _pick(self, d: Path) -> Path | None:
        try:
            with os.scandir(d) as entries:
                files = [e.path for e in entries if e.is_file(follow_symlinks=False)]
        except OSError:
            return None
        return Path(self.rng.choice(files)) if files else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _metrics(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            found[name] = float(value)
    return found


def _disk(base: Path) -> tuple[int, int]:
    """Regular files under `base` and their bytes: what the registry should hold."""
    count = size = 0
    for root, _, names in os.walk(base):
        for name in names:
            if name == ".tempwatch.lock":
                continue
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):  # not the service's health socket, say
                count += 1
                size += st.st_size
    return count, size


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _settled(url: str, base: Path) -> tuple[int, int, int, int]:
    """The registry's count and bytes against the disk's, taken between two walks.

    With the load paused the service only deletes (expiry, evictions), from the disk first
    and from the registry right after, so the registry read between two walks must lie
    between them: above the first walk is a ghost entry, below the second an unregistered
    file. Returns (registered, on disk, registered bytes, disk bytes), the disk figures being
    the walk the registry strays from (the first walk when it agrees). Tried again for a
    few seconds, so that a deletion caught between its unlink and its entry does not count.
    """
    deadline = time.monotonic() + 10
    while True:
        first = _disk(base)
        m = _metrics(url)
        last = _disk(base)
        registered, registered_bytes = int(m["temp_files_active"]), int(m["temp_files_bytes"])
        count_ok = last[0] <= registered <= first[0]
        bytes_ok = last[1] <= registered_bytes <= first[1]
        if (count_ok and bytes_ok) or time.monotonic() > deadline:
            disk = first if registered >= first[0] else last
            if count_ok and bytes_ok:
                disk = (registered, registered_bytes)  # within the walks: no drift
            return registered, disk[0], registered_bytes, disk[1]
        time.sleep(0.2)  # a script, not a test: waiting for a deletion to settle


def _config(path: Path, base: Path, port: int, log: Path) -> None:
    path.write_text("\n".join([
        "[watch]", f'base_dir = "{base}"', 'rescan_interval = "1m"',
        "[cleanup]", 'max_age = "20s"', 'interval = "2s"',
        "[limits]", "max_files = 20000", 'max_file_size = "64KiB"', 'max_total_size = "64MiB"',
        "[metrics]", "enabled = true", 'address = "127.0.0.1"', f"port = {port}",
        "[log]", 'level = "INFO"', 'format = "json"', f'file = "{log}"',
    ]) + "\n")


def soak(minutes: float, rate: int, workdir: Path) -> tuple[list[Sample], dict[str, int], int]:
    base = workdir / "base"
    base.mkdir()
    for i in range(DIRECTORIES):
        (base / f"d{i:03}").mkdir()
    port, log = _free_port(), workdir / "tempwatch.jsonl"
    config = workdir / "config.toml"
    _config(config, base, port, log)
    url = f"http://127.0.0.1:{port}"
    service = subprocess.Popen(
        [sys.executable, "-m", "tempwatch", "run", "-c", str(config)], cwd=REPO,
        stderr=subprocess.DEVNULL,
    )
    held = base / "held-open"
    held.write_bytes(b"h" * 1000)
    holder = subprocess.Popen([sys.executable, "-c", "import sys,time; f=open(sys.argv[1]);"
                               " sys.stdin.read()", str(held)], stdin=subprocess.PIPE)
    samples: list[Sample] = []
    load = Load(base)
    try:
        _wait_up(url, service)
        started = time.monotonic()
        for minute in range(1, int(minutes) + 1):
            until = started + minute * 60
            while time.monotonic() < until:
                tick = time.monotonic()
                for _ in range(max(1, rate // 20)):
                    load.step()
                spare = 0.05 - (time.monotonic() - tick)
                if spare > 0:
                    time.sleep(spare)  # pace the load at `rate` operations a second
            service.send_signal(signal.SIGHUP)
            time.sleep(SETTLE_SECONDS)
            registered, on_disk, registered_bytes, disk_bytes = _settled(url, base)
            sample = Sample(minute, load.ops, registered, on_disk, registered_bytes, disk_bytes,
                            _rss_kib(service.pid))
            samples.append(sample)
            print(f"soak: minute {minute}: {sample.ops} ops, registered {registered}, "
                  f"on disk {on_disk}, bytes {registered_bytes}/{disk_bytes}, "
                  f"rss {sample.rss_kib} KiB", flush=True)
    finally:
        if holder.stdin is not None:
            holder.stdin.close()
        holder.wait(timeout=10)
        service.send_signal(signal.SIGTERM)
        code = service.wait(timeout=30)
    levels: dict[str, int] = {}
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        level = record.get("level", "?")
        levels[level] = levels.get(level, 0) + 1
        if level != "INFO" and level != "DEBUG":  # which events: "WARNING rescan", ...
            key = f"{level} {record.get('event', '?')}"
            levels[key] = levels.get(key, 0) + 1
    return samples, levels, code


def _wait_up(url: str, service: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise SystemExit(f"soak: tempwatch exited with {service.returncode}")
        try:
            _metrics(url)
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("soak: tempwatch did not come up within 60 s")


def report(samples: list[Sample], levels: dict[str, int], code: int, minutes: float) -> str:
    drift = max((s.drift for s in samples), default=0)
    byte_drift = max((abs(s.registered_bytes - s.disk_bytes) for s in samples), default=0)
    after5 = [s for s in samples if s.minute >= 5] or samples
    growth = (after5[-1].rss_kib - after5[0].rss_kib) / after5[0].rss_kib * 100 if after5 else 0
    errors = levels.get("ERROR", 0) + levels.get("CRITICAL", 0)
    total_ops = samples[-1].ops if samples else 0
    events = sorted((n, key) for key, n in levels.items() if " " in key)
    by_event = "".join(f"; {key}: {n}" for n, key in reversed(events))
    ok = drift == 0 and byte_drift == 0 and growth < 5 and errors == 0 and code == 0
    lines = [
        f"Soak: {minutes:g} min, {total_ops} operations "
        f"({total_ops / max(1, len(samples) * 60):.0f}/s), 100 directories, a SIGHUP a minute.",
        "",
        "| check | goal | result |",
        "|---|---|---|",
        f"| registry vs disk, files (worst of {len(samples)} checks, between two walks) "
        f"| 0 | {drift} |",
        f"| registry vs disk, bytes | 0 | {byte_drift} |",
        f"| RSS growth after minute {after5[0].minute if after5 else 5} | < 5% | {growth:+.1f}% "
        f"({after5[0].rss_kib if after5 else 0} -> {after5[-1].rss_kib if after5 else 0} KiB) |",
        f"| error lines | 0 | {errors} (warnings: {levels.get('WARNING', 0)}{by_event}) |",
        f"| exit status after SIGTERM | 0 | {code} |",
        "",
        f"Verdict: {'met' if ok else 'NOT met'}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=3000, help="operations a second")
    parser.add_argument("--dir", type=Path, default=Path("/dev/shm"),
                        help="where to make the soak's base_dir (default /dev/shm)")
    parser.add_argument("--out", type=Path, help="also write the summary to this file")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="tempwatch-soak-", dir=args.dir))
    try:
        samples, levels, code = soak(args.minutes, args.rate, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = report(samples, levels, code, args.minutes)
    print(text, end="")
    if args.out is not None:
        args.out.write_text(text)
    return 0 if "Verdict: met" in text else 1


if __name__ == "__main__":
    sys.exit(main())
