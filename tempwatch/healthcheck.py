"""`tempwatch health`: every configured directory asked over its socket, one verdict.

Each directory the config names is asked on its own socket (`tempwatch.healthsocket`), all
at once, so that one hung answer costs the timeout once. A directory that does not answer
counts as unhealthy: a directory in the config that no process serves (a reload that
failed for it, an edit not yet reloaded) is what a health check is there to catch. The
check passes, exit status 0, only when every directory answers healthy or degraded.

A config with one directory keeps the single answer's form (text and JSON); with several,
the text names each directory on its own line and the JSON is /healthz's form for several
directories: the worst status and each directory's body under "directories".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tempwatch.healthsocket import ServiceUnreachable, ask_health

__all__ = ["Answer", "ask_each", "is_passing", "render_json", "render_text"]

_PASSING = ("healthy", "degraded")
_RANK = {"healthy": 0, "degraded": 1}  # anything else ranks as unhealthy


@dataclass(frozen=True, slots=True)
class Answer:
    """One directory's answer: the service's health body, or why nothing answered."""

    base_dir: str
    body: dict[str, object] | None
    unreachable: str | None = None  # a one-line reason when `body` is None

    @property
    def status(self) -> str:
        """The status the service gave, "unreachable" when none answered."""
        if self.body is None:
            return "unreachable"
        return str(self.body.get("status"))

    @property
    def is_passing(self) -> bool:
        """Healthy or degraded."""
        return self.status in _PASSING


def ask_each(base_dirs: Sequence[str], *, timeout_seconds: float) -> list[Answer]:
    """Ask every directory's service at once; the answers in the order given."""

    def ask(base_dir: str) -> Answer:
        try:
            body = ask_health(base_dir, timeout_seconds=timeout_seconds)
        except ServiceUnreachable as e:
            return Answer(base_dir, None, str(e))
        body.pop("config_toml", None)  # for `status` to judge with; /healthz has none
        return Answer(base_dir, body)

    if len(base_dirs) == 1:
        return [ask(base_dirs[0])]
    with ThreadPoolExecutor(max_workers=min(8, len(base_dirs))) as pool:
        return list(pool.map(ask, base_dirs))


def is_passing(answers: Sequence[Answer]) -> bool:
    """Whether every directory answered healthy or degraded."""
    return all(answer.is_passing for answer in answers)


def _worst(answers: Sequence[Answer]) -> str:
    worst = max((_RANK.get(a.status, 2) for a in answers), default=2)
    return ("healthy", "degraded", "unhealthy")[worst]


def render_json(answers: Sequence[Answer]) -> str:
    """One directory: its body. Several: the worst status and each directory's body."""
    if len(answers) == 1 and answers[0].body is not None:
        return json.dumps(answers[0].body, sort_keys=True)
    directories = {
        a.base_dir: a.body if a.body is not None else {
            "status": "unreachable", "reasons": [a.unreachable]
        }
        for a in answers
    }
    return json.dumps({"status": _worst(answers), "directories": directories}, sort_keys=True)


def render_text(answers: Sequence[Answer]) -> str:
    """A line per directory, "status: N files in DIR", each reason indented below it."""
    lines: list[str] = []
    for answer in answers:
        body = answer.body
        if body is None:
            lines.append(f"unreachable: {answer.unreachable}")
            continue
        lines.append(f"{answer.status}: {body.get('active_files')} files in {answer.base_dir}")
        reasons = body.get("reasons")
        lines += [f"  {reason}" for reason in (reasons if isinstance(reasons, list) else [])]
    return "\n".join(lines)
