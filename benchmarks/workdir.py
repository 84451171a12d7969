"""The benchmarks' work directories: private, never a fixed name another account can own.

A fixed name under the shared ``/tmp`` lets another account create it first and plant files
(a ``datamap/`` package in a repository copy that the benchmark then runs Python in, or a
prepared data set it trains on). So every benchmark works in ``private_workdir(args.workdir,
prefix)``:

* no ``--workdir``: a new ``tempfile.mkdtemp`` directory (mode 0700);
* a ``--workdir`` that does not exist: created with mode 0700;
* an existing one: only a real directory (not a symlink) owned by this account and writable by
  no one else, and empty unless the benchmark keeps a cache there (``reuse=True``).

Its parent (and every existing ancestor) must not be a symlink owned by another account or
writable by the group or others without the sticky bit (``/tmp`` itself is fine), and the
parent must not be a symlink at all. Anything else is refused in one line, exit status 2.
``cached(path)`` tells whether a prepared data set kept in such a directory may be reused.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

__all__ = ["WorkdirError", "cached", "check_workdir", "private_workdir"]


class WorkdirError(Exception):
    """A work directory that is not safe to use."""


def _others_can_write(st: os.stat_result) -> bool:
    return bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _check_private(path: Path, st: os.stat_result, what: str) -> None:
    """A real directory (``st`` from lstat) of this account that no one else can write."""
    if stat.S_ISLNK(st.st_mode):
        raise WorkdirError(f"{what} {path} is a symlink; give a real directory")
    if not stat.S_ISDIR(st.st_mode):
        raise WorkdirError(f"{what} {path} is not a directory")
    if st.st_uid != os.getuid():
        raise WorkdirError(f"{what} {path} belongs to uid {st.st_uid}, not to you "
                           f"(uid {os.getuid()})")
    if _others_can_write(st):
        raise WorkdirError(f"{what} {path} is writable by others (mode "
                           f"{stat.S_IMODE(st.st_mode):o}); chmod go-w it or give another one")


def _check_ancestors(path: Path) -> None:
    """Nobody else can rename or replace ``path`` through one of its existing ancestors."""
    parent = path.parent
    try:
        if stat.S_ISLNK(os.lstat(parent).st_mode):
            raise WorkdirError(f"the parent of --workdir {path} ({parent}) is a symlink; "
                               f"give the real path")
    except FileNotFoundError:
        pass
    for ancestor in path.parents:
        try:
            st = os.lstat(ancestor)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid not in (0, os.getuid()):
                raise WorkdirError(f"{ancestor} (above --workdir {path}) is a symlink of "
                                   f"uid {st.st_uid}")
            continue  # a symlink of root's or ours (e.g. /tmp -> /private/tmp)
        if not stat.S_ISDIR(st.st_mode):
            raise WorkdirError(f"{ancestor} (above --workdir {path}) is not a directory")
        if st.st_uid not in (0, os.getuid()):
            raise WorkdirError(f"{ancestor} (above --workdir {path}) belongs to uid "
                               f"{st.st_uid}, who could replace it")
        if _others_can_write(st) and not st.st_mode & stat.S_ISVTX:
            raise WorkdirError(f"{ancestor} (above --workdir {path}) is writable by others "
                               f"without the sticky bit")


def check_workdir(given: str | os.PathLike, *, reuse: bool = False) -> Path:
    """``given`` made safe to work in (created 0700 when missing), or WorkdirError."""
    path = Path(os.path.abspath(given))  # no symlinks resolved: every part is checked as is
    _check_ancestors(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        missing = [path, *(p for p in path.parents if not os.path.lexists(p))]
        for level in reversed(missing):
            try:
                os.mkdir(level, 0o700)  # fails if someone made it meanwhile
            except FileExistsError as error:
                raise WorkdirError(f"{level} appeared while creating --workdir {path}") \
                    from error
        st = os.lstat(path)
        _check_private(path, st, "--workdir")
        return path
    _check_private(path, st, "--workdir")
    if not reuse and any(path.iterdir()):
        raise WorkdirError(f"--workdir {path} is not empty; give an empty or new directory")
    return path


def private_workdir(given: str | os.PathLike | None, prefix: str, *,
                    reuse: bool = False) -> Path:
    """A new private temporary directory (``given`` None) or the checked ``--workdir``;
    refuses an unsafe one in one line with exit status 2."""
    if given is None:
        path = Path(tempfile.mkdtemp(prefix=prefix))  # mode 0700
        print(f"work directory: {path}", file=sys.stderr)
        return path
    try:
        return check_workdir(given, reuse=reuse)
    except WorkdirError as error:
        print(f"refusing: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def cached(path: Path, marker: str = "meta.json") -> bool:
    """Whether ``path`` holds a complete prepared data set (``marker``) of this account's
    that no one else could have written; refuses (exit 2) one that exists but is not."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    try:
        _check_private(path, st, "cached data set")
        _check_private(path.parent, os.lstat(path.parent), "cache directory")
        marked = path / marker
        if not os.path.lexists(marked):
            return False
        mst = os.lstat(marked)
        if not stat.S_ISREG(mst.st_mode) or mst.st_uid != os.getuid() \
                or _others_can_write(mst):
            raise WorkdirError(f"{marked} is not a regular file of yours that only you can "
                               f"write")
    except WorkdirError as error:
        print(f"refusing to reuse {path}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    return True
