"""The K smallest values (and their indices) of F over j: KMin, ArgKMin, KMin_ArgKMin.

Registered with the other reductions (`reductions.REDUCTIONS`) on import of the IR package.
"""

from __future__ import annotations

import functools

import numpy as np

from .reductions import _INF, Reduction, Scratch, _columns, _filled, _less_nan_last, _wins, register

RING = 64  # j vectors a SIMD K-min logs before inserting their candidates (`_KMin._log`)
# (room for as many more: a loop nest checks `full` after each iteration, of up to 16 j vectors)
LOG_ROOM = RING + 16
# lists one flush walks together (`_KMin._flush`): up to 4, of at most 64 lanes in all (registers)
GROUP, GROUP_LANES = 4, 64


class _KMin(Reduction):
    """The K smallest values per component, sorted, NaN after every number and ties
    in order of j: a branch-free insertion into a sorted list.

    In SIMD code every lane feeds one scalar list (`lanes_share_state`): the j loop logs
    each vector of F with its candidates, found by one compare with the list's threshold
    and no branch, and the candidates of a log are inserted at once (`_log`, `_flush`),
    the list then held in two vectors (values, indices) and each candidate entering by
    one compare with the whole list (`_insert_lane`).  Each component's list lies
    in two arrays padded to a power of two, read as those vectors; scalar code (the tail,
    a screened kernel, the GPU) inserts one j at a time, unrolled over the ranks
    (`_enter`).  The threshold t, kept with the list and remade only when it changes,
    folds the NaN rule into that one compare: for a number x, x <= t exactly when x
    beats the K-th value (a number below it; any number where it is NaN; none where it is
    -inf, but -inf itself, which the insertion rejects as a tie).  A wide F keeps each of
    the K ranks in array slots, the insertion in one loop over the components."""

    needs_k = True
    with_value, with_index = True, False
    tile_rows = 4
    lanes_share_state = True
    blocks = False
    wide_state = True

    def outputs(self, dim_f, dim_g, k):
        shape = (k,) if dim_f == 1 else (k, dim_f)
        return ([(shape, "float")] if self.with_value else []) + ([(shape, "index")] if self.with_index else [])

    def init(self, em, ea, dims, k):
        es = em.with_lanes(None)  # one scalar list, whatever the SIMD width
        d = dims[0]
        nan = es.const(float("nan"))
        ity = es.index_const(0).type
        if em.is_wide(d):
            return {"v": [es.slot_array(d, nan) for _ in range(k)],
                    "i": [es.slot_array(d, es.index_const(-1), ity) for _ in range(k)],
                    "t": es.slot_array(d, nan)}
        # the lists stay in memory: the j loop reads only each one's threshold and last index, and
        # needs the registers (in registers, 2 K d values a row crowd out the rows' vectors); the
        # ranks of a component are consecutive, padded to `lanes` (never read as ranks)
        lanes = 1 << (k - 1).bit_length()
        el = es.with_lanes(lanes)
        lists = []
        for _ in range(d):
            lst = Scratch(v=es.pinned(es.vector_array(es.t, lanes)), i=es.pinned(es.vector_array(ity, lanes)),
                          lanes=lanes)
            es.store_vector(lst.v, el.const(float("nan")))
            es.store_vector(lst.i, el.index_const(-1))
            lists.append(lst)
        return {"v": [[es.at(lst.v, es.index_const(r)) for lst in lists] for r in range(k)],
                "i": [[es.at(lst.i, es.index_const(r)) for lst in lists] for r in range(k)],
                "t": [es.slot(nan) for _ in range(d)], "lists": lists}

    def _tables(self, st):
        """The per-rank tables `_columns` walks: values, indices, the threshold (one rank)."""
        return [st["v"], st["i"], [st["t"]]]

    def update(self, em, ea, st, f, g, j):
        if em.lanes is not None and st.get("lists") is not None:  # (a view of the state's slots has none)
            self._log(em, st, f, j)
            return
        for (vcol, icol, (tp,)), (x,) in _columns(em.with_lanes(None), self._tables(st), [f]):
            self._enter(em, vcol, icol, tp, lambda last_v, t, x=x: em.cmp("<=", x, em.splat(t)), lambda x=x: x, j)

    def _log(self, em, st, f, j):
        """SIMD: each component's j vectors logged with no branch, RING of them: the vector of x, and
        a word of its candidates (x <= t, NaN x too).  Where the log is full (`full`), the loop over j
        leaves for `end_blocks`, which inserts the candidates (`_flush`), as at the vector part's end.
        The loop has no data-dependent branch (the j vectors with candidates come at random: a branch
        on them is mispredicted about as often as taken, and resolves late, after the compares), nor
        data-dependent address.  The threshold is older, remade once a log: it lets more j through
        (whose insertion changes nothing), most while the first j fill the list; so a log holds
        `limit` vectors, 1 after the list fills, doubled at each flush up to RING (`end_blocks`)."""
        es = em.with_lanes(None)
        ity = es.index_const(0).type
        if "logs" not in st:  # made on first use (by the SIMD code only); empty when the state is at rest
            words = -(-LOG_ROOM // es.WORDS) * es.WORDS
            st["logs"] = [Scratch(x=em.array(em.t, LOG_ROOM + em.unaliased_room()),  # (where it starts: `end_blocks`)
                                  words=es.vector_array(em.mask_word_type, words),
                                  **{name: es.entry_slot(es.index_const(init), ity)
                                     for name, init in (("steps", 0), ("j", 0), ("limit", RING), ("start", 0))})
                          for _ in st["lists"]]
        for ((_, _, (tp,)), (x,)), log in zip(_columns(es, self._tables(st), [f]), st["logs"]):
            steps = es.load(log.steps)
            em.store(em.at(log.x, es.index_sum(es.load(log.start), steps)), x)
            candidates = em.not_(em.cmp(">", x, em.splat(es.load(tp))))
            es.store(es.at(log.words, steps), em.mask_word(candidates))
            es.store(log.steps, es.index_add(steps, 1))
            es.store(log.j, em.lane(j, es.index_const(0)))

    def full(self, em, ea, states):
        """The tile's logs (filled together, flushed together: one count of steps, one limit) hold
        `limit` vectors, or a list is open (after each vector: its threshold lets every j through)."""
        states = [st for st in states if st.get("logs")]
        if em.lanes is None or not states:
            return None
        es = em.with_lanes(None)
        log = states[0]["logs"][0]
        opened = [es.not_(_filled(es, es.load(icol[-1])))
                  for st in states for ((_, icol, _), _) in _columns(es, self._tables(st))]
        return functools.reduce(es.or_, opened, es.index_cmp(">=", es.load(log.steps), es.load(log.limit)))

    def _flush(self, em, chains, k):
        """The logged candidates of `chains` (list, log, threshold slot of a component of a row, their
        logs filled together) into their lists of K, emptying the logs: one call of a function of the
        module (`_flush_body`), whose registers do not crowd the j loop's."""
        es = em.with_lanes(None)
        name = (f"keomlir_kmin_flush_{'f32' if em.bits == 32 else 'f64'}x{em.lanes}_k{k}_log{RING}"
                f"_by{len(chains)}")
        log = chains[0][1]
        params = [es.load(log.steps), es.load(log.j)]
        for lst, lg, tp in chains:
            params += [lst.v, lst.i, em.b.bitcast(em.at(lg.x, es.load(lg.start)), lg.x.type), lg.words, tp]
        em.outlined(name, params, lambda fem, params: self._flush_body(fem, k, chains[0][0].lanes, *params))
        for _, lg, _ in chains:
            es.store(lg.steps, es.index_const(0))

    def update_screened(self, em, ea, st, may_beat, exact, j):
        (vcol, icol, (tp,)), _ = next(_columns(em.with_lanes(None), self._tables(st)))  # a scalar F: one column
        self._enter(em, vcol, icol, tp, lambda last_v, t: may_beat(last_v), lambda: exact()[0], j)

    def _enter(self, em, vcol, icol, tp, below, value, j):
        """Insert value() into one component's list (slots vcol, icol, threshold tp) where it beats
        the K-th.  Most candidates do not: per j vector, one test below(K-th value, threshold) and
        one of the list having an empty slot (which takes anything, NaN too).  Where some lane may
        enter, value() is made (exact values, where below() was a screen) and the lanes at or below
        the threshold are inserted one by one in order of j, found from the bits of that mask (each
        rechecked, as the insertions lower the K-th)."""
        es = em.with_lanes(None)
        k = len(vcol)
        open_ = es.not_(_filled(es, es.load(icol[k - 1])))
        t = es.load(tp)
        if em.lanes is None:
            with em.if_then(es.or_(open_, below(es.load(vcol[k - 1]), t))):
                self._insert(es, vcol, icol, value(), j, tie_break=False)
                self._retire(es, vcol, icol, tp)
            return
        with em.if_then(es.or_(open_, em.any(below(es.load(vcol[k - 1]), t))), rare=True):
            x = value()
            with em.set_lanes(em.or_(em.splat(open_), em.cmp("<=", x, em.splat(t)))) as lane:
                xl = em.lane(x, lane)
                last_v, last_i = es.load(vcol[k - 1]), es.load(icol[k - 1])
                with es.if_then(es.or_(es.not_(_filled(es, last_i)), _less_nan_last(es, xl, last_v))):
                    self._insert(es, vcol, icol, xl, em.lane(j, lane), tie_break=False)
                    self._retire(es, vcol, icol, tp)

    def _flush_body(self, em, k, lanes, steps, j_last, *chains):
        """`_flush`'s function: each chain's list (arrays list_v, list_i of `lanes`, the K-th at rank
        k - 1) held in registers as a vector of its values and one of its indices while the candidates
        of its log's `steps` vectors (log_x, their words log_words; the last at j_last) are inserted,
        then stored, its threshold (tp) remade.  The candidates are gathered, in order of j (`_gather`,
        each WORDS vectors of the logs with some), then inserted one a step, each chain's n-th at
        once (a chain with fewer inserting nothing), by one compare with the whole list
        (`_insert_lane`).  One chain's insertions wait each on the one before; the core overlaps the
        chains', and no candidate waits for its vector's to be found.  Those that no longer beat the
        K-th (few: the ramp of `limit` keeps the logged threshold close) change nothing.  The loops run at least once, each under a branch on there being some: where the logs
        hold one vector with candidates, or one candidate, no loop's exit is mispredicted."""
        es, el = em.with_lanes(None), em.with_lanes(lanes)
        align = [min(64, lanes * bits // 8) for bits in (em.bits, 64)]
        chains = [chains[c:c + 5] for c in range(0, len(chains), 5)]
        first_j = es.index_sum(j_last, es.index_from(0, es.index_scale(es.index_add(steps, -1), em.lanes)))
        ity = el.index_const(0).type
        lists = [(el.slot(es.load_vector(list_v, align[0])), el.slot(es.load_vector(list_i, align[1]), ity))
                 for list_v, list_i, _, _, _ in chains]
        filled = functools.reduce(es.and_, [_filled(es, es.load(es.at(list_i, es.index_const(k - 1))))
                                            for _, list_i, _, _, _ in chains])
        buffers = [(es.array(es.t, LOG_ROOM * em.lanes), es.array(em.lane_offsets().type.element, LOG_ROOM * em.lanes),
                    es.slot(es.index_const(0), es.index_const(0).type)) for _ in chains]
        with es.loop(es.index_const(0), es.index_divmod(es.index_add(steps, es.WORDS - 1), es.WORDS)[0]) as chunk:
            found = [es.nonzero_words(log_words, es.index_scale(chunk, es.WORDS), steps)
                     for _, _, _, log_words, _ in chains]
            most = _index_max(es, [n for _, n in found])
            with es.if_then(es.index_cmp(">", most, es.index_const(0))):
                logs = [(log_x, log_words) + f for (_, _, log_x, log_words, _), f in zip(chains, found)]
                self._gather(em, most, logs, buffers, filled)
        most = _index_max(es, [es.load(n) for _, _, n in buffers])
        # full lists and j within 2^31 of the log's: the indices as offsets from its first j, i32 lanes
        narrow = es.and_(filled, es.index_cmp("<", first_j, es.index_const(2 ** 31 - 1)))
        with es.if_then(es.index_cmp(">", most, es.index_const(0))), es.if_else(narrow) as (numbers, any_):
            with numbers:
                near = [el.slot(el.index_offsets(el.load(idxs), first_j), el.lane_offsets().type) for _, idxs in lists]
                with es.loop_once(es.index_const(0), most) as q:
                    for (vals, _), near_i, (xs, offsets, n) in zip(lists, near, buffers):
                        self._insert_lane(el, vals, near_i, es.load(es.at(xs, q)), es.load(es.at(offsets, q)),
                                          es.index_cmp("<", q, es.load(n)), numbers_only=True)
                for (_, idxs), near_i in zip(lists, near):
                    el.store(idxs, el.offset_indices(el.load(near_i), first_j))
            with any_, es.loop_once(es.index_const(0), most) as q:
                for (vals, idxs), (xs, offsets, n) in zip(lists, buffers):
                    self._insert_lane(el, vals, idxs, es.load(es.at(xs, q)),
                                      es.index_sum(first_j, es.offset_index(es.load(es.at(offsets, q)))),
                                      es.index_cmp("<", q, es.load(n)))
        for (list_v, list_i, _, _, tp), (vals, idxs) in zip(chains, lists):
            v = el.load(vals)
            es.store_vector(list_v, v, align[0])
            es.store_vector(list_i, el.load(idxs), align[1])
            es.store(tp, self._threshold(es, el.lane(v, es.index_const(k - 1))))

    @staticmethod
    def _gather(em, most, logs, buffers, filled):
        """The candidates of the vectors of each log (log_x, log_words, the positions of its vectors
        with some, their number: `nonzero_words`) appended to its buffers (values, offsets from the
        log's first j, slot of their number), in order of j, but NaN where the lists are `filled` (a
        NaN enters no full list: NaN is last, and ties keep the lower j).  The logs walked in step,
        their n-th vectors with candidates at once, `most` steps."""
        es = em.with_lanes(None)
        ats = [es.slot(positions, positions.type) for _, _, positions, _ in logs]
        with es.loop_once(es.index_const(0), most) as p:
            for (log_x, log_words, _, m), (xs, offsets, n), at in zip(logs, buffers, ats):
                v = em.first_offset(es.load(at))  # (0 past the last: a logged vector, masked)
                es.store(at, em.shift_down(es.load(at)))
                x = em.load(em.at(log_x, v))
                number = em.or_(em.not_(em.isnan(x)), em.splat(es.not_(filled)))
                live = em.and_(em.splat(es.index_cmp("<", p, m)), number)
                mask = em.and_(em.word_mask(es.load(es.at(log_words, v))), live)
                count = es.load(n)
                em.store_scalars(es.at(xs, count), em.compress(x, mask))
                offsets_v = em.lane_offsets(es.index_scale(v, em.lanes))
                em.store_scalars(es.at(offsets, count), em.compress(offsets_v, mask))
                es.store(n, es.index_sum(count, em.count(mask)))

    @staticmethod
    def _insert_lane(el, vals, idxs, x, xi, some, numbers_only=False):
        """(x, xi) into the list in the vector slots vals, idxs (of `el`'s width) where the i1 `some`
        holds, with no branch: one compare with the whole list and two selects per vector.  The ranks
        r where x goes before the list's entry (an empty slot, or a number above x or NaN, for x a
        number) are those from x's place on; there, the entries move up one rank (the K-th dropped)
        and x's place takes x, so that equal values keep the lower j first and an x that does not beat
        the K-th changes nothing below rank K.  numbers_only: x is a number and the list full (no
        empty slot): one compare (the indices may then be any integers: offsets, `index_offsets`)."""
        v, i = el.load(vals), el.load(idxs)
        xv = el.splat(x)
        before = el.not_(el.cmp(">=", xv, v))
        if not numbers_only:
            before = el.or_(el.not_(_filled(el, i)), el.and_(before, el.not_(el.isnan(xv))))
        before = el.and_(before, el.splat(some))
        shifted = el.shift_up(before, before.type.element(0))  # the ranks after x's place
        # (lane 0 of a list moved up is never taken: `shifted` is false there)
        el.store(vals, el.select(shifted, el.shift_up(v), el.select(before, xv, v)))
        el.store(idxs, el.select(shifted, el.shift_up(i), el.select(before, el.splat(xi), i)))

    @classmethod
    def _retire(cls, em, vcol, icol, tp):
        em.store(tp, cls._threshold(em, em.load(vcol[len(vcol) - 1])))

    @staticmethod
    def _threshold(em, last_v):
        """The threshold of a list whose K-th value is last_v: the largest number below it (x <= t:
        x < K-th), +inf where the K-th is NaN (every number beats it), -inf where it is -inf (nothing
        does; x <= t holds for x = -inf, which the insertion rejects as a tie)."""
        t = em.select(em.isnan(last_v), em.const(_INF), em.float_below(last_v))
        return em.select(em.cmp("==", last_v, em.const(-_INF)), last_v, t)

    @staticmethod
    def _insert(em, vcol, icol, x, xi, tie_break):
        """Insert (x, xi) into the sorted list of one component, its K value and index
        slots vcol, icol (dropping the last)."""
        k = len(vcol)
        vals = [em.load(vcol[r]) for r in range(k)]
        idxs = [em.load(icol[r]) for r in range(k)]
        # before[r]: x goes before slot r (an empty slot, or x smaller: NaN last, then lower j)
        before = [em.or_(em.not_(_filled(em, idxs[r])),
                         _wins(em, "nan_last", x, xi, vals[r], idxs[r]) if tie_break else _less_nan_last(em, x, vals[r]))
                  for r in range(k)]
        if tie_break:  # an empty incoming entry inserts nothing
            before = [em.and_(_filled(em, xi), b) for b in before]
        for r in range(k):
            new_v = em.select(before[r - 1], vals[r - 1], x) if r else x
            new_i = em.select(before[r - 1], idxs[r - 1], xi) if r else xi
            em.store(vcol[r], em.select(before[r], new_v, vals[r]))
            em.store(icol[r], em.select(before[r], new_i, idxs[r]))

    def merge(self, em, ea, st, other):
        # the other list goes through a stack array and a loop: one insertion body, not K
        k = len(st["v"])
        for (vcol, icol, (tp,), ovcol, oicol), _ in _columns(em, self._tables(st) + [other["v"], other["i"]]):
            vals, idxs = em.array(em.t, k), em.array(em.index_const(0).type, k)
            for r in range(k):
                em.store(em.at(vals, em.index_const(r)), em.load(ovcol[r]))
                em.store(em.at(idxs, em.index_const(r)), em.load(oicol[r]))
            with em.loop(em.index_const(0), em.index_const(k)) as r:
                self._insert(em, vcol, icol, em.load(em.at(vals, r)), em.load(em.at(idxs, r)), tie_break=True)
            self._retire(em, vcol, icol, tp)

    def end_block(self, em, ea, st):
        self.end_blocks(em, ea, [st])

    def end_blocks(self, em, ea, states):
        """The SIMD code's logged candidates into the lists of a tile's rows (where its loop over j
        leaves: `full`), in groups of GROUP lists (`_flush`); the logs' next `limit`: 1 where a list
        was open, else twice the last, up to RING."""
        if em.lanes is None:
            return
        es = em.with_lanes(None)
        chains = [(lst, log, tp) for st in states if st.get("logs")
                  for ((_, _, (tp,)), _), lst, log in zip(_columns(es, self._tables(st)), st["lists"], st["logs"])]
        if not chains:
            return
        k = len(states[0]["v"])
        grown = es.index_scale(es.load(chains[0][1].limit), 2)
        grown = es.select(es.index_cmp("<", grown, es.index_const(RING)), grown, es.index_const(RING))
        opened = functools.reduce(es.or_, [es.not_(_filled(es, es.load(es.at(lst.i, es.index_const(k - 1)))))
                                           for lst, _, _ in chains])
        limit = es.select(opened, es.index_const(1), grown)
        size = max(1, min(GROUP, GROUP_LANES // chains[0][0].lanes))
        for c in range(0, len(chains), size):
            self._flush(em, chains[c:c + size], k)
        for _, log, _ in chains:
            es.store(log.limit, limit)
        # (a tile's first log, of one vector, lies where the last one's successor would have)
        em.place_runs([(log.x, log.start, log.j) for _, log, _ in chains])

    def finalize(self, em, ea, st):
        if not isinstance(st["v"][0], list):
            return self._wide_finalize(em, st)
        flat_i = [em.load(p) for row in st["i"] for p in row]
        # a slot no j filled (fewer j than K, in a block-sparse row) reads +inf at index -1
        flat_v = [em.select(_filled(em, i), em.load(p), em.const(_INF))
                  for i, p in zip(flat_i, (p for row in st["v"] for p in row))]
        return ([flat_v] if self.with_value else []) + ([flat_i] if self.with_index else [])

    def _wide_finalize(self, em, st):
        """The (K, d) outputs, row-major, read from the K rank arrays (as `finalize`)."""
        k, d = len(st["v"]), st["v"][0].n

        def read(ranks, o):  # rank o // d, component o % d: picked among the K arrays
            r, c = em.index_divmod(o, d)
            vals = [em.load(em.elem(row, c)) for row in ranks]
            v = vals[k - 1]
            for q in range(k - 2, -1, -1):
                v = em.select(em.index_cmp("==", r, em.index_const(q)), vals[q], v)
            return v

        idx = em.wide(k * d, lambda o: read(st["i"], o))
        val = em.wide(k * d, lambda o: em.select(_filled(em, read(st["i"], o)), read(st["v"], o), em.const(_INF)))
        return ([val] if self.with_value else []) + ([idx] if self.with_index else [])

    def reference(self, F, G, k):
        M, N, d = F.shape
        if N < k:  # fewer j than K (a block-sparse row): the missing slots stay empty, +inf at index -1
            F = np.concatenate([F, np.full((M, k - N, d), np.inf)], axis=1)
        order = np.argsort(F, axis=1, kind="stable")[:, :k, :]
        vals = np.take_along_axis(F, order, axis=1)
        order = np.where(order < N, order, -1)
        if d == 1:
            order, vals = order[:, :, 0], vals[:, :, 0]
        return ([vals] if self.with_value else []) + ([order.astype(np.int64)] if self.with_index else [])


def _kmin(name, with_value, with_index):
    register(type(name, (_KMin,), {"name": name, "with_value": with_value, "with_index": with_index}))


_kmin("KMin", True, False)
_kmin("ArgKMin", False, True)
_kmin("KMin_ArgKMin", True, True)


def _index_max(em, values):
    """The largest of scalar i64 values."""
    return functools.reduce(lambda a, b: em.select(em.index_cmp(">", a, b), a, b), values)
