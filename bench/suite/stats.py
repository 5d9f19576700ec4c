"""Medians with min–max, and ratios measured side by side."""

import statistics
from typing import Any


def summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values), "values": values}


def fmt(s: dict[str, Any] | None, digits: int = 2, unit: str = "") -> str:
    if not s:
        return "n/a"
    return f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"
