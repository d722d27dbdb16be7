"""Files as the user expects them: the permissions any file they write gets, and a full disk said in
one line (what was being written, into which folder, how much it needs, what is free), never a traceback
or half a file.

tempfile's private names (mkstemp, mkdtemp) are created readable by their owner alone (0o600, 0o700),
and some writers do the same. A file or folder that ends up in the user's place (an export, a
download) gets instead what open() and mkdir() give: 0o666 or 0o777 less the umask, so other users of
the machine read it exactly when they read everything else the user writes.

A full disk shows up in three shapes: OSError ENOSPC (EDQUOT over a quota), or torch's RuntimeError from
its zip writer ("unexpected pos ...") with that OSError behind it or not. `writing` turns each into a
DiskFullError (a UserError: one line, exit code 2) and lets every other error through unchanged.
"""

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from runtime.errors import UserError


def umask() -> int:
    """The process's umask (reading it means setting it: it is put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_created(path: Path) -> None:
    """Give path, and everything inside it if it is a folder, the permissions of a file or folder
    created now by open() or mkdir()."""
    mask = umask()
    for p in [path, *sorted(path.rglob("*"))] if path.is_dir() else [path]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)


# ------------------------------------------------------------------------------------------------
# A disk that fills while writing: one line that says where, how much is needed and what is free
# ------------------------------------------------------------------------------------------------

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# What torch's zip writer (caffe2's inline_container.cc) says when the file under it refuses bytes: it
# checks each write's position, so a write cut short by a full disk surfaces as a RuntimeError such as
# "[enforce fail at inline_container.cc:672] . unexpected pos 94592 vs 94480"
TORCH_WRITER_SIGNS = ("inline_container", "PytorchStreamWriter", "unexpected pos", "file write failed")


class DiskFullError(UserError):
    """A write refused because the disk (or the user's quota on it) is full. The message names the folder,
    the space needed and the space free, and says what is intact."""


def refused_errno(error: BaseException) -> Optional[int]:
    """The errno of the first OSError in error's chain (the error itself, then what caused it or was being
    handled: torch's RuntimeError carries the OSError of the write it checked as its context), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno is not None:
            return error.errno
        error = error.__cause__ or error.__context__
    return None


def disk_full(error: BaseException, needed: Optional[int] = None, free: Optional[int] = None) -> bool:
    """Whether error means that the disk is full: ENOSPC or EDQUOT in its chain; for a RuntimeError without
    an OSError behind it (torch's writer), its message naming torch's zip writer, or less space free than
    needed (when both are given). An OSError of another kind (no permission, an I/O error) is not."""
    code = refused_errno(error)
    if code is not None:
        return code in FULL_ERRNOS
    if isinstance(error, RuntimeError):
        return (any(sign in str(error) for sign in TORCH_WRITER_SIGNS)
                or (needed is not None and free is not None and free < needed))
    return False


def size_text(n: int) -> str:
    """A number of bytes as `df -h` counts them (1 KB = 1024 bytes): '212 bytes', '52 KB', '3.1 MB'."""
    if n < 1024:
        return f"{n} bytes"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1024
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if n < 10 else f"{n:.0f} {unit}"


def free_space(folder: Path) -> Optional[int]:
    """Bytes free for the user on the disk holding folder (or its nearest existing parent), as df says."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def disk_full_error(folder: Path, what: str, needed: int, then: str, error: Optional[BaseException] = None,
                    free: Optional[int] = None, at_least: bool = False) -> DiskFullError:
    """The one line for a write into folder that the disk refused: what was being written, about how much
    it needs (at_least: more than that), what is free (free: as given, else df now), then what to do and
    what is intact. error, when given, says whether it was the quota rather than the disk."""
    free = free_space(folder) if free is None else free
    where = (f"your disk quota on the disk holding {folder} is used up" if error is not None
             and refused_errno(error) == errno.EDQUOT else f"the disk holding {folder} is full")
    have = f", {size_text(free)} are free (df)" if free is not None else ""
    return DiskFullError(f"{where}: {what} needs {'more than' if at_least else 'about'} {size_text(needed)}"
                         f"{have}: {then}")


@contextmanager
def writing(folder: Path, what: str, needed: int, then: str) -> Iterator[None]:
    """Run the body, which writes about `needed` bytes into folder; a full disk (see disk_full) becomes a
    DiskFullError naming the folder, the space needed and the space free; any other error is raised
    unchanged. The body removes its own partial files, so the space free is measured after it did."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        free = free_space(folder)
        if not disk_full(e, needed, free):
            raise
        raise disk_full_error(folder, what, needed, then, e, free) from e


class AppendFile:
    """A file that whole entries are appended to (train.log, metrics.jsonl): each entry reaches the file
    whole or not at all. Unbuffered, so nothing waits in memory to be written later; a write that fails
    (a full disk) is cut back to the end of the entry before, so the file never ends in half a line."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: Optional[int] = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)

    def append(self, data: bytes) -> None:
        end = os.fstat(self.fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[self._write(view):]
        except BaseException:
            try:
                os.ftruncate(self.fd, end)  # shrinking a file needs no space
            except OSError:
                pass
            raise

    def _write(self, view: memoryview) -> int:
        """One write: the number of bytes the file took (a disk filling up may take fewer than given)."""
        return os.write(self.fd, view)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
