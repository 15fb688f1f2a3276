"""The floor of a Python clean: the least a Python process does to expire a tree, and print it.

`python floor.py ROOT [--lease]` walks ROOT through directory fds, lstats each entry, and
unlinks each file whose mtime is over an hour old, after one more lstat proving it is still
the file judged, then prints a line naming it. With --lease a regular file is instead
opened (O_NOFOLLOW, O_NONBLOCK), judged by its fstat, leased (F_SETLEASE, F_WRLCK),
unlinked and closed: tempwatch's in-use check, system call for system call. No policy,
registry, log or safety beyond that: what remains between tempwatch clean and this is the
cost of everything else; what remains between this and find is the interpreter's.
"""

from __future__ import annotations

import fcntl
import os
import stat
import sys
import time

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _expire(path: str, cutoff: float, lease: bool, lines: list[str]) -> None:
    dir_fd = os.open(path, _DIR_FLAGS)
    try:
        with os.scandir(dir_fd) as found:
            names = [entry.name for entry in found]
        for name in names:
            st = os.lstat(name, dir_fd=dir_fd)
            if stat.S_ISDIR(st.st_mode):
                _expire(f"{path}/{name}", cutoff, lease, lines)
                continue
            if st.st_mtime >= cutoff:
                continue
            if lease and stat.S_ISREG(st.st_mode):
                fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
                try:
                    if os.fstat(fd).st_ino != st.st_ino:
                        continue
                    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
                    os.unlink(name, dir_fd=dir_fd)
                finally:
                    os.close(fd)
            else:
                if os.lstat(name, dir_fd=dir_fd).st_ino != st.st_ino:
                    continue
                os.unlink(name, dir_fd=dir_fd)
            lines.append(f"deleted {path}/{name} ({st.st_size} bytes)\n")
            if len(lines) >= 512:
                sys.stdout.write("".join(lines))
                lines.clear()
    finally:
        os.close(dir_fd)


def main(argv: list[str]) -> int:
    lines: list[str] = []
    _expire(argv[0].rstrip("/") or "/", time.time() - 3600, "--lease" in argv[1:], lines)
    sys.stdout.write("".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
