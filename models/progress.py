"""Progress of long loops: a tqdm bar on a terminal, one line per stage otherwise (logs of ``make demo``, CI), so
non-terminal output never fills with carriage-return frames."""
from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, unit: str = "it", enabled: bool = True) -> Iterator[T]:
    """Iterate ``items``, showing progress on stderr when ``enabled``."""
    if not enabled:
        yield from items
        return
    if sys.stderr.isatty():
        yield from tqdm(items, desc=desc, unit=unit, leave=False)
        return
    items = list(items)
    start = time.perf_counter()
    print(f"{desc}: {len(items)} {unit} ...", file=sys.stderr, flush=True)
    yield from items
    print(f"{desc}: done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
