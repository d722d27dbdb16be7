"""Files as the user expects them: the permissions any file they write gets.

tempfile's private names (mkstemp, mkdtemp) are created readable by their owner alone (0o600, 0o700),
and some writers do the same. A file or folder that ends up in the user's place (an export, a
download) gets instead what open() and mkdir() give: 0o666 or 0o777 less the umask, so other users of
the machine read it exactly when they read everything else the user writes.
"""

import os
from pathlib import Path


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
