"""The schedules `keomlir tune` measures (keomlir/tune.py), made from the fields' own
definitions (`Field.search` in record.py), never from a list per formula.

Each searched field of the target's kind is varied alone from the program's default
schedule: a choice takes each of its other values (a capped one no more than the
target has: no 512-bit vectors on an AVX2 machine), a number is halved and doubled
(within its bounds and multiple; a field at 0, off, stays so).  What the program does
not allow (a strategy it has no use for, blocks too narrow) is left out: `schedule()`
refuses it.  The tuner then drops candidates that generate the same code as one before.
"""

from __future__ import annotations

from .choose import schedule
from .record import FIELDS
from .strategies import STRATEGIES


def searched(kind):
    """The fields `keomlir tune` varies on a target of `kind` (cpu, gpu), in FIELDS' order."""
    return [name for name, f in FIELDS.items() if f.search and f.kind in ("all", kind)]


def candidates(program, target, dtype="float32", fields=None):
    """[(overrides, Schedule)] of the single-field variations of `program`'s default schedule on
    `target`, in a fixed order: the nearest values of each field (a number halved and doubled,
    the next choices of a numeric one) in FIELDS' order, then the other loop nests (strategy),
    then the farther numeric choices; `fields`: only these fields."""
    names = searched(target.kind)
    if fields is not None:
        unknown = [f for f in fields if f not in names]
        if unknown:
            raise ValueError(f"fields: {', '.join(map(repr, unknown))} not searched; searched fields on "
                             f"{target.name}: {', '.join(names)}")
        names = [n for n in names if n in fields]
    base = schedule(program, target, dtype=dtype)
    found = []
    for name in names:
        for tier, value in values(FIELDS[name], getattr(base, name), target):
            if name == "strategy" and not STRATEGIES[value].default:  # registered from outside: by name only
                continue
            overrides = ((name, value),)
            try:
                found.append((tier, overrides, schedule(program, target, dtype=dtype, overrides=overrides)))
            except ValueError:  # not a schedule of this program
                pass
    return [(overrides, sched) for _, overrides, sched in sorted(found, key=lambda f: f[0])]  # (stable)


def values(field, default, target):
    """(tier, value) of each value a searched field takes besides its `default`: tier 0 for the
    nearest (a number halved or doubled, a numeric choice next to the default, a flag turned),
    1 for a choice of another kind (another loop nest: a large change, rarely the faster), 2 for
    the farther numeric choices."""
    if field.choices:
        cap = getattr(target, field.cap) if field.cap else None
        allowed = [c for c in field.choices if cap is None or c <= cap]
        if default not in allowed or not isinstance(default, int):
            return [(1, c) for c in allowed if c != default]
        at = allowed.index(default)
        return [(0 if abs(k - at) == 1 else 2, c) for k, c in enumerate(allowed) if k != at]
    if field.type == "bool":
        return [(0, not default)]
    if field.type not in ("int", "bytes") or not default:
        return []
    found = []
    for value in (default // 2, default * 2):
        value = value // field.multiple * field.multiple
        if value != default and value >= field.low and (field.high is None or value <= field.high):
            found.append((0, value))
    return found


def combine(first, second):
    """The union of two override sets, or None where they set one field differently."""
    merged = dict(first)
    for name, value in second:
        if merged.setdefault(name, value) != value:
            return None
    return tuple(sorted(merged.items()))


def text(overrides):
    """Overrides as `keomlir ir --schedule` and $KEOMLIR_SCHEDULE read them ('default': none)."""
    return ",".join(f"{name}={FIELDS[name].show(value).replace(' ', '+')}" for name, value in overrides) \
        or "default"
