"""``--round-to auto`` per group: the measured multiple is a ceiling, never a reason to leave a
narrow group (the demo's 8-32 channels) unpruned; and rounding per group toward a FLOPs or
parameter target, so that multiples do not make a target jump."""
from __future__ import annotations

AUTO_FALLBACK = (8, 4, 1)  # multiples a group too narrow for the measured one falls back to
AUTO_WIDTHS = 4  # a multiple m is used only by groups of >= 4*m channels: rounding moves <= 1/4


def group_multiples(n_channels: int, settings) -> list[int]:
    """The multiples a group may keep, best first: ``[round_to]``, or with ``round_auto`` those of
    round_to, 8, 4, 1 not above round_to and at most 1/AUTO_WIDTHS of the group's width."""
    if not settings.round_auto:
        return [settings.round_to]
    cands = sorted({settings.round_to, *AUTO_FALLBACK}, reverse=True)
    return [m for m in cands if m <= settings.round_to and (m == 1 or n_channels >= AUTO_WIDTHS * m)]


def used_multiples(used: dict) -> dict:
    """{multiple: [group ids]} for the plan's settings (JSON keys are strings)."""
    out: dict = {}
    for gid, m in sorted(used.items()):
        out.setdefault(str(m), []).append(int(gid))
    return out


def legal_counts(n: int, multiple: int, most: int) -> list[int]:
    """Channel counts a group of ``n`` may remove when what it keeps is a multiple of ``multiple``
    (at least one multiple kept), at most ``most``; 0 is always allowed."""
    m = max(1, multiple)
    return [0] + [c for c in range(1, min(most, n - 1) + 1) if (n - c) % m == 0 and n - c >= m]


def round_toward(counts: dict, legal: dict, value, reduction, target: float, tol: float = 0.005,
                 max_steps: int = 200) -> tuple[dict, float]:
    """Move single groups one legal step at a time toward ``target`` and return the closest
    ``(counts, reduction)`` seen: a uniform ratio rounded to channel multiples jumps (groups of
    16-32 channels at multiples of 4-8 move in steps of 12-25 %), but one group at a time does
    not. Of the steps predicted to come closer to the target, the one taken gives up the least
    importance per unit of reduction (``value(gid, a, b)``: the importance of a group's channels
    between counts a < b) when short of it, and regains the most when past it; it stops within
    ``tol`` or when no step comes closer. ``reduction(counts) -> float`` is the exact estimate."""
    cur = dict(counts)
    red = reduction(cur)
    best = (abs(red - target), dict(cur), red)
    # the reduction per channel of each group, measured once on one step (the rest is near linear)
    per_channel = {}
    for gid in legal:
        c = next((x for x in reversed(_neighbours(legal[gid], cur[gid])) if x is not None), None)
        if c is not None:
            per_channel[gid] = abs(reduction({**cur, gid: c}) - red) / abs(c - cur[gid])
    seen = {tuple(sorted(cur.items()))}
    for _ in range(max_steps):
        if abs(red - target) <= tol:
            break
        up = red < target
        options = []
        for gid in legal:
            new = _neighbours(legal[gid], cur[gid])[1 if up else 0]
            moved = per_channel.get(gid, 0.0) * abs(new - cur[gid]) if new is not None else 0.0
            if moved <= 0 or abs(red + (moved if up else -moved) - target) >= abs(red - target):
                continue  # no step, or one that jumps farther past the target than we are
            options.append((value(gid, *sorted((cur[gid], new))) / moved, gid, new))
        if not options:
            break
        _, gid, new = (min if up else max)(options)
        cur[gid] = new
        key = tuple(sorted(cur.items()))
        if key in seen:
            break
        seen.add(key)
        red = reduction(cur)
        if abs(red - target) < best[0]:
            best = (abs(red - target), dict(cur), red)
    return best[1], best[2]


def _neighbours(legal: list, c: int) -> tuple:
    """The legal counts just below and just above ``c`` (None where there is none)."""
    below = [x for x in legal if x < c]
    above = [x for x in legal if x > c]
    return (below[-1] if below else None), (above[0] if above else None)
