"""Output files that honour the user's umask: atomic writes (temporary file, then ``os.replace``)
created with mode 0666 & ~umask (folders 0777 & ~umask) — ``tempfile`` alone would leave 0600/0700."""
from __future__ import annotations

import os


def umask() -> int:
    """The process umask (read by setting it and setting it back)."""
    m = os.umask(0o022)
    os.umask(m)
    return m


def honour_umask(path: str) -> None:
    """chmod ``path`` (recursively for a folder) to the default mode under the current umask."""
    m = umask()
    if os.path.isdir(path):
        os.chmod(path, 0o777 & ~m)
        for root, dirs, files in os.walk(path):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o777 & ~m)
            for f in files:
                os.chmod(os.path.join(root, f), 0o666 & ~m)
    else:
        os.chmod(path, 0o666 & ~m)


def atomic_write_bytes(data: bytes, path: str) -> None:
    """Write ``data`` to ``path`` atomically, mode 0666 & ~umask (:func:`cda_lite.checkpoint.atomic_write`)."""
    from cda_lite.checkpoint import atomic_write
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(text: str, path: str) -> None:
    atomic_write_bytes(text.encode("utf8"), path)
