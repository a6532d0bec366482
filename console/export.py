"""Where exports (logs, packet captures, ladders, screenshots) go, and how they
are handed over: written to a folder locally, downloaded in the web view.

The folder is the ``export_dir`` setting when set, else ``~/Downloads`` when
it exists, else the current folder when it is writable, else the home folder:
never a folder that does not exist (Textual's default would be ``~/Downloads``
even on a server that has none).
"""

from __future__ import annotations

import io
import os
import re
import threading
import time
import uuid
from pathlib import Path

from textual import events

EXPORT_NAMES = {"log": "Log", "pcap": "Packet capture", "ladder": "Exchanges", "screenshot": "Screenshot"}
"""Delivery names the app reports on (DeliveryComplete / DeliveryFailed)."""


def export_dir(setting: str = "") -> Path:
    """The folder exports are written to (see the module docstring)."""
    if setting:
        return Path(setting).expanduser()
    downloads = Path.home() / "Downloads"
    if downloads.is_dir():
        return downloads
    cwd = Path.cwd()
    if os.access(cwd, os.W_OK):
        return cwd
    return Path.home()


def stamped(prefix: str, suffix: str, now: float | None = None) -> str:
    """A file name that sorts by time: ``prefix-20261206-051522.suffix``.

    ``prefix`` may carry a connection name, which a policy may spell with ``/`` (``[connections."a/b"]``):
    a separator would make the name a path into a folder that does not exist (the export fails), so
    separators and control characters become ``_``."""
    prefix = re.sub(r"[/\\\x00-\x1f\x7f]", "_", prefix)
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}{suffix}"


MAX_SAME_NAME = 1000
"""How many exports of one name (one second) get a number before the name is given up on."""


def reserve(folder: Path, filename: str) -> str:
    """``filename``, or ``NAME-2.SUFFIX``, ``NAME-3.SUFFIX``, ... when it exists, created empty at once
    (O_EXCL) so that a second export in the same second, its name stamped to the second, never
    writes over the first (nor over a file of the admin's): the notice names the file written."""
    stem, dot, suffix = filename.rpartition(".")
    if not dot:
        stem, suffix = filename, ""
    for n in range(1, MAX_SAME_NAME + 1):
        candidate = filename if n == 1 else f"{stem}-{n}{dot}{suffix}"
        try:
            os.close(os.open(folder / candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            continue
        except OSError:
            return filename  # a folder we cannot write to: the delivery says why
        return candidate
    return filename


def deliver(app, data: bytes | str, filename: str, name: str, mime_type: str = "text/plain") -> None:
    """Write ``data`` to the export folder (or hand it to the browser); the app notifies when done."""
    folder = export_dir(getattr(app.settings, "export_dir", ""))
    if not app.is_web:  # a browser download names its own file
        filename = reserve(folder, filename)
    if isinstance(data, str):
        app.deliver_text(io.StringIO(data), save_directory=folder, save_filename=filename,
                         open_method="download", mime_type=mime_type, name=name)
    elif app.is_web:
        app.deliver_binary(io.BytesIO(data), save_directory=folder, save_filename=filename,
                           open_method="download", mime_type=mime_type, name=name)
    else:
        # Textual's local driver opens the file in text mode for a BytesIO (its isinstance test
        # against typing.BinaryIO fails), so binary files are written here, off the UI thread.
        threading.Thread(target=_write, args=(app, folder / filename, data, name), daemon=True).start()


def _write(app, path: Path, data: bytes, name: str) -> None:
    key = uuid.uuid4().hex
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        path.unlink(missing_ok=True)  # no half-written capture left under a name that looks complete
        app.call_from_thread(app.post_message, events.DeliveryFailed(key=key, exception=exc, name=name))
    else:
        app.call_from_thread(app.post_message, events.DeliveryComplete(key=key, path=path, name=name))
