"""Download a file once, verify its sha256, and never leave a partial or wrong file behind."""

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from data.config import DataError
from runtime.files import as_created


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, sha256: str | None, timeout: float = 30.0) -> Path:
    """Fetch url to dest unless dest already exists, checking the sha256 either way.

    The bytes go to a temporary file in dest's nearest existing folder, which is renamed to dest (its
    missing folders made then) only once the checksum matches; on any failure it is deleted and no
    folder is made. A file already at dest is never deleted, even when its checksum is wrong.
    """
    dest = Path(dest)
    by_hand = f"Download {url} yourself and put it at {dest}" + (f" (sha256 {sha256})." if sha256 else ".")
    if dest.exists():
        if sha256 and (actual := sha256_of(dest)) != sha256:
            raise DataError(f"{dest} has sha256 {actual}, expected {sha256}: it is not the right file. "
                            f"Move it away, then run again to download it, or: {by_hand}")
        return dest
    # The bytes go to the nearest folder that exists already: a folder of dest's that is missing is
    # made only once the download has succeeded, so a refused download leaves no empty folder behind.
    near = next(p for p in dest.parents if p.exists())
    if not near.is_dir():
        raise DataError(f"{near} is a file, so {dest} cannot be made: move that file, or put the download elsewhere")
    fd, tmp = tempfile.mkstemp(dir=near, prefix=f".{dest.name}.", suffix=".part")
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                h.update(block)
                out.write(block)
        if sha256 and h.hexdigest() != sha256:
            raise DataError(f"the download from {url} has sha256 {h.hexdigest()}, expected {sha256}; "
                            f"nothing was kept. {by_hand}")
        as_created(Path(tmp))  # mkstemp's file is private (0o600)
        dest.parent.mkdir(parents=True, exist_ok=True)  # on near's file system: the rename stays atomic
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as e:  # HTTPError is a URLError; timeouts are OSErrors
        raise DataError(f"could not download {url}: {e}. {by_hand}") from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest
