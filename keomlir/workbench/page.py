"""The page of `keomlir explain --html` and `Explanation.to_html()`: one self-contained HTML
file (no external file, font or script) that shows a formula's way through the compiler.

Tabs: the IR after each stage, each line new in its stage highlighted and the lines it
removed listed (lines are compared by the expression they compute, so renumbered SSA
values do not count as changes); the graph of the final program (`svg.graph`); the
schedule; LLVM IR before and after LLVM's optimizer; assembly; PTX; the time of each
stage as a bar chart; the bench numbers when asked.
"""

from __future__ import annotations

import re
from html import escape

from .._version import __version__
from . import svg

SSA_LINE = re.compile(r"^\s*(%\d+)\s*=\s*(.*?)\s*:\s*dim\b")
SSA_NAME = re.compile(r"%\d+")
TEXT_TABS = (("llvm", "LLVM IR"), ("llvm-opt", "LLVM IR (optimized)"), ("asm", "Assembly"), ("ptx", "PTX"))

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; color: #222; }
header { background: #2d3e50; color: #fff; padding: 10px 18px; }
header h1 { font-size: 18px; margin: 0 0 6px 0; font-family: monospace; }
header table { font-size: 13px; border-collapse: collapse; }
header td { padding: 1px 12px 1px 0; vertical-align: top; }
header td:first-child { color: #b8c7d6; }
nav { background: #eef1f4; padding: 6px 12px; border-bottom: 1px solid #ccd; position: sticky; top: 0; }
nav button { font: inherit; font-size: 14px; border: 1px solid #aab; background: #fff; padding: 4px 12px;
  margin: 2px; border-radius: 4px; cursor: pointer; }
nav button.active { background: #2d3e50; color: #fff; border-color: #2d3e50; }
section.panel { padding: 12px 18px; }
pre { font-size: 12.5px; background: #f7f7f7; border: 1px solid #e0e0e0; padding: 8px; overflow-x: auto; }
pre span.new { background: #d4f7d4; display: block; }
pre span.gone { background: #fbd9d9; text-decoration: line-through; display: block; }
details { margin-bottom: 10px; }
summary { cursor: pointer; font-weight: 600; }
summary .meta { font-weight: normal; color: #666; margin-left: 10px; }
table.bench { border-collapse: collapse; font-size: 13px; }
table.bench th, table.bench td { border: 1px solid #ccc; padding: 3px 10px; text-align: right; }
table.bench td:first-child, table.bench th:first-child { text-align: left; font-family: monospace; }
.note { color: #555; font-size: 13px; }
"""

SCRIPT = """
(function () {
  var buttons = document.querySelectorAll("nav button[data-tab]");
  function show(name) {
    for (var k = 0; k < buttons.length; k++) {
      var on = buttons[k].getAttribute("data-tab") === name;
      buttons[k].className = on ? "active" : "";
      document.getElementById("tab-" + buttons[k].getAttribute("data-tab")).hidden = !on;
    }
  }
  for (var k = 0; k < buttons.length; k++) {
    buttons[k].addEventListener("click", function (e) { show(e.currentTarget.getAttribute("data-tab")); });
  }
  var wanted = window.location.hash.slice(1);
  show(document.getElementById("tab-" + wanted) ? wanted : buttons[0].getAttribute("data-tab"));
})();
"""


def line_keys(text):
    """What each line of a stage's text computes: an SSA line's expression with its operands'
    expressions substituted for their names (so that renumbering changes nothing), any other
    line itself with the same substitution."""
    expr, keys = {}, []
    for line in text.splitlines():
        m = SSA_LINE.match(line)
        if m:
            body = SSA_NAME.sub(lambda r: expr.get(r.group(0), r.group(0)), m.group(2))
            expr[m.group(1)] = body
            keys.append(body)
        else:
            keys.append(SSA_NAME.sub(lambda r: expr.get(r.group(0), r.group(0)), line.strip()))
    return keys


def stage_diff(previous, text):
    """(HTML of `text`'s lines with those new since `previous` highlighted and the lines of
    `previous` gone listed after them, lines added, lines removed)."""
    keys = line_keys(text)
    before = line_keys(previous) if previous is not None else keys
    old = set(before)
    now = set(keys)
    out, added = [], 0
    for line, key in zip(text.splitlines(), keys):
        if key not in old:
            added += 1
            out.append(f'<span class="new">{escape(line)}</span>')
        else:
            out.append(escape(line))
    gone = [line for line, key in zip(previous.splitlines(), before) if key not in now] if previous else []
    out += [f'<span class="gone">{escape(line)}</span>' for line in gone]
    return "\n".join(out), added, len(gone)


def _stages_panel(stages):
    parts, previous = [], None
    for k, stage in enumerate(stages):
        body, added, removed = stage_diff(previous, stage.text)
        change = "the formula as parsed" if previous is None else (
            f"+{added} / -{removed} lines" if added or removed else "no change")
        shown = " open" if added or removed or k in (0, len(stages) - 1) else ""  # unchanged stages folded
        parts.append(f'<details{shown}><summary>IR after {escape(stage.name)}<span class="meta">'
                     f'{stage.seconds * 1e3:.3f} ms, {change}</span></summary><pre>{body}</pre></details>')
        previous = stage.text
    return ('<p class="note">Lines new in a stage are green; lines it removed are struck through in red '
            '(compared by the expression they compute).</p>' + "\n".join(parts))


def _bench_panel(bench):
    head = ("<tr><th>variant</th><th>median s</th><th>Gpairs/s</th><th>GFLOP/s</th><th>% of peak</th>"
            "<th>ratio</th><th>check error</th></tr>")
    rows = []
    for v in bench["variants"]:
        frac = "-" if v["percent_of_peak"] is None else f'{v["percent_of_peak"]:.1f}'
        rows.append(f'<tr><td>{escape(v["variant"])}</td><td>{v["median_s"]:.4g}</td><td>{v["gpairs_s"]:.3f}</td>'
                    f'<td>{v["gflop_s"]:.2f}</td><td>{frac}</td><td>{v["ratio"]:.2f}</td>'
                    f'<td>{v["check_error"]:.1e}</td></tr>')
    m, n = bench["sizes"]
    return (f'<p class="note">{m} x {n} pairs, {escape(bench["dtype"])}, random normal inputs; peak '
            f'{escape(bench["peak"])}; GFLOP counted from the optimized IR.</p>'
            f'<table class="bench">{head}{"".join(rows)}</table>')


def _source_rows(source, program):
    rows = []
    if source:
        rows.append(("formula", source["formula"]))
        rows += [("alias", a) for a in source["aliases"]]
        k = f", K={source['opt_arg']}" if source.get("opt_arg") is not None else ""
        rows.append(("reduction", f"{source['reduction_op']}{k}, axis={source['axis']}"))
        if source.get("formula2") is not None:
            rows.append(("formula2", source["formula2"]))
        rows.append(("dtype", source["dtype"]))
        rows.append(("target", source.get("target") or "host"))
    rows.append(("program", program.text().splitlines()[0]))
    return "".join(f"<tr><td>{escape(k)}</td><td>{escape(str(v))}</td></tr>" for k, v in rows)


def render(stages, program, outputs, timings, schedule_text, source=None, bench=None):
    """The page's HTML text."""
    tabs = [("stages", "IR stages", _stages_panel(stages)),
            ("graph", "Graph", f'<div class="graph-box">{svg.graph(program)}</div>'),
            ("schedule", "Schedule", f"<pre>{escape(schedule_text)}</pre>")]
    for form, title in TEXT_TABS:
        text = outputs.get(form)
        tabs.append((form, title, f"<pre>{escape(text if isinstance(text, str) else '(not made)')}</pre>"))
    total = sum(s for _, s in timings)
    tabs.append(("timings", "Timings", svg.bars(list(timings)) + f'<p class="note">total {total * 1e3:.3f} ms</p>'))
    if bench is not None:
        tabs.append(("bench", "Bench", _bench_panel(bench)))
    title = source["formula"] if source else program.text().splitlines()[0]
    nav = "".join(f'<button data-tab="{key}">{escape(name)}</button>' for key, name, _ in tabs)
    panels = "\n".join(f'<section class="panel" id="tab-{key}"{"" if k == 0 else " hidden"}>{body}</section>'
                       for k, (key, _, body) in enumerate(tabs))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="generator" content="keomlir {escape(__version__)}">'
            f"<title>keomlir: {escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<header><h1>{escape(title)}</h1><table>{_source_rows(source, program)}</table></header>"
            f"<nav>{nav}</nav>\n{panels}\n<script>{SCRIPT}</script></body></html>\n")
