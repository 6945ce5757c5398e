"""pykeops's block-sparse `ranges`: the 6-tuple checked against the problem's
sizes (so no kernel reads out of bounds) and put in the form kernels read."""

from __future__ import annotations

import numpy as np

RANGES_NAMES = ("ranges_i", "slices_i", "redranges_j", "ranges_j", "slices_j", "redranges_i")


def _integer_array(value, what):
    """A NumPy int64 copy of an integer array (NumPy, torch on any device, nested lists)."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    a = np.asarray(value)
    if a.dtype.kind not in "iu" and not (a.size == 0 and a.dtype.kind == "f"):
        raise TypeError(f"{what}: expected an integer array, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.int64)


def _check_half(arrays, names, n_rows, n_cols, rows_word, cols_word):
    """One direction of a ranges 6-tuple: blocks of rows, their slices, their intervals."""
    ranges, slices, red = arrays
    (rn, sn, dn) = names
    if ranges.ndim != 2 or ranges.shape[1] != 2:
        raise ValueError(f"{rn}: expected an integer array of shape (n_blocks, 2), got shape {ranges.shape}")
    if slices.shape != (ranges.shape[0],):
        raise ValueError(f"{sn}: expected shape ({ranges.shape[0]},), one end per block of {rn}, "
                         f"got shape {slices.shape}")
    if red.ndim != 2 or red.shape[1] != 2:
        raise ValueError(f"{dn}: expected an integer array of shape (n_intervals, 2), got shape {red.shape}")
    for a, name, limit, word in ((ranges, rn, n_rows, rows_word), (red, dn, n_cols, cols_word)):
        bad = np.flatnonzero((a[:, 0] < 0) | (a[:, 0] > a[:, 1]) | (a[:, 1] > limit))
        if bad.size:
            k = int(bad[0])
            raise ValueError(f"{name}[{k}] = [{a[k, 0]}, {a[k, 1]}) is not an interval of the {limit} {word} "
                             f"(need 0 <= start <= end <= {limit})")
    if slices.size:
        bad = np.flatnonzero((slices < 0) | (slices > red.shape[0]) | (np.diff(slices, prepend=0) < 0))
        if bad.size:
            k = int(bad[0])
            raise ValueError(f"{sn} must be non-decreasing ends in [0, {red.shape[0]}] (the length of {dn}); "
                             f"{sn}[{k}] = {slices[k]}")
        order = np.argsort(ranges[:, 0], kind="stable")
        starts, ends = ranges[order, 0], ranges[order, 1]
        overlap = np.flatnonzero(starts[1:] < ends[:-1])
        if overlap.size:
            a, b = int(order[overlap[0]]), int(order[overlap[0] + 1])
            raise ValueError(f"{rn}: blocks {a} and {b} share {rows_word} (each output row must belong to at "
                             f"most one block)")


def ranges_arrays(ranges):
    """The six arrays of a `ranges` 6-tuple as int64 NumPy arrays (TypeError or
    ValueError naming the entry when it is not one); their values are not checked."""
    if not isinstance(ranges, (tuple, list)) or len(ranges) != 6:
        raise ValueError("ranges: expected None or a 6-tuple (ranges_i, slices_i, redranges_j, ranges_j, "
                         f"slices_j, redranges_i) of integer arrays, got {type(ranges).__name__}"
                         f"{' of length ' + str(len(ranges)) if isinstance(ranges, (tuple, list)) else ''}")
    return [_integer_array(a, f"ranges[{k}] ({name})") for k, (a, name) in enumerate(zip(ranges, RANGES_NAMES))]


def check_ranges(ranges, n_rows_i, n_rows_j):
    """pykeops's block-sparse `ranges`: a 6-tuple (ranges_i, slices_i, redranges_j,
    ranges_j, slices_j, redranges_i) of integer arrays, checked against M = n_rows_i
    and N = n_rows_j so that no kernel reads out of bounds.  Returns int64 arrays."""
    arrays = ranges_arrays(ranges)
    names = [f"ranges[{k}] ({name})" for k, name in enumerate(RANGES_NAMES)]
    _check_half(arrays[:3], names[:3], n_rows_i, n_rows_j, "i rows", "j rows")
    _check_half(arrays[3:], names[3:], n_rows_j, n_rows_i, "j rows", "i rows")
    return arrays


def coalesce_intervals(slices, redranges):
    """Join each block's consecutive j intervals that touch ([a, b) then [b, c) -> [a, c)),
    as from_matrix makes them for neighbouring clusters: the same j in the same order."""
    n_blocks = len(slices)
    block_of = np.repeat(np.arange(n_blocks), np.diff(slices, prepend=0))
    joins = np.zeros(len(redranges), bool)
    joins[1:] = (block_of[1:] == block_of[:-1]) & (redranges[1:, 0] == redranges[:-1, 1])
    first = ~joins
    last = np.append(first[1:], True)[:len(first)]
    joined = np.ascontiguousarray(np.stack([redranges[first, 0], redranges[last, 1]], axis=1))
    new_slices = np.searchsorted(block_of[first], np.arange(n_blocks), side="right").astype(np.int64)
    return [new_slices, joined.reshape(-1, 2)]


