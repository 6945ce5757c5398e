"""The plain loop nest: SIMD vectors of j, each row's values made lane by lane as the
operations' `lower` makes them (one state a lane, merged at the end, or one state shared
by the lanes for a reduction that says so: a K-min)."""

from __future__ import annotations

from .base import LoopNest, register


@register
class Lanes(LoopNest):
    """SIMD across j."""

    name = like = "lanes"
