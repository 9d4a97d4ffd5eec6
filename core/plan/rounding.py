"""``--round-to auto`` per group: the measured multiple is a ceiling, never a reason to leave a
narrow group (the demo's 8-32 channels) unpruned."""
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
