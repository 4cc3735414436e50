"""The path policy for a forge file's local inputs.

A forge file shared in a repository must not be able to copy the builder's own files
(``/etc/shadow``, ``~/.ssh``) into images and ISOs that are then pushed to a registry. So
every local input (overlays, user-data files, the site inventory, pack sources, base
layouts, content bundles) must resolve, symlinks included, to a place inside the forge
file's directory, unless the file opts in with ``allowExternalPaths: true``. Devices, FIFOs
and sockets are refused always: reading them never ends or means nothing.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Literal

__all__ = ["OPT_IN", "Kind", "check_input", "resolve_input", "tree_problems"]

#: The forge file key that lifts the containment rule.
OPT_IN = "allowExternalPaths"

#: What an input must be: a regular file, a directory, or either.
Kind = Literal["file", "dir", "any"]

_OUTSIDE = f"local inputs must be inside the forge file's directory (or set {OPT_IN}: true)"
#: Entries looked at in one input tree before giving up (bounded time on huge trees).
MAX_TREE_ENTRIES = 200_000


def _special(mode: int) -> str | None:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
        return "a special file"
    return None


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def resolve_input(raw: str, base_dir: Path, *, allow_external: bool) -> tuple[Path, str | None]:
    """Where ``raw`` (as written in the forge file) is, and why it is refused (or None).

    Only the path is looked at (the target's kind is :func:`check_input`'s business).
    """
    base = base_dir.resolve()
    if raw.startswith("~"):
        if not allow_external:
            return Path(raw), f"{raw!r} is in a home directory; {_OUTSIDE}"
        return Path(raw).expanduser().resolve(), None
    written = Path(raw)
    if written.is_absolute():
        if not allow_external:
            return written, f"{raw!r} is an absolute path; {_OUTSIDE}"
        return written.resolve(), None
    joined = base / written
    resolved = joined.resolve()
    if allow_external or _inside(resolved, base):
        return resolved, None
    if _inside(Path(os.path.normpath(joined)), base):
        return resolved, f"{raw!r} is a symlink to {resolved}, outside; {_OUTSIDE}"
    return resolved, f"{raw!r} leaves the forge file's directory ('..'); {_OUTSIDE}"


def check_input(
    raw: str, base_dir: Path, kind: Kind, *, allow_external: bool
) -> tuple[Path, list[str]]:
    """The resolved path of a local input and its problems: the path policy, existence,
    the right kind (file or directory, never a device, FIFO or socket) and, for a
    directory, every entry of its tree (see :func:`tree_problems`)."""
    path, why = resolve_input(raw, base_dir, allow_external=allow_external)
    if why is not None:
        return path, [why]
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return path, [f"cannot read {path}: no such file or directory"]
    except OSError as e:
        return path, [f"cannot read {path}: {e.strerror or e}"]
    special = _special(st.st_mode)
    if special is not None:
        return path, [f"{path} is {special}, not a regular file or directory"]
    if kind == "file" and not stat.S_ISREG(st.st_mode):
        return path, [f"{path} is a directory, not a file"]
    if kind == "dir" and not stat.S_ISDIR(st.st_mode):
        return path, [f"{path} is a file, not a directory"]
    if stat.S_ISDIR(st.st_mode):
        return path, tree_problems(path, base_dir, allow_external=allow_external)
    return path, []


def tree_problems(root: Path, base_dir: Path, *, allow_external: bool) -> list[str]:
    """Problems inside a directory input: special files, and symlinks whose target leaves the
    forge file's directory (refused, as the root itself would be, unless opted in)."""
    base = base_dir.resolve()
    problems: list[str] = []
    seen = 0
    for top, dirs, files in os.walk(root):  # never follows symlinked directories
        for name in sorted(dirs + files):
            seen += 1
            if seen > MAX_TREE_ENTRIES:
                problems.append(f"{root} has more than {MAX_TREE_ENTRIES:,} entries")
                return problems
            entry = Path(top, name)
            try:
                st = entry.lstat()
            except OSError as e:
                problems.append(f"cannot read {entry}: {e.strerror or e}")
                continue
            special = _special(st.st_mode)
            if special is not None:
                problems.append(f"{entry} is {special}")
            elif stat.S_ISLNK(st.st_mode) and not allow_external:
                target = Path(os.path.realpath(entry))
                if not _inside(target, base):
                    problems.append(
                        f"{entry} is a symlink to {os.readlink(entry)}, outside the forge "
                        f"file's directory (use a relative link inside it, or set {OPT_IN}: true)"
                    )
        if len(problems) >= 20:
            problems.append("... and possibly more in this tree")
            break
    return problems
