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

from common.errors import FileNotWritten

STALE_S = 600.0

logger = logging.getLogger(__name__)


def mode_kept(path: Path, default: int) -> int:
    """The permission bits `path` has, for a file replaced to keep them (with `replace_whole`'s
    `keep_owner`); `default` for a file not there yet."""
    return path.stat().st_mode & 0o777 if path.exists() else default


def replace_whole(
    path: Path,
    data: bytes,
    *,
    mode: int = 0o600,
    check: Callable[[Path], None] | None = None,
    keep_owner: bool = False,
) -> None:
    """`path` holds `data`, with `mode`. `keep_owner`: a file it replaces keeps its owner and
    group, which an operator may have given to the program reading it (a broker's key, its
    registry); the group's bits of `mode` only if the group was kept. `check`, given the
    written temporary file, may refuse it by raising: then `path` is left as it was, and no
    temporary file stays."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _not_written(path, exc) from exc
    _sweep(path)
    before = _stat(path) if keep_owner else None
    # A name of its own: two writers at once never write into one temporary file.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    checking = False
    try:
        # Owner-only until its owner and group are settled: never readable by a group it was
        # not meant for, not even for a moment.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        kept = before is None or _keep_owner(descriptor, before, path)
        os.fchmod(descriptor, mode if kept else mode & ~0o070)  # not cut by the umask
        with os.fdopen(descriptor, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if check is not None:
            checking = True
            check(temporary)
            checking = False
        os.replace(temporary, path)
    except OSError as exc:
        _discard(temporary)
        if checking:
            raise  # the check's own trouble (a file it reads), not this file's writing
        raise _not_written(path, exc) from exc
    except BaseException:
        _discard(temporary)
        raise
    sync_folder(path.parent)


def _discard(temporary: Path) -> None:
    # Never in the way of the error being raised: a read-only file system refuses even the
    # removal of a name that is not there (EROFS, not ENOENT).
    with contextlib.suppress(OSError):
        temporary.unlink(missing_ok=True)


def _not_written(path: Path, exc: OSError) -> FileNotWritten:
    # The operator's one line (citysense.cli): which file, why, and that it is unharmed.
    return FileNotWritten(f"{path} not written ({exc.strerror or exc}); it is as it was before")


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _keep_owner(descriptor: int, before: os.stat_result, path: Path) -> bool:
    """The new file owned as the old one was, as far as this process may (root may give any
    owner, another user only a group of its own); whether its group is the old one's. Said
    when the owner could not be kept, not raised: the content is what was asked for."""
    now = os.fstat(descriptor)
    if (now.st_uid, now.st_gid) == (before.st_uid, before.st_gid):
        return True
    try:
        os.fchown(descriptor, before.st_uid, before.st_gid)
        return True
    except PermissionError:
        pass
    try:
        os.fchown(descriptor, -1, before.st_gid)
        group = True
    except PermissionError:
        group = False
    logger.warning(
        "%s replaced: it was owned by uid %d, gid %d, which this process (uid %d) cannot give "
        "the new file%s; set them again if another program reads it",
        path,
        before.st_uid,
        before.st_gid,
        os.geteuid(),
        "" if group else " (nor its group, whose access it then does not get)",
    )
    return group


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
