"""Numbers as people read them: SI prefixes with units ("25.6 M", "8.18 GFLOPs", "12.5 ms"), chart
axes that use them, speed-up wording that is right both ways, and names elided in the middle."""
from __future__ import annotations

import re

import pyqtgraph as pg

PREFIXES = (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3))


def si(value: float, unit: str = "", digits: int = 3) -> str:
    """``value`` with an SI prefix and ``unit``, ``digits`` significant digits: 25557032 ->
    "25.6 M", (8.18e9, "FLOPs") -> "8.18 GFLOPs"; no scientific notation."""
    if value is None:
        return "–"
    v = float(value)
    if v == 0:
        return f"0 {unit}".strip()
    for prefix, k in PREFIXES:
        if abs(v) >= k:
            return f"{v / k:.{digits}g} {prefix}{unit}".strip()
    text = f"{v:.{digits}g}" if abs(v) >= 1e-3 else f"{v:.2e}"
    return f"{text} {unit}".strip()


def duration_ms(ms: float, digits: int = 3) -> str:
    """A time given in milliseconds: "850 ms", "1.25 s", "42 µs" (never "1 kms")."""
    if ms is None:
        return "–"
    v = float(ms)
    if v == 0:
        return "0 ms"
    if abs(v) >= 1000:
        return f"{v / 1000:.{digits}g} s"
    if abs(v) < 1:
        return f"{v * 1000:.{digits}g} µs"
    return f"{v:.{digits}g} ms"


def speed_text(before_ms: float, after_ms: float) -> str:
    """"2.00× faster" or "1.30× slower" (never "0.77× faster")."""
    if not before_ms or not after_ms:
        return "not measured"
    r = before_ms / after_ms
    if abs(r - 1) < 0.005:
        return "same speed"
    return f"{r:.2f}× faster" if r > 1 else f"{1 / r:.2f}× slower"


def elide_middle(text: str, n: int) -> str:
    """``text`` in at most ``n`` characters, the middle replaced by "…" (both ends stay readable:
    "encoder.layers.…mlp.0")."""
    if len(text) <= n:
        return text
    head = (n - 1) // 2
    tail = n - 1 - head
    return text[:head] + "…" + text[-tail:]


def abbreviate_path(name: str, fits) -> str:
    """A dotted module path shortened until ``fits(text)``, keeping what tells rows apart (the
    numbered components and the tail): components without digits shrink to their first letter,
    those before the last numbered one first ("encoder.layers.encoder_layer_11.mlp.0" ->
    "e.l.encoder_layer_11.mlp.0", as loggers abbreviate packages), then the ones after it; then
    the leading components without digits are dropped ("…encoder_layer_11.m.0"); then numbered
    components shrink to letter and number ("…e…11.m.0"); then the middle is elided."""
    if fits(name):
        return name
    parts = name.split(".")
    numbered = [i for i, p in enumerate(parts[:-1]) if any(c.isdigit() for c in p)]
    if re.search(r"\d$", parts[-1]):  # a block's own name ends in its number: "encoder_layer_0"
        numbered.append(len(parts) - 1)
    last_num = numbered[-1] if numbered else 0
    order = [i for i in range(len(parts) - 1) if i < last_num] + \
            [i for i in range(len(parts) - 1) if i > last_num]
    for i in order:
        if len(parts[i]) > 1 and not any(c.isdigit() for c in parts[i]):
            parts[i] = parts[i][0]
            text = ".".join(parts)
            if fits(text):
                return text
    text = ".".join(parts)
    lead = 0  # leading components without digits (already single letters): the least telling
    while lead < last_num and not any(c.isdigit() for c in parts[lead]):
        lead += 1
    head = "…" if lead else ""
    text = head + ".".join(parts[lead:])
    if fits(text):
        return text
    # then numbered components keep their first letter and their number ("encoder_layer_11" -> "e…11")
    for i in range(lead, len(parts) - 1):
        m = re.match(r"^(\D)\D*?(\d+)$", parts[i])
        if m and len(parts[i]) > len(m.group(2)) + 2:
            parts[i] = f"{m.group(1)}…{m.group(2)}"
            text = head + ".".join(parts[lead:])
            if fits(text):
                return text
    n = len(text)
    while n > 4 and not fits(elide_middle(text, n)):
        n -= 1
    return elide_middle(text, n)


class SIAxis(pg.AxisItem):
    """An axis whose tick labels are SI-prefixed numbers with a unit (pyqtgraph's default falls back
    to "8e+07"); the axis' own automatic exponent label is off."""

    def __init__(self, orientation: str, unit: str = "", **kw):
        super().__init__(orientation, **kw)
        self.unit = unit
        self.enableAutoSIPrefix(False)

    def tickStrings(self, values, scale, spacing):  # noqa: N802 - pyqtgraph's name
        if self.unit == "ms":
            return [duration_ms(v * scale) for v in values]
        return [si(v * scale, self.unit) for v in values]
