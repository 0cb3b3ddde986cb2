"""Self-contained HTML pages: a run's report, a comparison of two runs, and the results index.

Everything a page needs is inline (CSS, a few lines of JavaScript to sort tables, SVG plots): nothing is
fetched, so a page opens from a file URL on a machine without a network. The content comes from the same
functions as the Markdown (findings.py, tables.py); this module only lays it out. Each engine keeps one colour
and one marker on every plot (ENGINE_STYLE); points carry their 95% interval (or the windows' range where
there are too few windows for one); categorical axes are never joined by lines.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence

from bench.measure.stats import median_interval
from bench.report import findings as findings_module
from bench.report import tables
from bench.store.records import Record

# One colour and marker per engine on every plot (colour-blind-safe hues, far apart).
ENGINE_STYLE = {
    "torch": ("#d55e00", "circle"),
    "keras-tensorflow": ("#0072b2", "square"),
    "keras-jax": ("#009e73", "diamond"),
}
OTHER_STYLE = ("#555555", "triangle")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#f3f3f3;cursor:pointer;user-select:none}th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.decided-faster{background:#d9f0d3}.decided-slower{background:#f7d4d4}.noise{background:#eeeeee}.margin{background:#fff3c4}
.findings li{margin:.35em 0}.why{color:#444}figure{margin:1em 0}figcaption{font-style:italic;color:#333;margin-top:.3em}
details pre{white-space:pre-wrap;word-break:break-all;max-width:900px;font-size:11px}
.legend span{margin-right:1.2em}.meta{color:#555}
"""

SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, index){
    th.addEventListener('click', function(){
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = !th.classList.contains('sorted-asc');
      table.querySelectorAll('th').forEach(function(h){h.classList.remove('sorted-asc','sorted-desc');});
      th.classList.add(asc ? 'sorted-asc' : 'sorted-desc');
      function key(row){var c=row.cells[index]; var v=c.getAttribute('data-sort'); if(v===null){v=c.textContent.trim();}
        var n=parseFloat(v); return isNaN(n) ? v.toLowerCase() : n;}
      rows.sort(function(a,b){var x=key(a),y=key(b); if(typeof x!==typeof y){x=String(x);y=String(y);}
        return (x<y?-1:x>y?1:0)*(asc?1:-1);});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"""


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def page(title: str, body: Sequence[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(body)
        + f"\n<script>{SORT_JS}</script>\n</body></html>\n"
    )


RUN_STYLE = {"baseline": ("#444444", "circle"), "candidate": ("#cc79a7", "square")}  # compare pages


def style(engine: str) -> tuple[str, str]:
    return ENGINE_STYLE.get(engine.split(" ")[0]) or RUN_STYLE.get(engine, OTHER_STYLE)


def _marker(shape: str, x: float, y: float, color: str, size: float = 5.0) -> str:
    if shape == "square":
        return f'<rect x="{x - size:.1f}" y="{y - size:.1f}" width="{2 * size:.1f}" height="{2 * size:.1f}" fill="{color}"/>'
    if shape == "diamond":
        points = f"{x:.1f},{y - size * 1.3:.1f} {x + size * 1.3:.1f},{y:.1f} {x:.1f},{y + size * 1.3:.1f} {x - size * 1.3:.1f},{y:.1f}"
        return f'<polygon points="{points}" fill="{color}"/>'
    if shape == "triangle":
        points = f"{x:.1f},{y - size * 1.2:.1f} {x + size:.1f},{y + size:.1f} {x - size:.1f},{y + size:.1f}"
        return f'<polygon points="{points}" fill="{color}"/>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{size:.1f}" fill="{color}"/>'


def legend(engines: Sequence[str]) -> str:
    items = []
    for engine in engines:
        color, shape = style(engine)
        items.append(f'<span><svg width="14" height="14">{_marker(shape, 7, 7, color, 5)}</svg> {esc(engine)}</span>')
    return '<div class="legend">' + "".join(items) + "</div>"


def interval_of(record: Record) -> tuple[float, float, str]:
    """The 95% interval of the median throughput from the windows, or their range when there are too few."""
    rates = list(record.window_throughputs_img_s)
    found = median_interval(rates) if rates else None
    if found:
        return found[0], found[1], "95% interval of the median"
    low = record.throughput_min_img_s if record.throughput_min_img_s is not None else record.throughput_img_s
    high = record.throughput_max_img_s if record.throughput_max_img_s is not None else record.throughput_img_s
    return low, high, "range of the windows"


def points_plot(groups: Sequence[str], series: dict[str, dict[str, tuple[float, float, float]]], y_label: str,
                caption: str, log: bool = True) -> str:  # fmt: skip
    """A categorical point plot: one group per x position, each engine a marker at its median with a bar
    over its interval; no lines between groups. series: engine -> group -> (median, low, high)."""
    width, height, left, right, top, bottom = max(360, 70 * len(groups) + 90), 300, 70, 20, 15, 90
    values = [v for s in series.values() for point in s.values() for v in point if v and v > 0]
    if not values:
        return ""
    low, high = min(values), max(values)
    if log:
        low, high = math.log10(low) - 0.05, math.log10(high) + 0.05
    else:
        low, high = 0.0, high * 1.08
    span = (high - low) or 1.0

    def y_of(value: float) -> float:
        v = math.log10(value) if log else value
        return top + (height - top - bottom) * (1 - (v - low) / span)

    plot_w = width - left - right
    step = plot_w / max(1, len(groups))
    parts = [f'<svg class="plot" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'xmlns="http://www.w3.org/2000/svg"><rect x="{left}" y="{top}" width="{plot_w}" '
             f'height="{height - top - bottom}" fill="#fafafa" stroke="#bbb"/>']  # fmt: skip
    ticks = _ticks(low, high, log)
    for value in ticks:
        y = y_of(value)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{value:.3g}</text>')
    engines = list(series)
    for index, group in enumerate(groups):
        centre = left + step * (index + 0.5)
        parts.append(f'<text x="{centre:.1f}" y="{height - bottom + 14}" font-size="11" text-anchor="end" '
                     f'transform="rotate(-35 {centre:.1f} {height - bottom + 14})">{esc(group)}</text>')  # fmt: skip
        for offset, engine in enumerate(engines):
            point = series[engine].get(group)
            if not point:
                continue
            x = centre + (offset - (len(engines) - 1) / 2) * min(16, step / (len(engines) + 1))
            middle, lo, hi = point
            color, shape = style(engine)
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y_of(lo):.1f}" y2="{y_of(hi):.1f}" stroke="{color}" '
                         'stroke-width="2"/>')  # fmt: skip
            parts.append(_marker(shape, x, y_of(middle), color))
            parts.append(f"<title>{esc(engine)} {esc(group)}: {middle:.4g} [{lo:.4g}-{hi:.4g}]</title>")
    parts.append(f'<text x="14" y="{top + (height - top - bottom) / 2:.0f}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 14 {top + (height - top - bottom) / 2:.0f})">{esc(y_label)}</text></svg>')  # fmt: skip
    return f"<figure>{legend(engines)}{''.join(parts)}<figcaption>{esc(caption)}</figcaption></figure>"


def _ticks(low: float, high: float, log: bool) -> list[float]:
    if log:
        ticks = []
        for exponent in range(math.floor(low), math.ceil(high) + 1):
            for mantissa in (1, 2, 5):
                value = mantissa * 10**exponent
                if low <= math.log10(value) <= high:
                    ticks.append(value)
        return ticks or [10**low]
    step = 10 ** math.floor(math.log10(max(high, 1e-12))) / 2
    return [i * step for i in range(int(high / step) + 1)]


def throughput_plots(records: list[Record]) -> list[str]:
    """One plot per section: each configuration's median img/s per engine with its interval."""
    out = []
    for section in tables.sections(records):
        chosen = [r for r in tables.select(records, section) if r.ok and r.throughput_img_s]
        if not chosen:
            continue
        groups = []
        series: dict[str, dict[str, tuple[float, float, float]]] = {}
        for model in tables.model_order(r.model for r in chosen):
            for batch in sorted({r.batch_size for r in chosen if r.model == model}):
                groups.append(f"{model} b={batch}")
        what = ""
        for r in chosen:
            low, high, what = interval_of(r)
            series.setdefault(tables.engine(r), {})[f"{r.model} b={r.batch_size}"] = (r.throughput_img_s, low, high)
        caption = (f"Which engine moves more images per second in each configuration ({section.title()})? "
                   f"Median img/s over the timed windows, log scale; bars: {what}.")  # fmt: skip
        out.append(points_plot(groups, series, "img/s", caption))
    return out


def findings_html(result) -> list[str]:
    items = []
    for finding in result.decided:
        items.append(f"<li><b>{esc(finding.sentence().replace('**', ''))}</b>. "
                     f"<span class=\"why\">Why: {esc('; '.join(finding.evidence))}.</span></li>")  # fmt: skip
    if not result.decided:
        items.append("<li>No engine comparison is decided beyond the noise margin in this run.</li>")
    if result.same:
        items.append(f"<li>Same within noise ({len(result.same)}): {esc(', '.join(result.same))}.</li>")
    if result.not_called:
        items.append(f"<li>Below the {tables.NOISE_MARGIN:.0%} margin, not called ({len(result.not_called)}): "
                     f"{esc(', '.join(result.not_called))}.</li>")  # fmt: skip
    return ['<h2 id="findings">Findings</h2>', '<ul class="findings">', *items, "</ul>"]


def ratio_tables(records: list[Record]) -> list[str]:
    """Each section's engine ratios, every cell marked: decided (faster / slower), below the margin, or noise."""
    out = []
    for section in tables.sections(records):
        chosen = tables.select(records, section)
        comparison = tables.compare_engines(chosen)
        if comparison is None:
            continue
        batches = sorted({r.batch_size for r in chosen})
        for other in tables.engine_order(chosen)[1:]:
            rows = []
            for model in tables.model_order(r.model for r in chosen):
                cells = [f"<td>{esc(model)}</td>"]
                for batch in batches:
                    ratio = comparison.ratios.get((other, model, batch))
                    if ratio is None:
                        text = comparison.failures.get((other, model, batch), "—")
                        cells.append(f"<td>{esc(text)}</td>")
                        continue
                    if ratio.decided:
                        mark = "decided-faster" if ratio.ratio > 1 else "decided-slower"
                    elif ratio.low is not None and ratio.high is not None and ratio.low <= 1 <= ratio.high:
                        mark = "noise"
                    else:
                        mark = "margin"
                    cells.append(f'<td class="{mark}" data-sort="{ratio.ratio:.6g}">{esc(ratio.words())}</td>')
                rows.append("<tr>" + "".join(cells) + "</tr>")
            head = "".join(f"<th>b={b}</th>" for b in batches)
            out += [f"<h3>{esc(other)} vs {esc(comparison.baseline)}, {esc(section.title())}</h3>",
                    f'<table class="sortable ratios"><thead><tr><th>model</th>{head}</tr></thead><tbody>',
                    *rows, "</tbody></table>"]  # fmt: skip
    if out:
        out.insert(0, '<p class="meta">Cells: <span class="decided-faster">faster beyond the margin</span> '
                      '<span class="decided-slower">slower beyond the margin</span> <span class="margin">interval '
                      'excludes 1 but not the margin: not called</span> <span class="noise">same within noise</span>'
                      "</p>")  # fmt: skip
        out.insert(0, '<h2 id="ratios">Engine ratios (throughput, 95% interval)</h2>')
    return out


def record_table(records: list[Record], raw_lines: Sequence[str] | None = None) -> list[str]:
    """Every record, sortable by any column, each with its raw results.jsonl line."""
    headers = ["engine", "model", "mode", "batch", "precision", "px", "status", "img/s", "interval", "p50 ms",
               "peak MiB", "cores", "layout", "raw"]  # fmt: skip
    rows = []
    for index, r in enumerate(records):
        low, high, _ = interval_of(r) if r.ok and r.throughput_img_s else (None, None, "")
        peak = r.peak_memory_bytes / 2**20 if r.peak_memory_bytes else None
        raw = raw_lines[index] if raw_lines and index < len(raw_lines) else json.dumps(r.to_json())
        cells = [
            esc(tables.engine(r)), esc(r.model), esc(r.mode), _num(r.batch_size), esc(r.precision), _num(r.image_size),
            esc(r.status), _num(r.throughput_img_s), esc(f"{low:.4g}-{high:.4g}" if low is not None else "—"),
            _num(r.latency_ms_p50), _num(peak), _num(r.cpu_util_cores), esc(r.layout_chosen or r.layout),
        ]  # fmt: skip
        cells = [c if c.startswith("<td") else f"<td>{c}</td>" for c in cells]
        cells.append(f"<td><details><summary>line {index + 1}</summary><pre>{esc(raw)}</pre></details></td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return ['<h2 id="records">Every record</h2>', '<p class="meta">Click a header to sort; "raw" holds the '
            "record's line of results.jsonl.</p>", f'<table class="sortable records"><thead><tr>{head}</tr></thead>'
            "<tbody>", *rows, "</tbody></table>"]  # fmt: skip


def _num(value) -> str:
    if value is None:
        return '<td class="num" data-sort="">—</td>'
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return f'<td class="num" data-sort="{value}">{esc(text)}</td>'


def machine_name(env: dict, records: list[Record]) -> str:
    """The machine a run was made on: its GPUs where it ran on any, else 'CPU model, N cores'."""
    gpus = sorted({r.env.get("device_name") for r in records if r.device == "cuda" and r.env.get("device_name")})
    if gpus:
        return ", ".join(gpus)
    first = records[0].env if records else {}
    return f"{env.get('cpu_model') or first.get('cpu_model')}, {env.get('cpu_cores') or first.get('cpu_cores')} cores"


def machine_line(env: dict, records: list[Record]) -> str:
    when = env.get("start") or env.get("time") or ""
    wall = f", {env['wall_s']:.0f} s" if env.get("wall_s") else ""
    modified = " (modified tree)" if env.get("git_modified") else ""
    return (f'<p class="meta">Machine: {esc(machine_name(env, records))}; {esc(when)}{esc(wall)}; commit '
            f"{esc(env.get('git_commit') or '')}{esc(modified)}</p>")  # fmt: skip


def run_page(records: list[Record], env: dict, title: str, raw_lines: Sequence[str] | None = None) -> str:
    """The run's report as one self-contained page: findings first, then ratios, plots and every record."""
    found = findings_module.findings(records)
    engines = tables.engine_order(records)
    body = [f"<h1>{esc(title)}</h1>", machine_line(env, records),
            f'<p class="meta">Engines: {esc(", ".join(engines))}; {len(records)} records.</p>']  # fmt: skip
    body += findings_html(found)
    body += ratio_tables(records)
    plots = throughput_plots(records)
    if plots:
        body += ['<h2 id="plots">Throughput</h2>', *plots]
    body += record_table(records, raw_lines)
    return page(title, body)


def _first_heading(path) -> str:
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return path.stem


def _study_entries(root) -> list[dict]:
    """Every committed study folder or file under `root` (profiles, gradient flow, scaling, overhead, the
    training study, thread-pool studies), with the page a reader opens and its first heading."""
    entries = []
    for kind in ("profiles", "gradient-flow", "scaling", "training", "tf-threads", "overhead"):
        folder = root / kind
        if not folder.is_dir():
            continue
        for item in sorted(folder.iterdir()):
            pages = sorted(item.glob("*.md")) if item.is_dir() else ([item] if item.suffix in (".md", ".txt") else [])
            for md in pages:
                data = {}
                for name in ("profile.json", "gradient_flow.json", "env.json", "training.json", "tf_threads.json"):
                    candidate = md.parent / name
                    if candidate.exists():
                        try:
                            data = json.loads(candidate.read_text())
                        except ValueError:
                            data = {}
                        break
                env = data.get("env", data) if isinstance(data, dict) else {}
                entries.append({"kind": kind, "link": md.relative_to(root).as_posix(), "headline": _first_heading(md),
                                "machine": f"{env.get('cpu_model') or '—'}, {env.get('cpu_cores') or '—'} cores",
                                "date": env.get("start") or env.get("time") or item.name[:8]})  # fmt: skip
    return entries


def index_page(root) -> str:
    """results/index.html: every committed run (machine, engines, date, its top finding) and every study."""
    from pathlib import Path

    from bench.store.records import read_results

    root = Path(root)
    rows = []
    for folder in sorted((root / "runs").iterdir()) if (root / "runs").is_dir() else []:
        if not (folder / "results.jsonl").exists():
            continue
        records = read_results(folder / "results.jsonl").records
        env = json.loads((folder / "env.json").read_text()) if (folder / "env.json").exists() else {}
        machine = machine_name(env, records)
        found = findings_module.findings(records).decided
        headline = found[0].sentence().replace("**", "") if found else "no engine comparison decided"
        link = f"runs/{folder.name}/" + ("report.html" if (folder / "report.html").exists() else "report.md")
        rows.append([f'<a href="{esc(link)}">{esc(folder.name)}</a>', esc(machine),
                     esc(", ".join(tables.engine_order(records))), esc(env.get("start") or env.get("time") or ""),
                     str(len(records)), esc(headline)])  # fmt: skip
    body = ["<h1>cnn-bench results</h1>",
            '<p class="meta">Every committed run and study; a figure always names its machine. Click a header to '
            "sort.</p>", '<h2 id="runs">Runs</h2>',
            '<table class="sortable runs"><thead><tr><th>run</th><th>machine</th><th>engines</th><th>date</th>'
            "<th>records</th><th>top finding</th></tr></thead><tbody>",
            *("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows), "</tbody></table>",
            '<h2 id="studies">Studies</h2>',
            '<table class="sortable studies"><thead><tr><th>kind</th><th>page</th><th>machine</th><th>date</th>'
            "</tr></thead><tbody>"]  # fmt: skip
    for entry in _study_entries(root):
        body.append(f"<tr><td>{esc(entry['kind'])}</td><td><a href=\"{esc(entry['link'])}\">{esc(entry['headline'])}"
                    f"</a></td><td>{esc(entry['machine'])}</td><td>{esc(entry['date'])}</td></tr>")  # fmt: skip
    body.append("</tbody></table>")
    return page("cnn-bench results", body)


def compare_page(markdown: str, title: str, baseline: list[Record], candidate: list[Record]) -> str:
    """`bench compare A B --html`: the comparison's text (as written to compare.md) and both runs' throughput
    side by side, each configuration a group, each run a marker with its interval."""
    series: dict[str, dict[str, tuple[float, float, float]]] = {}
    groups: list[str] = []
    for name, records in (("baseline", baseline), ("candidate", candidate)):
        for r in records:
            if r.ok and r.throughput_img_s:
                group = f"{tables.engine(r)} {r.model} {r.mode} b={r.batch_size}"
                if group not in groups:
                    groups.append(group)
                low, high, _ = interval_of(r)
                series.setdefault(name, {})[group] = (r.throughput_img_s, low, high)
    body = [f"<h1>{esc(title)}</h1>", "<pre>" + esc(markdown) + "</pre>"]
    if series:
        body.append(points_plot(groups, series, "img/s", "Did the candidate move each configuration's throughput? "
                                "Median img/s of each run, log scale; bars: 95% interval of the median (or the "
                                "windows' range)."))  # fmt: skip
    return page(title, body)
