"""secure_delete: zero a file's data before the unlink, through a fresh, verified fd.

Zeroing in place does not defeat copy-on-write filesystems or SSD remapping; it keeps the
data from the next reader of those blocks on ordinary filesystems.
"""

from __future__ import annotations

import errno
import os
import stat

from tempwatch.descent import Base, Outcome, Refused, refusal, same_file
from tempwatch.dirfd import zero_data

__all__ = ["zero_judged_file"]

# O_NONBLOCK and O_NOCTTY: if a FIFO or terminal is swapped in after the lstat, the open must
# neither hang waiting for a reader nor acquire a controlling terminal; fstat then rejects it.
_WRITE_FLAGS = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK


def zero_judged_file(base: Base, dir_fd: int, name: str, judged: os.stat_result) -> None:
    """Zero the data of `name` below `dir_fd` if it is still the judged regular file with a
    single link on base_dir's mount; raise Refused (SWAPPED, OTHER_FS, ...) if not."""
    try:
        fd = os.open(name, _WRITE_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        raise refusal(e, swap_errnos=(errno.ELOOP, errno.ENXIO, errno.EISDIR)) from e
    try:
        st = os.fstat(fd)
        if not same_file(st, judged) or not stat.S_ISREG(st.st_mode):
            raise Refused(Outcome.SWAPPED)
        if base.is_other_mount(fd, st):
            raise Refused(Outcome.OTHER_FS)  # a file bind-mounted over the name
        if st.st_nlink != 1:
            return  # a hard link appeared since the lstat: its data is not ours to destroy
        zero_data(fd, st.st_size)
        os.fsync(fd)
    except OSError as e:
        raise refusal(e) from e
    finally:
        os.close(fd)
