"""The loop-nest strategy a CPU kernel runs, one class a strategy, found by the Schedule's name.

The renderer (`renderer.py`) keeps the skeleton every strategy shares: the entry points, rows in
register tiles (`rows_body`), j in cache blocks, the scalar tail, lane states merged, partial
states.  A `LoopNest` fills in what differs, through these hooks (defaults: none of it):

- `program(program, schedule)`: what one kernel computes (the columns strategy: one block of b's columns);
- `load_j(pos, c, em)`: component c of a j variable read in the strategy's own layout (else None);
- `begin_cache_block(j0, j1, n)` / `end_cache_blocks()`: around the tiles of a block of j of a chunk;
- `begin_tile(row_ids)`: before a tile's rows make their values of no j;
- `vector_states(row_ids, start_state)`: the tile's states of the vector part (`one_state`: each
  row's scalar state, no lane states to merge);
- `tile_states(states)`: a context around the loops over j that update `states`;
- `vector_part(vec_rows, vec_states, j0, j1)`: the SIMD loop over j, returning where the tail starts;
- `update(rows, em, ea, states, j)`: the rows' states at the current j (SIMD or tail).

A strategy uses the kernel `k` through its documented attributes (`b`, `em`, `ea`, `em_v`,
`ea_v`, `lanes`, `block`, `schedule`, `program`, `red`, `contractions`, `row_ids`, `j`, `n_j`,
`j_nodes`) and methods (`at_j`, `base`, `load_data` (argument data read through `base`'s
pointers, half data converted to float32), `load_j`, `row_values`, `update`, `fresh_state`,
`cells_of`, `save_state`, `load_state`).  Registering a subclass (`register`) makes its name a
valid `strategy` of the schedule (chosen by name only, never by default; its fields chosen as
for the built-in strategy it is `like`).
"""

from __future__ import annotations

import contextlib

from ....schedule import strategies as schedule_strategies
from ..emitter import counted_loop
from ..skeleton import c64, imin

LOOP_NESTS: dict[str, type] = {}


class LoopNest:
    name = ""  # the Schedule's `strategy`
    like = "lanes"  # the built-in strategy whose schedule rules choose this one's fields
    one_state = False  # the vector part updates each row's scalar state (no lane states to merge)
    unroll = 1  # vectors of j per iteration of the SIMD loop

    def __init__(self, kernel):
        self.k = kernel

    # applies(program, target, threshold) -> bool (a staticmethod): where a strategy registered from
    # outside can run; None: where the built-in strategy it is `like` applies
    applies = None

    @staticmethod
    def program(program, schedule):
        return program

    def load_j(self, pos, c, em):
        return None

    def begin_cache_block(self, j0, j1, n):
        pass

    def end_cache_blocks(self):
        pass

    def begin_tile(self, row_ids):
        pass

    def vector_states(self, row_ids, start_state):
        k = self.k
        if start_state:
            return [start_state(i) for i in row_ids]
        if self.one_state:
            return [k.fresh_state() for _ in row_ids]
        return [k.red.init(k.em_v, k.ea_v, k.dims, k.program.opt_arg) for _ in row_ids]

    def tile_states(self, states):
        return contextlib.nullcontext()

    def update(self, rows, em, ea, states, j):
        self.k.update(rows, em, ea, states, j)

    def vector_part(self, vec_rows, vec_states, j0, j1):
        """SIMD over the whole vectors of [j0, j1) (`unroll` of them an iteration), in blocks
        of the compensated sum (one, for a reduction without `blocks`); returns where the tail starts."""
        k = self.k
        b, lanes, block = k.b, k.lanes, k.block
        step = lanes * self.unroll
        if k.red.block_vectors is not None:
            block = min(block, k.red.block_vectors // self.unroll * step)
        if block % step:
            raise ValueError(f"strategy {self.name}: sum_block={block} is not a multiple of {self.unroll} "
                             f"vectors of {lanes} lanes")
        vec_end = b.sub(j1, b.srem(b.sub(j1, j0), c64(step)))

        def one_step(jv):
            for u in range(self.unroll):
                at = b.add(jv, c64(u * lanes)) if u else jv
                k.at_j(at)
                self.update(vec_rows, k.em_v, k.ea_v, vec_states, k.em_v.lane_indices(at))

        def end_blocks():
            k.red.end_blocks(k.em_v, k.ea_v, vec_states)

        with self.tile_states(vec_states):
            if k.red.blocks:
                with counted_loop(b, j0, vec_end, "jvb", block) as jb:
                    with counted_loop(b, jb, b.add(jb, imin(b, b.sub(vec_end, jb), c64(block))), "jv", step) as jv:
                        one_step(jv)
                    end_blocks()
            else:
                self._until_full(vec_states, j0, vec_end, step, one_step, end_blocks)
        return vec_end

    def _until_full(self, states, j0, end, step, one_step, end_blocks):
        """The vectors of [j0, end), `end_blocks()` each time the loop leaves: where a state is `full`
        after a step (it goes on from the next) and at the end.  The code that end_blocks makes is
        out of the loop, so that the loop's registers are its own."""
        b, k = self.k.b, self.k
        with b.goto_block(k.em.entry):
            b.position_at_start(k.em.entry)
            resume = b.alloca(j0.type)  # where the loop goes on (promoted to a register)
        b.store(j0, resume)
        outer, head, left, done = (b.append_basic_block(f"jv.{n}") for n in ("resume", "head", "left", "done"))
        b.branch(outer)
        b.position_at_end(outer)
        start = b.load(resume)
        b.cbranch(b.icmp_signed("<", start, end), head, done)
        b.position_at_end(head)
        jv = b.phi(j0.type, name="jv")
        jv.add_incoming(start, outer)
        one_step(jv)
        nxt = b.add(jv, c64(step))
        b.store(nxt, resume)
        stay = b.icmp_signed("<", nxt, end)
        full = k.red.full(k.em_v, k.ea_v, states)
        if full is not None:
            stay = b.and_(stay, b.not_(full))
        jv.add_incoming(nxt, b.block)
        b.cbranch(stay, head, left)
        b.position_at_end(left)
        end_blocks()
        b.branch(outer)
        b.position_at_end(done)


def register(cls):
    """Register a LoopNest subclass under its `name` (a class decorator).  A name the schedule
    does not know yet becomes a CPU strategy of its own, never a default, applying where
    `cls.applies` says (or where the strategy it is `like` applies), its fields as that one's."""
    if not (isinstance(cls, type) and issubclass(cls, LoopNest)) or not cls.name:
        raise TypeError(f"register: expected a LoopNest subclass with a name, got {cls!r}")
    if cls.name in LOOP_NESTS:
        raise ValueError(f"loop nest {cls.name!r} is already registered ({LOOP_NESTS[cls.name].__qualname__})")
    known = schedule_strategies.STRATEGIES
    if cls.name not in known:
        if known.get(cls.like) is None or known[cls.like].kind != "cpu":
            raise ValueError(f"loop nest {cls.name!r}: like={cls.like!r} is not a CPU strategy "
                             f"({', '.join(n for n, s in known.items() if s.kind == 'cpu')})")
        doc = (cls.__doc__ or cls.name).strip().splitlines()[0]
        schedule_strategies.register(schedule_strategies.Strategy(
            cls.name, "cpu", doc, cls.applies or known[cls.like].applies, default=False, like=cls.like))
    LOOP_NESTS[cls.name] = cls
    return cls


def loop_nest(name):
    """The LoopNest class of a strategy name."""
    found = LOOP_NESTS.get(name)
    if found is None:
        raise ValueError(f"schedule: strategy={name} has no CPU loop nest; those registered: "
                         f"{', '.join(LOOP_NESTS)}")
    return found
