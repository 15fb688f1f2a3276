"""`python -m bench_lib`: what scripts/bench runs."""

from __future__ import annotations

import sys

from bench_lib.cli import main

__all__: list[str] = []

sys.exit(main())
