"""
A summary of a py-spy profile: where the gateway's reactor thread spends
its time.

py-spy's C{raw} format (C{py-spy record --format raw --nolineno}) writes
one line per distinct stack: the frames from the outermost inwards,
separated by C{;}, each C{function (file)}, then a space and the number of
samples. Only stacks through the reactor's main loop count: worker threads
waiting on their queue would otherwise dilute the figures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from attrs import frozen

from bench.parse import ParseError

__all__ = [
    "OURS",
    "REACTOR_FRAME",
    "HotSpot",
    "ProfileSummary",
    "parse_collapsed",
    "summarize",
]

#: The frame every stack of the reactor thread passes through.
REACTOR_FRAME = "ReactorBase.mainLoop (twisted/internet/base.py)"

#: Where the gateway's own code lives, as py-spy names files.
OURS = ("hoopgate/", "hoopgate_plugins/")


@frozen
class HotSpot:
    """
    One function (or file) and its share of the samples.

    Attributes:
        name: C{function (file)}, or a file.
        self_pct: Per cent of samples with it innermost.
        total_pct: Per cent of samples with it anywhere on the stack.
    """

    name: str
    self_pct: float
    total_pct: float


@frozen
class ProfileSummary:
    """
    The hot spots of one profile.

    Attributes:
        samples: Samples of the reactor thread.
        functions: Functions by self time, most first.
        cumulative: The gateway's own functions (those of C{ours}) by
            inclusive time, most first.
        files: Source files by self time, most first.
    """

    samples: int
    functions: tuple[HotSpot, ...]
    cumulative: tuple[HotSpot, ...]
    files: tuple[HotSpot, ...]


def parse_collapsed(lines: Iterable[str]) -> list[tuple[tuple[str, ...], int]]:
    """
    Read collapsed stacks: C{frame;frame;... COUNT} per line.

    Raises:
        ParseError: A line does not end in a sample count.
    """
    stacks = []
    for number, line in enumerate(lines, 1):
        text = line.rstrip("\n")
        if not text.strip():
            continue
        stack, _, count = text.rpartition(" ")
        if not stack or not count.isdigit():
            raise ParseError(f"profile line {number} does not end in a count")
        stacks.append((tuple(stack.split(";")), int(count)))
    return stacks


def _file_of(frame: str) -> str:
    """
    C{file} of C{function (file)}; the frame itself if it has none.
    """
    start = frame.rfind(" (")
    if start < 0 or not frame.endswith(")"):
        return frame
    return frame[start + 2 : -1]


def _ranked(
    names: Iterable[str],
    *,
    key: Counter[str],
    own: Counter[str],
    total: Counter[str],
    samples: int,
    top: int,
) -> tuple[HotSpot, ...]:
    names = sorted(names, key=lambda name: (-key[name], name))[:top]
    return tuple(
        HotSpot(name, 100 * own[name] / samples, 100 * total[name] / samples)
        for name in names
    )


def summarize(
    stacks: Sequence[tuple[tuple[str, ...], int]],
    top: int = 15,
    root: str = REACTOR_FRAME,
    ours: tuple[str, ...] = OURS,
) -> ProfileSummary:
    """
    Rank functions and files by their share of the reactor thread's samples.

    Args:
        stacks: What L{parse_collapsed} returned.
        top: How many entries each ranking keeps.
        root: Only stacks with this frame count.
        ours: File prefixes of the gateway's own code, for the inclusive
            ranking (Twisted's dispatch frames would fill it otherwise).

    Raises:
        ParseError: No stack passes through C{root}.
    """
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    file_own: Counter[str] = Counter()
    file_total: Counter[str] = Counter()
    samples = 0
    for frames, count in stacks:
        if root not in frames:
            continue
        samples += count
        own[frames[-1]] += count
        file_own[_file_of(frames[-1])] += count
        total.update(dict.fromkeys(frames, count))
        file_total.update(dict.fromkeys(map(_file_of, frames), count))
    if not samples:
        raise ParseError(f"no profiled stack passes through {root}")

    mine = [name for name in total if _file_of(name).startswith(ours)]
    return ProfileSummary(
        samples=samples,
        functions=_ranked(own, key=own, own=own, total=total, samples=samples, top=top),
        cumulative=_ranked(
            mine, key=total, own=own, total=total, samples=samples, top=top
        ),
        files=_ranked(
            file_own,
            key=file_own,
            own=file_own,
            total=file_total,
            samples=samples,
            top=top,
        ),
    )
