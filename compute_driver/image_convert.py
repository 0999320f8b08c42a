"""Converting foreign disk images (vmdk, vdi, vhdx, vpc, qed) to qcow2 on import.

The image store keeps qcow2 and raw only. ``computectl image import`` (and
:meth:`compute_driver.client.Client.import_image`) converts anything else
with ``qemu-img convert`` first, showing its progress, and imports the result.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Callable

from compute_driver import exception

#: Formats the image store takes as they are.
STORE_FORMATS = ("qcow2", "raw")
#: Formats converted to qcow2 on import.
CONVERTED_FORMATS = ("vmdk", "vdi", "vhdx", "vpc", "qed")
_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")


def disk_format(path: str) -> str:
    """The format ``qemu-img info`` sees in ``path``.

    :raises InvalidImage: not readable as a disk image.
    """
    done = subprocess.run(
        ["qemu-img", "info", "--output=json", "--", path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise exception.InvalidImage(image=path, reason=done.stderr.strip() or "unreadable")
    return str(json.loads(done.stdout).get("format"))


def needs_conversion(path: str) -> bool:
    """Whether ``path`` must be converted before the store takes it.

    :raises InvalidImage: a format we neither keep nor convert.
    """
    found = disk_format(path)
    if found in STORE_FORMATS:
        return False
    if found in CONVERTED_FORMATS:
        return True
    raise exception.InvalidImage(
        image=path,
        reason="format %s is neither kept (%s) nor converted (%s)"
        % (found, ", ".join(STORE_FORMATS), ", ".join(CONVERTED_FORMATS)),
    )


def convert_to_qcow2(
    src: str, progress: Callable[[float], None] | None = None, workdir: str | None = None
) -> str:
    """Convert ``src`` into a new qcow2 file in a fresh temporary directory.

    The caller removes the file's directory when done with it.

    :param progress: called with the percentage done as qemu-img reports it.
    :returns: the path of the qcow2 file.
    :raises InvalidImage: qemu-img failed (nothing is left behind).
    """
    tmp = tempfile.mkdtemp(prefix="cd-convert-", dir=workdir)
    # NOTE: the scheduler (maybe another user) reads the result.
    os.chmod(tmp, 0o755)
    dst = os.path.join(tmp, os.path.splitext(os.path.basename(src))[0] + ".qcow2")
    proc = subprocess.Popen(
        ["qemu-img", "convert", "-p", "-O", "qcow2", "--", src, dst],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    buffer = b""
    while chunk := proc.stdout.read1(4096):  # type: ignore[attr-defined]
        buffer = (buffer + chunk)[-256:]
        matches = _PROGRESS.findall(buffer)
        if matches and progress is not None:
            progress(float(matches[-1]))
    _, err = proc.communicate()
    if proc.returncode != 0:
        remove_converted(dst)
        raise exception.InvalidImage(
            image=src, reason="qemu-img convert failed: %s" % err.decode(errors="replace").strip()
        )
    os.chmod(dst, 0o644)
    return dst


def remove_converted(path: str) -> None:
    """Remove a file made by :func:`convert_to_qcow2` and its directory."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    try:
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass
