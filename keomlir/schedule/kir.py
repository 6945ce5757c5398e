"""A `.kir` text: a program and, if given, its schedule, as `keomlir ir` prints them, read back.

    reduce Sum over j  args(...)          the program (keomlir.ir.text)
      ...
      F = %6
    schedule:                             optional: how it runs, one `name = value` a field
      target = host
      dtype = float32
      rows = 4
      ...
    target: host                          optional: the target's descriptor, printed for reading

A schedule block may name any of its target's fields; the others follow from the program as
`schedule()` chooses them.  A field set to something other than its default for the program is
a decision of the text's (`Kir.decisions`): `keomlir opt` keeps those when passes change the
program and chooses the rest again.  Every field given must be what the schedule then has (a
derived one such as `wide_nodes` too): a schedule that does not fit its program is an error on
its line.  The descriptor's values are the named target's own: the file names its target.
"""

from __future__ import annotations

import dataclasses

from ..ir.text import IRSyntaxError, read_program, source_lines
from .choose import schedule as make_schedule
from .record import FIELDS, Schedule
from .targets import Target, target as find_target

DTYPES = ("float32", "float64", "float16", "bfloat16")
# fields a call's sizes decide: read as printed, never chosen again
PER_CALL_DERIVED = ("threads", "thread_strategy")


@dataclasses.dataclass(frozen=True)
class Kir:
    """A program, its schedule (None: the text had no schedule block) and whether the target's
    descriptor follows it."""

    program: object  # keomlir.ir.Program
    schedule: Schedule | None = None
    describe_target: bool = False
    decisions: tuple = ()  # (field, value): the schedule's fields not at the program's default

    def text(self):
        parts = [self.program.text()]
        if self.schedule is not None:
            parts.append(self.schedule.text())
            if self.describe_target:
                parts.append(self.schedule.target.text())
        return "\n".join(parts)


def kir_text(program, sched=None, describe_target=False):
    """What `keomlir ir` prints and `parse_kir` reads: the program, its schedule and descriptor."""
    return Kir(program, sched, describe_target).text()


def parse_kir(text, what="IR"):
    """The `Kir` of a text; IRSyntaxError (line, column, caret) if it is malformed or its
    schedule does not fit its program."""
    if not isinstance(text, str):
        raise TypeError(f"{what}: expected the IR as text, got {type(text).__name__}")
    sections = {"program": [], "schedule": [], "target": []}
    heads = {}
    part = "program"
    for number, line in source_lines(text):
        word = line.strip()
        if word == "schedule:" or word.startswith("target:"):
            part = "schedule" if word == "schedule:" else "target"
            if part in heads:
                raise IRSyntaxError(f"a second {part} block", line, number, line.index(word) + 1, what)
            if part == "target" and "schedule" not in heads:
                raise IRSyntaxError("a target descriptor follows a schedule block", line, number,
                                    line.index(word) + 1, what)
            heads[part] = (number, line)
            continue
        if part != "program" and "=" not in line:
            raise IRSyntaxError(f"expected 'name = value' in the {part} block", line, number,
                                len(line) - len(line.lstrip()) + 1, what)
        sections[part].append((number, line))
    program = read_program(sections["program"], what)
    if program is None:
        raise IRSyntaxError("no program: expected a line 'reduce NAME over j  args(...)'", "", 1, 1, what)
    if "schedule" not in heads:
        return Kir(program)
    sched, decisions = read_schedule(program, heads["schedule"], sections["schedule"], what)
    if "target" in heads:
        _check_descriptor(sched.target, heads["target"], sections["target"], what)
    return Kir(program, sched, "target" in heads, decisions)


def _entries(lines, what, part):
    """{name: (value text, number, line, value column)} of `name = value` lines."""
    found = {}
    for number, line in lines:
        name, _, value = line.partition("=")
        name_column = len(line) - len(line.lstrip()) + 1
        if name.strip() in found:
            raise IRSyntaxError(f"{name.strip()} is given twice in the {part} block", line, number, name_column,
                                what)
        value_column = len(name) + 2 + len(value) - len(value.lstrip())
        found[name.strip()] = (" ".join(value.split()), number, line, value_column)
    return found


def read_schedule(program, head, lines, what="IR"):
    """(Schedule, decisions) of a `schedule:` block's lines for `program`."""
    entries = _entries(lines, what, "schedule")

    def fail(name, message):
        _, number, line, column = entries[name]
        raise IRSyntaxError(message, line, number, column, what)

    tgt = find_target("host")
    if "target" in entries:
        try:
            tgt = find_target(entries["target"][0])
        except ValueError as e:
            fail("target", str(e))
    dtype = entries.get("dtype", ("float32",))[0]
    if dtype not in DTYPES:
        fail("dtype", f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    kind_fields = {name for name, f in FIELDS.items() if f.kind in ("all", tgt.kind)}
    for name, (_, number, line, _) in entries.items():
        if name not in FIELDS:
            raise IRSyntaxError(f"unknown schedule field {name!r}; fields of {tgt.name}: "
                                f"{', '.join(n for n in FIELDS if n in kind_fields)}", line, number,
                                len(line) - len(line.lstrip()) + 1, what)
        if name not in kind_fields:
            fail(name, f"{name} is a field of {'GPU' if tgt.kind == 'cpu' else 'CPU'} targets; {tgt.name} is a "
                       f"{tgt.kind.upper()} target")
    try:
        default = make_schedule(program, tgt, dtype=dtype)
    except ValueError as e:
        if "dtype" in entries:
            fail("dtype", str(e))
        number, line = head
        raise IRSyntaxError(str(e), line, number, len(line) - len(line.lstrip()) + 1, what) from None
    # decisions one at a time, in the order of FIELDS (the strategy first): a field's default
    # follows from those before it (strategy=contraction makes column_block 0)
    decisions, sched, errors = {}, default, {}
    settable = [n for n in FIELDS if n in entries and FIELDS[n].type != "derived"]
    while True:
        for name in settable:
            value, field = entries[name][0], FIELDS[name]
            if name in decisions or value == field.show(getattr(sched, name)):
                continue
            if field.per_call and value == "per call":
                parsed = None
            else:
                try:
                    parsed = field.parse(name, value)
                except ValueError as e:  # (perhaps no decision once a later field is decided)
                    errors[name] = str(e)
                    continue
            decisions[name] = parsed
            try:
                sched = make_schedule(program, tgt, dtype=dtype, overrides=tuple(sorted(decisions.items())))
            except ValueError as e:
                fail(name, str(e))
            break
        else:
            break
    for name in settable:
        if name in errors and entries[name][0] != FIELDS[name].show(getattr(sched, name)):
            fail(name, errors[name])
    sched = dataclasses.replace(sched, **{n: _per_call(entries[n][0]) for n in PER_CALL_DERIVED if n in entries})
    for name, (value, *_) in entries.items():
        shown = FIELDS[name].show(getattr(sched, name))
        if shown != value:
            fail(name, f"{name} = {value} does not follow from the program and the other fields: it is {shown}")
    return sched, tuple(sorted(decisions.items()))


def _per_call(text):
    if text == "per call":
        return None
    return int(text) if text.isdigit() else text


def _check_descriptor(tgt: Target, head, lines, what):
    """The descriptor block names the schedule's target and only fields of its descriptor."""
    number, line = head
    name = line.strip()[len("target:"):].strip()
    if name != tgt.name:
        raise IRSyntaxError(f"the descriptor of {name!r} follows a schedule for {tgt.name!r}", line, number,
                            line.index("target:") + 9, what)
    known = [n for n, _ in tgt.fields()]
    for field, (_, number, line, _) in _entries(lines, what, "target").items():
        if field not in known:
            raise IRSyntaxError(f"unknown field {field!r} of a {tgt.kind.upper()} target's descriptor; its "
                                f"fields: {', '.join(known)}", line, number, len(line) - len(line.lstrip()) + 1,
                                what)


def reschedule(kir, program, target=None, dtype=None, overrides=()):
    """The schedule of `program` (the text's, after passes) as the text decided: on its target and
    dtype (or those given), its decisions then `overrides` applied, and its per-call fields kept."""
    old = kir.schedule
    tgt = find_target(target) if target is not None else old.target if old is not None else find_target("host")
    dtype = dtype or (old.dtype if old is not None else "float32")
    decisions = dict(kir.decisions if old is not None and old.target.kind == tgt.kind else ())
    decisions.update(overrides)
    sched = make_schedule(program, tgt, dtype=dtype, overrides=tuple(sorted(decisions.items())))
    if old is not None and old.target.kind == tgt.kind:
        sched = dataclasses.replace(sched, **{n: getattr(old, n) for n in PER_CALL_DERIVED})
    return sched
