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

    The bytes go to a temporary file beside dest, which is renamed only once the checksum matches; on
    any failure it is deleted. A file already at dest is never deleted, even when its checksum is wrong.
    """
    dest = Path(dest)
    by_hand = f"Download {url} yourself and put it at {dest}" + (f" (sha256 {sha256})." if sha256 else ".")
    if dest.exists():
        if sha256 and (actual := sha256_of(dest)) != sha256:
            raise DataError(f"{dest} has sha256 {actual}, expected {sha256}: it is not the right file. "
                            f"Move it away, then run again to download it, or: {by_hand}")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
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
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as e:  # HTTPError is a URLError; timeouts are OSErrors
        raise DataError(f"could not download {url}: {e}. {by_hand}") from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest
