# Sourced by scripts/run and scripts/test, which then call `tempwatch_venv [EXTRA]`.
# It takes no arguments itself: a script sourced without arguments sees its caller's, and
# reading the caller's first argument as a pip extra is how `scripts/run --help` once broke.
# Sets TEMPWATCH_ROOT (the checkout) and leaves the caller's working directory alone, so
# relative paths among the caller's arguments keep meaning what the user meant.
set -euo pipefail
TEMPWATCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Make $TEMPWATCH_ROOT/.venv if missing and install the project into it (with EXTRA, e.g.
# "dev"), again only when pyproject.toml or constraints.txt changed since the last install.
# Every dependency gets the exact version constraints.txt pins (scripts/refresh-constraints
# updates it, on purpose), so a fresh checkout and CI test against the same versions.
# An install with an extra also satisfies a plain one.
tempwatch_venv() {
    local extra="${1:-}" root="$TEMPWATCH_ROOT" python="${PYTHON:-python3}"
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        echo "tempwatch needs Python 3.10 or newer as python3 (or set PYTHON=...)" >&2
        exit 2
    fi
    if [ ! -x "$root/.venv/bin/python" ]; then
        "$python" -m venv "$root/.venv"
    fi
    local want stamp
    local constraints=()
    if [ -f "$root/constraints.txt" ]; then
        constraints=(-c "$root/constraints.txt")
    fi
    want="$({ cat "$root/pyproject.toml"; cat "$root/constraints.txt" 2>/dev/null || true; } \
        | sha256sum | cut -d' ' -f1)"
    stamp="$root/.venv/.tempwatch-installed${extra:+-$extra}"
    if [ -z "$extra" ] && [ -f "$stamp-dev" ] && [ "$(cat "$stamp-dev")" = "$want" ]; then
        return 0
    fi
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        (cd "$root" && .venv/bin/python -m pip install --quiet --disable-pip-version-check \
            "${constraints[@]}" -e ".${extra:+[$extra]}")
        echo "$want" > "$stamp"
    fi
}
