"""The landing zone as a boundary: what in it is a complete batch, what is still being written, what is refused.

Upstream jobs drop files in one of three ways, and all three are safe here:

- **write to a temporary name, then rename** (rsync, most uploaders, ``loopline.ops.demo_data.write_batch``):
  the temporary name is hidden (``.name``) or ends in an in-progress suffix
  (``.tmp``, ``.part``, ``._COPYING_``, ...) and is never taken; the renamed file is
  taken at once, without waiting the settle time (``put_in_place``).
- **write in place, slowly**: a file is taken only once its size and modification
  time have been still for ``LOOPLINE_LANDING_SETTLE_SECONDS``, and again while it is
  hashed; a file that changes after that is refused later, when its hash is re-checked.

How a rename is seen without remembering earlier scans: a write sets a file's mtime and
ctime to the same instant; a rename keeps the mtime and moves the ctime to the rename's
instant (Linux's ext4, xfs, btrfs, tmpfs, overlayfs do; POSIX allows either). So a file
whose ctime is later than its mtime had no byte written since its last metadata change:
renamed into place, or hard-linked, or its mtime set after the copy (``cp -p``, rsync,
``touch -d``), each a writer saying "done". Not a rename: a ``chmod``/``chown`` of a file
a writer is still filling, between two of its writes; the next write makes ctime equal
mtime again, and if the file was claimed meanwhile, its hash re-check refuses it loudly.
A filesystem that does not move the ctime on rename (some network and FAT ones) gets
the settle time, as before: never earlier, never silently.
- **a completion marker**: ``<name>.done`` beside ``<name>`` says the file is complete,
  whatever its age; the marker is taken with it.

Anything else is reported, never silently skipped: sub-directories and hidden files are
*ignored* (left where they are), symlinks and special files (FIFOs, sockets, devices)
are *refused* (left alone too: a link would let a batch read any file on the machine).
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

IN_PROGRESS_SUFFIXES = (
    ".tmp", ".temp", ".part", ".partial", ".crdownload", ".filepart", ".inprogress", ".uploading", "._COPYING_",
)  # fmt: skip
MARKER_SUFFIX = ".done"


@dataclass
class LandingScan:
    """One look at a landing folder. Names are relative to it."""

    ready: list[Path] = field(default_factory=list)  # complete regular files, oldest name first
    markers: dict[str, Path] = field(default_factory=dict)  # file name -> its completion marker
    writing: list[str] = field(default_factory=list)  # temporary names and files not yet still
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (name, why): left where they are
    refused: list[tuple[str, str]] = field(default_factory=list)  # (name, why): unsafe, left alone

    def lines(self) -> list[str]:
        """What a person reads in the task log and in ``loopline status``."""
        out = [f"{len(self.ready)} ready, {len(self.writing)} still being written"]
        out += [f"  waiting (being written): {name}" for name in self.writing]
        out += [f"  ignored: {name} ({why})" for name, why in self.ignored]
        out += [f"  REFUSED: {name} ({why})" for name, why in self.refused]
        return out


def _kind(mode: int) -> str | None:
    """Why a non-regular, non-directory entry is refused (None for regular files and folders)."""
    if stat.S_ISLNK(mode):
        return "a symbolic link: batches must be real files in the landing zone"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO), not a file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a file"
    if stat.S_ISBLK(mode) or stat.S_ISCHR(mode):
        return "a device, not a file"
    return None


def put_in_place(info: os.stat_result) -> bool:
    """Renamed (or linked, or its mtime set) after its last write: its ctime is later than its mtime."""
    return info.st_ctime_ns > info.st_mtime_ns


def scan(landing_dir: Path, settle_seconds: float, now: float | None = None) -> LandingScan:
    """Sort every entry of the landing folder into ready / writing / ignored / refused (never follows links)."""
    result = LandingScan()
    if not landing_dir.is_dir():
        return result
    now = time.time() if now is None else now
    entries = {e.name: e for e in os.scandir(landing_dir)}
    for name in sorted(entries):
        entry = entries[name]
        info = entry.stat(follow_symlinks=False)
        refused = _kind(info.st_mode)
        if refused:
            result.refused.append((name, refused))
        elif stat.S_ISDIR(info.st_mode):
            result.ignored.append((name, "a sub-directory: batches are files directly in the landing folder"))
        elif name.endswith(IN_PROGRESS_SUFFIXES):
            result.writing.append(name)
        elif name.startswith("."):
            result.ignored.append((name, "a hidden file: rename it to a visible name when it is complete"))
        elif name.endswith(MARKER_SUFFIX):
            target = name.removesuffix(MARKER_SUFFIX)
            if target in entries:
                result.markers[target] = landing_dir / name
            else:
                result.ignored.append((name, f"a completion marker without its file {target!r}"))
    for name in sorted(entries):
        entry = entries[name]
        info = entry.stat(follow_symlinks=False)
        if (
            not stat.S_ISREG(info.st_mode)
            or name.startswith(".")
            or name.endswith((*IN_PROGRESS_SUFFIXES, MARKER_SUFFIX))
        ):
            continue
        if name in result.markers or put_in_place(info) or now - info.st_mtime >= settle_seconds:
            result.ready.append(landing_dir / name)
        else:
            result.writing.append(name)
    result.writing.sort()
    return result


class StillChanging(Exception):
    """The file changed while it was being read: it is not complete yet."""


def read_settled(path: Path) -> tuple[bytes, os.stat_result]:
    """Read a landed file whole without following links; raise StillChanging if it moved meanwhile."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise StillChanging(f"{path.name} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read()
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or len(data) != after.st_size:
        raise StillChanging(f"{path.name} changed while it was read")
    return data, after


def mark_complete(path: Path) -> Path:
    """Write the completion marker of a landed file (for writers that know when they are done)."""
    marker = path.with_name(path.name + MARKER_SUFFIX)
    marker.touch()
    return marker
