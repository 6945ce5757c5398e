"""Drawings of the page as SVG text, made here (no Graphviz needed): a program's graph in
layers and a horizontal bar chart.

The graph's layout is the simple layered one: a node's layer is the length of the
longest path from a leaf to it (the reduction at the bottom), a leaf (variable, constant)
one layer above its first user; each layer is ordered by the mean position of its operands in the layers above
(two sweeps of the barycenter heuristic, which removes most crossings of small DAGs),
then placed left to right and centered.
"""

from __future__ import annotations

from html import escape

from ..ir.node import index_name, ssa_nodes

# fill colors by node.cat, the indices a node depends on (as `keomlir ir --emit dot`)
CAT_COLORS = {0: "#d9d9d9", 1: "#9ecae1", 2: "#a1d99b", 3: "#fdae6b"}
CAT_LEGEND = ((0, "parameters, constants"), (1, "i"), (2, "j"), (3, "i and j"))
CHAR_W, LINE_H, PAD, GAP_X, GAP_Y = 7.2, 15, 8, 18, 46


def _nodes(program):
    """[(key, label lines, cat, operand keys)] of every distinct node, operands first, then the
    reduction; keys are SSA names as `keomlir ir` prints them."""
    names = dict(program.names)
    nodes = ssa_nodes(program.roots())
    ids, found = {id(n): key for key, n in nodes.items()}, []
    for key, n in nodes.items():
        attrs = n.op.format_attrs(n, names)
        found.append((key, [f"{key} = {n.name}" + (f"[{attrs}]" if attrs else ""),
                            f"dim {n.dim}, {index_name(n.cat)}"], n.cat, [ids[id(a)] for a in n.args]))
    k = f", K={program.opt_arg}" if program.opt_arg is not None else ""
    roots = [ids[id(r)] for _, r in program.roots()]
    found.append(("reduction", [f"{program.reduction}{k} over j", " ".join(lb for lb, _ in program.roots())],
                  None, roots))
    return found


def graph(program):
    """The program's DAG as an SVG element: boxes colored by index, edges from operands to users."""
    nodes = _nodes(program)
    layer, size = {}, {}
    for key, lines, _, args in nodes:
        layer[key] = 1 + max((layer[a] for a in args), default=-1)
        size[key] = (max(len(t) for t in lines) * CHAR_W + 2 * PAD, len(lines) * LINE_H + PAD)
    users = {key: [] for key, *_ in nodes}
    for key, _, _, args in nodes:
        for a in args:
            users[a].append(key)
    for key, _, _, args in nodes:  # a leaf just above its first user: shorter edges
        if not args and users[key]:
            layer[key] = min(layer[u] for u in users[key]) - 1
    rows = [[] for _ in range(max(layer.values()) + 1)]
    for key, *_ in nodes:
        rows[layer[key]].append(key)
    operands = {key: args for key, _, _, args in nodes}
    x = {}

    def place():
        for row in rows:
            left = 0.0
            for key in row:
                x[key] = left + size[key][0] / 2
                left += size[key][0] + GAP_X

    place()
    for sweep in range(2):  # down (by operands), then up (by users)
        order = rows[1:] if sweep == 0 else rows[-2::-1]
        for row in order:
            def mean(key, sweep=sweep):
                near = operands[key] if sweep == 0 else users[key]
                return sum(x[k] for k in near) / len(near) if near else x[key]
            row.sort(key=mean)
        place()
    width = max(sum(size[k][0] for k in row) + GAP_X * (len(row) - 1) for row in rows) + 2 * PAD
    tops, y = [], PAD + 2 * LINE_H  # room for the legend
    for row in rows:
        tops.append(y)
        y += max(size[k][1] for k in row) + GAP_Y
    height = y - GAP_Y + PAD
    pos = {}
    for row, top in zip(rows, tops):
        shift = (width - (sum(size[k][0] for k in row) + GAP_X * (len(row) - 1))) / 2
        for key in row:
            pos[key] = (x[key] + shift, top)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{width:.0f}" height="{height:.0f}" '
             f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="monospace" font-size="12">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>']
    left = PAD
    for cat, text in CAT_LEGEND:
        parts.append(f'<rect x="{left}" y="{PAD}" width="12" height="12" fill="{CAT_COLORS[cat]}" stroke="#555"/>'
                     f'<text x="{left + 16}" y="{PAD + 10}">{escape(text)}</text>')
        left += 16 + len(text) * CHAR_W + 14
    for key, _, _, args in nodes:  # edges first, under the boxes
        for k, a in enumerate(args):
            (x0, y0), (x1, y1) = pos[a], pos[key]
            y0 += size[a][1]
            mid = (y0 + y1) / 2
            parts.append(f'<path class="edge" d="M {x0:.1f} {y0:.1f} C {x0:.1f} {mid:.1f} {x1:.1f} {mid:.1f} '
                         f'{x1:.1f} {y1:.1f}" fill="none" stroke="#555" marker-end="url(#arrow)"/>')
            if len(args) > 1:
                parts.append(f'<text x="{(x0 + x1) / 2 + 3:.1f}" y="{mid:.1f}" font-size="9" fill="#777">{k}</text>')
    for key, lines, cat, _ in nodes:
        (cx, top), (w, h) = pos[key], size[key]
        fill = "#fff7bc" if cat is None else CAT_COLORS[cat]
        shape = "12" if cat is None else "5"
        parts.append(f'<g class="node" data-key="{escape(key)}"><rect x="{cx - w / 2:.1f}" y="{top:.1f}" '
                     f'width="{w:.1f}" height="{h:.1f}" rx="{shape}" fill="{fill}" stroke="#333"/>')
        for k, text in enumerate(lines):
            parts.append(f'<text x="{cx:.1f}" y="{top + PAD / 2 + LINE_H * (k + 0.8):.1f}" text-anchor="middle">'
                         f'{escape(text)}</text>')
        parts.append("</g>")
    return "\n".join(parts + ["</svg>"])


def bars(rows, unit="ms", scale=1e3):
    """A horizontal bar chart of (label, value) rows as an SVG element; values are shown times
    `scale`, in `unit`."""
    label_w = max([len(label) for label, _ in rows] + [4]) * CHAR_W + PAD
    bar_w, row_h = 420, 20
    top = max([v for _, v in rows] + [0]) or 1.0
    height = row_h * len(rows) + 2 * PAD
    width = label_w + bar_w + 110
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="bars" width="{width:.0f}" height="{height}" '
             f'viewBox="0 0 {width:.0f} {height}" font-family="monospace" font-size="12">']
    for k, (label, value) in enumerate(rows):
        y = PAD + k * row_h
        w = max(1.0, bar_w * value / top)
        parts.append(f'<text x="{label_w - 6:.1f}" y="{y + 14}" text-anchor="end">{escape(label)}</text>'
                     f'<rect class="bar" x="{label_w:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
                     f'fill="#4c78a8"/><text x="{label_w + w + 6:.1f}" y="{y + 14}">{value * scale:.3f} '
                     f'{escape(unit)}</text>')
    return "\n".join(parts + ["</svg>"])
