"""A memory bound on count-like method settings (``n_samples``, ``ig_steps``, ``n_directions`` ...), checked
when the configuration is parsed, before any model is loaded or any run is written.

Each unit of such a setting (one sample, one step, one direction) holds at least one input, and an input
holds at least one float32. So ``value x sample_bytes`` (4 bytes when the input size is not known yet) is a
lower bound of what the method must allocate; a value whose lower bound exceeds the machine's memory can
never run (``n_samples=1e11`` once asked for a 9.46 TiB allocation and left a FAILED run). Because it is a
lower bound, the check never refuses a setting that could fit. A plugin marks a field explicitly with
``Field(..., json_schema_extra={"scales_memory": True})`` (or ``False`` to exempt one the names match).
"""

from __future__ import annotations

import os
import re
from typing import Iterator

from pydantic import BaseModel

from governance.contract.errors import ConfigError

#: field names that count samples, steps, points, draws ... (and never seeds)
COUNT_FIELD = re.compile(r"(^n_|^num_|_n$|samples$|steps$|points$|directions$|draws$|permutations$|"
                         r"iterations$|repeats$|inputs$|^batch_size$|^max_batch$)")
MEMORY_ENV = "GOVERNANCE_MEMORY_LIMIT"
MIN_UNIT_BYTES = 4


def memory_limit() -> int:
    """Bytes a run may use: ``GOVERNANCE_MEMORY_LIMIT`` (e.g. ``8G``), else the machine's physical memory."""
    raw = os.environ.get(MEMORY_ENV, "").strip()
    if raw:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", raw.lower())
        if not m:
            raise ConfigError(f"{MEMORY_ENV}={raw!r} is not a size", hint="e.g. 8G, 512M or a number of bytes")
        return int(float(m[1]) * 1024 ** " kmgt".index(m[2] or " "))
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 40


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"  # pragma: no cover


def count_fields(config: BaseModel, prefix: str = "") -> Iterator[tuple[str, int]]:
    """(dotted name, value) of every integer setting that scales memory, nested configs included."""
    for name, info in type(config).model_fields.items():
        value = getattr(config, name)
        if isinstance(value, BaseModel):
            yield from count_fields(value, f"{prefix}{name}.")
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        flag = extra.get("scales_memory")
        if flag is False or (flag is None and not COUNT_FIELD.search(name)) or "seed" in name:
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            yield f"{prefix}{name}", value


def check_memory_bounds(method: str, config: BaseModel, *, unit_bytes: int = MIN_UNIT_BYTES,
                        limit: int | None = None) -> None:
    """Raise ConfigError for a count whose lower-bound memory (value x ``unit_bytes``) exceeds ``limit``."""
    limit = memory_limit() if limit is None else limit
    for name, value in count_fields(config):
        need = value * max(unit_bytes, MIN_UNIT_BYTES)
        if need > limit:
            raise ConfigError(
                f"{method}.{name}={value:,} needs at least {_human(need)} of memory ({value:,} x {unit_bytes} bytes, "
                f"one input of at least one float32 each), more than the {_human(limit)} available",
                hint=f"use {method}.{name} <= {limit // max(unit_bytes, MIN_UNIT_BYTES):,} (in practice far less: "
                f"each unit holds a whole input); {MEMORY_ENV} sets the limit")
