"""Download a file from mirrors, verify its MD5 checksum and write it atomically."""

import contextlib
import hashlib
import http.client
import logging
import os
import uuid
from collections.abc import Sequence
from typing import BinaryIO
from urllib.request import urlopen

logger = logging.getLogger(__name__)

_CHUNK_SIZE = 1 << 20
_TIMEOUT = 60.0


def download_file(urls: Sequence[str], path: str, md5: str) -> str:
    """Fetch ``path`` from the first of ``urls`` that serves the expected bytes.

    Each URL is tried in turn; the bytes are streamed to a temporary file
    next to ``path``, checked against ``md5``, and only then renamed to
    ``path`` (an atomic replace), so ``path`` never holds a partial or
    corrupted download.

    Parameters
    ----------
    urls : sequence of str
        Mirrors of the same file, tried in order.
    path : str
        Destination. Its folder is created if needed.
    md5 : str
        Expected MD5 hex digest of the file.

    Returns
    -------
    path : str
        The destination path.

    Raises
    ------
    OSError
        If no mirror gave a file with the expected checksum; the message
        lists each URL and what went wrong with it.
    """
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    failures = []
    for url in urls:
        logger.info("Downloading %s to %s", url, path)
        try:
            _fetch_verified(url, path, md5)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            failures.append(f"  - {url}: {exc}")
            continue
        return path
    details = "\n".join(failures)
    raise OSError(f"Could not download {os.path.basename(path)}:\n{details}")


def _fetch_verified(url: str, path: str, md5: str) -> None:
    folder, name = os.path.split(path)
    # A unique hidden name in the destination folder, so the final rename is
    # atomic; opened with "x" (not mkstemp) so permissions follow the umask.
    tmp_path = os.path.join(folder, f".{name}.{os.getpid()}.{uuid.uuid4().hex}.part")
    try:
        with open(tmp_path, "xb") as out:
            digest = _copy_from_url(url, out)
        if digest != md5.lower():
            raise ValueError(f"checksum mismatch (MD5 {digest}, expected {md5})")
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
        raise


def _copy_from_url(url: str, out: BinaryIO) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with urlopen(url, timeout=_TIMEOUT) as response:
        while chunk := response.read(_CHUNK_SIZE):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()
