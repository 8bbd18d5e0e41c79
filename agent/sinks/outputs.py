"""Where the sinks write: never onto an input or another output (**sinks**).

`replay victim.pcap --events victim.pcap` would empty the capture before it is
read, and `--events x --flows x` would interleave two formats: the evidence is
lost either way. So the outputs are checked before any is opened for writing.
Two names are one file when they resolve to the same path or, for files that
exist, the same inode (a hard link, a bind mount).
"""
from __future__ import annotations

import os
from typing import Iterable, Mapping


class OutputClashError(ValueError):
    """An output names an input or another output; the message names both."""


def identities(path: str) -> set:
    """What makes two names the same file: the resolved path, and the inode when it exists."""
    ids: set = {os.path.realpath(path)}
    try:
        st = os.stat(path)
    except OSError:
        return ids
    ids.add((st.st_dev, st.st_ino))
    return ids


def refuse_clobbering(outputs: Mapping[str, str | None], inputs: Mapping[str, Iterable[str | None]]) -> None:
    """Raise OutputClashError when an output (flag -> path) is an input (flag -> paths) or an earlier output.

    Standard streams ("-") and unset flags are not files and never clash.
    """
    seen: list[tuple[str, str, set, str]] = []
    for flag, paths in inputs.items():
        seen += [(flag, p, identities(p), "an input") for p in paths if p and p != "-"]
    for flag, path in outputs.items():
        if not path or path == "-":
            continue
        ids = identities(path)
        for other_flag, other, other_ids, role in seen:
            if ids & other_ids:
                raise OutputClashError(f"{flag} {path} is {role} ({other_flag} {other}); "
                                       "refusing to overwrite it, nothing was written")
        seen.append((flag, path, ids, "another output"))
