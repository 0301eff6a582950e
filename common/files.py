"""Files replaced whole: a crash or a power cut leaves the old content or the new, never a part
and never an empty file.

Written here because the standard library has none: `os.replace` alone is atomic for readers
but not durable (without the fsyncs, a power cut soon after can leave the new name pointing at
an empty file on ext4 or xfs). The recipe is the usual one: a temporary file beside the target,
written and fsynced, renamed over it, then the folder fsynced so the rename is on disk too.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

STALE_S = 600.0

logger = logging.getLogger(__name__)


def replace_whole(
    path: Path,
    data: bytes,
    *,
    mode: int = 0o600,
    check: Callable[[Path], None] | None = None,
) -> None:
    """`path` holds `data` (created with `mode`; a file it replaces keeps its owner and group,
    which an operator may have given to the program reading it: a broker's key, say). `check`,
    given the written temporary file, may refuse it by raising: then `path` is left as it was,
    and no temporary file stays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep(path)
    try:
        before: os.stat_result | None = path.stat()
    except FileNotFoundError:
        before = None
    # A name of its own: two writers at once never write into one temporary file.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        os.fchmod(descriptor, mode)  # exactly `mode`: os.open's is cut by the umask
        if before is not None:
            _keep_owner(descriptor, before, path)
        with os.fdopen(descriptor, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if check is not None:
            check(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def _keep_owner(descriptor: int, before: os.stat_result, path: Path) -> None:
    """The new file owned as the old one was, as far as this process may: root may give any
    owner, another user only a group of its own. Said when it could not, not raised: the
    content is what was asked for, and the old owner may not have mattered."""
    now = os.fstat(descriptor)
    if (now.st_uid, now.st_gid) == (before.st_uid, before.st_gid):
        return
    try:
        os.fchown(descriptor, before.st_uid, before.st_gid)
    except PermissionError:
        with contextlib.suppress(PermissionError):  # the group at least; said below either way
            os.fchown(descriptor, -1, before.st_gid)
        logger.warning(
            "%s replaced: it was owned by uid %d, gid %d, which this process (uid %d) cannot "
            "give the new file; set them again if another program reads it",
            path,
            before.st_uid,
            before.st_gid,
            os.geteuid(),
        )


def _sweep(path: Path) -> None:
    """Temporary files of `path` a crash left (older than STALE_S: not a writer's at work)."""
    for left in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            if time.time() - left.stat().st_mtime > STALE_S:
                left.unlink()
        except FileNotFoundError:
            pass  # its writer renamed it, or another sweep took it
        except OSError as exc:  # best effort: the write itself is what matters
            logger.warning("could not remove %s, a crash's leftover: %s", left, exc)


def sync_folder(folder: Path) -> None:
    """The folder's entries on disk: a rename or a new file in it survives a power cut."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
