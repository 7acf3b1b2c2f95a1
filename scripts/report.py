#!/usr/bin/env python3
"""One self-contained HTML report of a tiermark results directory.

Usage: report.py RESULTS_DIR [-o report.html]

The report holds the run's context, a summary table per workload (one row per allocator, sorted by
efficiency), every plot (PNG embedded as base64, so the file needs no other file and no network),
the memory analysis per workload in the manner of Ascend msprof's memory view (peak usage,
fragmentation, failures, efficiency, top consumers, leaks), and the capacity, memory-tier and
microbenchmark tables when those files are there. Plots come from the directory's plots.json
(scripts/plot.py) when it lists files that exist; otherwise they are drawn here, in memory, with
plot.py's functions (which needs matplotlib; see scripts/debian_python.py). docs/plots-and-report.md.
"""

import argparse
import base64
import datetime
import html
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import tiermark_results as tr  # noqa: E402

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; margin: 2em auto; max-width: 1250px;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
h3 { margin-top: 1.5em; } h4 { margin-bottom: .3em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .88em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; vertical-align: top; }
th { background: #f2f2f2; } td.l, th.l { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
.swatch { display: inline-block; width: .8em; height: .8em; margin-right: .35em; border: 1px solid #999; vertical-align: -.05em; }
.warn { background: #fff3cd; border: 1px solid #e0c36a; padding: .5em 1em; }
.note { color: #555; font-size: .9em; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; font-size: .9em; max-width: 1100px; }
nav ul { columns: 2; } code { background: #f4f4f4; padding: 0 .2em; overflow-wrap: anywhere; }
td:first-child { white-space: nowrap; }
"""


def esc(value):
    return html.escape("" if value is None else str(value), quote=True)


def table(headers, rows, left=1):
    """HTML table; the first `left` columns are left-aligned. Cells are escaped unless given as Raw."""
    head = "".join(f'<th class="l">{esc(h)}</th>' if i < left else f"<th>{esc(h)}</th>" for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            text = cell.html if isinstance(cell, Raw) else esc(cell)
            cells.append(f'<td class="l">{text}</td>' if i < left else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class Raw:
    """HTML already escaped."""

    def __init__(self, text):
        self.html = text


def allocator_cell(name):
    return Raw(f'<span class="swatch" style="background:{esc(tr.colour(name))}"></span>{esc(name)}')


def percent(value):
    return "-" if value is None else f"{value * 100:.1f}%"


def latency_pair(run, operation):
    p50, p99 = tr.metric(run, f"latency_ns.{operation}.p50"), tr.metric(run, f"latency_ns.{operation}.p99")
    if p50 is None:
        return "-"
    return f"{p50:.0f} / {p99:.0f}"


def anchor(prefix, slug):
    return f"{prefix}-{slug}"


# ------------------------------------------------------------------------------------------ parts


def context_section(results):
    context = results.context
    caches = ", ".join(f"{c.get('level')} {c.get('type', '')} {tr.format_bytes(c.get('size_bytes'))}"
                       f"{' x' + str(c['count']) if c.get('count') else ''}" for c in context.get("caches") or [])
    versions = ", ".join(f"{k} {v}" for k, v in (context.get("library_versions") or {}).items())
    rows = [
        ("date", context.get("date")), ("host", context.get("host")), ("CPU", context.get("cpu")),
        ("cores / hardware threads / NUMA nodes",
         f"{context.get('cores', '-')} / {context.get('threads', '-')} / {context.get('numa_nodes', '-')}"),
        ("caches", caches or "-"),
        ("memory (available)", f"{tr.format_bytes(context.get('memory_bytes'))} "
                               f"({tr.format_bytes(context.get('memory_available_bytes'))})"),
        ("OS, kernel", f"{context.get('os', '-')}, {context.get('kernel', '-')}"),
        ("compiler, build type, sanitizer",
         f"{context.get('compiler', '-')}, {context.get('build_type', '-')}, {context.get('sanitizer') or 'none'}"),
        ("tiermark, commit", f"{context.get('tiermark_version', '-')}, {context.get('git_commit', '-')}"),
        ("libraries", versions or "-"),
        ("transparent huge pages", f"{context.get('transparent_hugepage', '-')} (defrag "
                                   f"{context.get('transparent_hugepage_defrag', '-')})"),
        ("memory, touch, repetitions, latency",
         f"{context.get('memory', '-')}, {context.get('touch', '-')}, {context.get('repetitions', '-')}, "
         f"{context.get('latency', '-')}"),
        ("command", " ".join(context.get("command") or []) or "-"),
        ("files read", ", ".join(p.name for p in results.sources + results.bench_files)),
    ]
    parts = ["<h2 id=\"context\">Context</h2>"]
    warnings = []
    build_type = str(context.get("build_type") or "")
    if build_type.lower() == "debug" or context.get("sanitizer"):
        warnings.append(f"Built as {build_type or '?'} with sanitizer {context.get('sanitizer') or 'none'}: "
                        "these are not performance numbers.")
    if (results.results or {}).get("interrupted"):
        warnings.append("The run was interrupted: rows hold the repetitions finished before it (statistics n).")
    parts += [f'<p class="warn">{esc(w)}</p>' for w in warnings]
    parts.append(table(["", "value"], rows, left=2))
    notes = (results.results or {}).get("notes") or []
    notes += [n for n in (results.capacity or {}).get("notes") or [] if n not in notes]
    if notes:
        parts.append("<h4>Notes</h4><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    return "\n".join(parts)


def summary_rows(results, workload):
    planner = workload.get("planner_bytes")
    runs = results.runs_of(workload["name"])
    runs.sort(key=lambda r: (tr.metric(r, "efficiency") is None, -(tr.metric(r, "efficiency") or 0)))
    rows = []
    for run in runs:
        ops = tr.metric(run, "ops_per_second")
        stats = tr.statistic(run, "ops_per_second") or {}
        reserved = tr.metric(run, "peak_reserved_bytes")
        over_planner = f"{reserved / planner:.3f}" if reserved and planner else "-"
        ops_text = "-" if ops is None else f"{tr.format_rate(ops)}" + (f" \u00b1{stats['cv'] * 100:.0f}%"
                                                                       if stats.get("n", 1) > 1 else "")
        note = run.get("note", "")
        if run.get("failed"):
            note = f"failed: {note}"
        rows.append([allocator_cell(run["allocator"]), ops_text, latency_pair(run, "alloc"), latency_pair(run, "free"),
                     tr.format_bytes(reserved), tr.format_ratio(tr.metric(run, "efficiency")), over_planner,
                     percent(tr.metric(run, "external_fragmentation_max")), tr.metric(run, "oom_count") or 0,
                     tr.format_bytes(tr.metric(run, "peak_rss_bytes")), note])
    return rows


SUMMARY_HEADERS = ["allocator", "ops/s (cv)", "alloc p50/p99 ns", "free p50/p99 ns", "peak reserved", "efficiency",
                   "x planner", "max ext. frag.", "OOMs", "peak RSS", "note"]


def workload_facts(workload):
    facts = [f"{workload.get('events', '-')} events ({workload.get('allocs', '-')} allocations, "
             f"{workload.get('frees', '-')} frees, {workload.get('threads', 1)} thread(s))",
             f"lower bound {tr.format_bytes(workload.get('lower_bound_bytes'))} at op {workload.get('peak_op', '-')}",
             f"planner arena {tr.format_bytes(workload.get('planner_bytes'))}"]
    policy = tr.kv_policy(workload) if tr.is_llm_serve(workload) else None
    if policy:
        facts.append(f"KV policy {policy}")
    text = esc("; ".join(facts))  # returns HTML
    spec = (workload.get("metadata") or {}).get("spec")
    if spec:
        text += f'<br><span class="note">spec: <code>{esc(spec)}</code></span>'
    return text


def summary_section(results, slugs):
    parts = ['<h2 id="summary">Summary</h2>',
             '<p class="note">Per workload, one row per allocator, sorted by efficiency (peak requested / peak '
             'reserved; 1.0 is perfect). ops/s: median over repetitions with its coefficient of variation; latency: '
             'medians of p50 and p99 per operation (timer cost subtracted); x planner: peak reserved over the offline '
             'planner\'s arena; max ext. frag.: the largest external fragmentation over the replay; peak RSS: '
             'system.* rows only. results/README.md defines every column.</p>']
    for workload in results.workloads:
        slug = slugs[workload["name"]]
        parts.append(f'<h3 id="{anchor("summary", slug)}">{esc(workload["name"])}</h3>')
        parts.append(f"<p>{workload_facts(workload)}</p>")
        parts.append(table(SUMMARY_HEADERS, summary_rows(results, workload)))
    return "\n".join(parts)


def consumers_table(items, lower):
    rows = [[item.get("tag") or "(untagged)", tr.format_bytes(item.get("bytes")), item.get("blocks", "-"),
             percent(item["bytes"] / lower) if lower and item.get("bytes") is not None else "-"] for item in items]
    return table(["tag", "bytes", "blocks", "share of lower bound"], rows)


def analysis_section(results, slugs):
    parts = ['<h2 id="analysis">Memory analysis</h2>',
             '<p class="note">Per workload, in the manner of a memory profiler\'s view: how much each allocator held '
             'at the workload\'s peak and why (internal fragmentation: rounding inside blocks; external: free memory '
             'in pieces too small for the largest request; unreturnable: free memory still held after trim()), what '
             'failed, which tensors or operators hold the peak, and what is still live at the end.</p>']
    for workload in results.workloads:
        slug = slugs[workload["name"]]
        lower = workload.get("lower_bound_bytes")
        runs = results.runs_of(workload["name"])
        parts.append(f'<h3 id="{anchor("analysis", slug)}">{esc(workload["name"])}</h3>')
        # The planner is the reference, and a row with failed requests held less than it was asked for.
        with_efficiency = [r for r in runs if tr.metric(r, "efficiency") is not None and r["allocator"] != "planner"
                           and not tr.metric(r, "oom_count")]
        findings = [f"Peak of live requested bytes (lower bound): {tr.format_bytes(lower)} after op "
                    f"{workload.get('peak_op', '-')} of {workload.get('events', '-')}."]
        if with_efficiency:
            best = max(with_efficiency, key=lambda r: tr.metric(r, "efficiency"))
            worst = min(with_efficiency, key=lambda r: tr.metric(r, "efficiency"))
            findings.append(f"Most efficient with every request served: {best['allocator']} ({tr.metric(best, 'efficiency'):.3f}, peak reserved "
                            f"{tr.format_bytes(tr.metric(best, 'peak_reserved_bytes'))}); least: {worst['allocator']} "
                            f"({tr.metric(worst, 'efficiency'):.3f}, "
                            f"{tr.format_bytes(tr.metric(worst, 'peak_reserved_bytes'))}).")
        failures = [r for r in runs if (tr.metric(r, "oom_count") or 0) > 0 or r.get("failed")]
        if failures:
            findings.append("Failures: " + "; ".join(
                f"{r['allocator']}: {r.get('note') or str(tr.metric(r, 'oom_count')) + ' failed requests'}"
                for r in failures) + ".")
        else:
            findings.append("Failures: none (every request was served by every allocator).")
        end_live = workload.get("end_live_bytes")
        if workload.get("meant_to_end_empty", True):
            findings.append(f"Leaks: {tr.format_bytes(end_live)} still live at the end"
                            + (" (none)." if not end_live else "."))
        else:
            findings.append(f"Leaks: not counted; the trace is not meant to end empty ({tr.format_bytes(end_live)} "
                            "live at the end, such as weights).")
        parts.append("<ul>" + "".join(f"<li>{esc(f)}</li>" for f in findings) + "</ul>")
        rows = []
        for run in runs:
            rows.append([allocator_cell(run["allocator"]), tr.format_bytes(tr.metric(run, "peak_requested_bytes")),
                         tr.format_bytes(tr.metric(run, "peak_allocated_bytes")),
                         tr.format_bytes(tr.metric(run, "peak_reserved_bytes")),
                         tr.format_bytes(tr.metric(run, "reserved_bytes_at_peak")),
                         percent(tr.metric(run, "internal_fragmentation_at_peak")),
                         percent(tr.metric(run, "external_fragmentation_at_peak")),
                         tr.format_bytes(tr.metric(run, "unreturnable_bytes_at_peak")),
                         tr.format_ratio(tr.metric(run, "efficiency")), tr.metric(run, "oom_count") or 0,
                         tr.format_bytes(tr.metric(run, "leaked_bytes")),
                         percent(tr.metric(run, "kv_utilisation_of_reserved"))])
        parts.append(table(["allocator", "peak requested", "peak allocated", "peak reserved", "reserved at peak",
                            "internal frag. at peak", "external frag. at peak", "unreturnable at peak", "efficiency",
                            "OOMs", "leaked", "KV util. of reserved"], rows))
        consumers = workload.get("top_consumers") or []
        parts.append(f"<h4>Top consumers at the peak ({len(consumers)} largest tags)</h4>")
        parts.append(consumers_table(consumers, lower) if consumers else "<p>None recorded.</p>")
        leaks = workload.get("leaks") or []
        parts.append("<h4>Leaks: blocks live at the end</h4>")
        parts.append(consumers_table(leaks, lower) if leaks else "<p>None.</p>")
    return "\n".join(parts)


def capacity_section(results):
    capacity = results.capacity
    if capacity is None:
        return ""
    parts = ['<h2 id="capacity">Minimum capacity</h2>',
             '<p class="note">tiermark capacity: the smallest simulated device (to 1 MiB) each allocator replays the '
             'workload on with no failed request (docs/capacity.md).</p>']
    for workload in capacity.get("workloads", []):
        runs = [r for r in capacity.get("runs", []) if r["workload"] == workload["name"]]
        runs.sort(key=lambda r: (tr.metric(r, "min_capacity_bytes") is None, tr.metric(r, "min_capacity_bytes") or 0))
        rows = [[allocator_cell(r["allocator"]), tr.format_bytes(tr.metric(r, "min_capacity_bytes"))
                 if tr.metric(r, "min_capacity_bytes") is not None else "fails at every capacity",
                 tr.format_ratio(tr.metric(r, "capacity_over_lower_bound")), tr.metric(r, "probes") or 0,
                 tr.metric(r, "monotonic_checked"), r.get("note", "")] for r in runs]
        parts.append(f"<h3>{esc(workload['name'])}</h3>")
        parts.append(table(["allocator", "min capacity", "x lower bound", "probes", "monotonic checked", "note"], rows))
    return "\n".join(parts)


def tiers_section(results):
    tiers = results.tiers
    if tiers is None or not tiers.get("tiers"):
        return ""
    keys = []
    for tier in tiers["tiers"]:
        keys += [k for k in (tier.get("bandwidth") or {}) if k not in keys]
    rows = []
    for tier in tiers["tiers"]:
        bandwidth = tier.get("bandwidth") or {}
        rows.append([tier.get("level"), tr.format_bytes(tier.get("capacity_bytes")),
                     *[f"{bandwidth[k] / 1e9:.1f}" if bandwidth.get(k) else "-" for k in keys],
                     "-" if tier.get("latency_ns") is None else f"{tier['latency_ns']:.1f}"])
    return ('<h2 id="tiers">Memory tiers</h2><p class="note">tiermark tiers: bandwidth (GB/s) per kernel/threads '
            'and load latency per level of the hierarchy.</p>'
            + table(["level", "capacity", *[f"{k} GB/s" for k in keys], "latency ns"], rows))


def bench_section(results):
    if not results.bench_files:
        return ""
    try:
        import bench_table

        samples, columns = bench_table.load_samples(results.bench_files)
    except SystemExit:
        return '<h2 id="bench">Microbenchmarks</h2><p>The bench_allocators files could not be read.</p>'
    if not samples:
        return ""
    summary = bench_table.summarise(samples)
    columns.sort(key=bench_table.column_order)
    labels = sorted({label for label, _ in summary}, key=lambda l: (not l.startswith(("malloc", "system")), l))
    rows = []
    for label in labels:
        row = [label]
        for column in columns:
            entry = summary.get((label, column))
            row.append(f"{entry['median_ns']:.1f} ({entry['cv'] * 100:.0f}%)" if entry else "-")
        rows.append(row)
    return ('<h2 id="bench">Microbenchmarks</h2><p class="note">bench_allocators: ns per item, median over processes '
            '(coefficient of variation); pair = allocate+free, random = free+allocate (scripts/bench_table.py).</p>'
            + table(["allocator", *columns], rows))


# ------------------------------------------------------------------------------------------ plots


def existing_plots(results):
    """[(title, caption, png bytes)] from plots.json next to the results, or None when it is missing or stale."""
    index_path = results.directory / "plots.json"
    if not index_path.is_file():
        return None
    try:
        index = json.loads(index_path.read_text())
        plots = []
        for item in index["plots"]:
            png = results.directory / item["files"]["png"]
            if png.stat().st_mtime < max(s.stat().st_mtime for s in results.sources):
                return None  # drawn from older results
            plots.append((item["title"], item.get("caption", ""), png.read_bytes()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return plots


def drawn_plots(results):
    from debian_python import require

    require("matplotlib")
    import plot

    plots, skipped = plot.make_plots(results)
    drawn = [(p.title, p.caption, plot.figure_bytes(p.figure, "png")) for p in plots]
    return drawn, skipped


def plots_section(plots, skipped):
    parts = ['<h2 id="plots">Plots</h2>']
    if not plots:
        parts.append("<p>No plots.</p>")
    for number, (title, caption, png) in enumerate(plots, 1):
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<figure id="plot-{number}"><figcaption><strong>{esc(title)}</strong></figcaption>'
                     f'<img alt="{esc(title)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{esc(caption)}</figcaption></figure>")
    if skipped:
        parts.append("<p class=\"note\">Not drawn: " + "; ".join(f"{esc(n)} ({esc(r)})" for n, r in skipped) + ".</p>")
    return "\n".join(parts)


def render(results, plots, skipped):
    slugs = results.slugs()
    context = results.context
    title = f"tiermark report: {results.directory.resolve().name}"
    nav = ['<li><a href="#context">Context</a></li>']
    if results.results is not None:
        nav.append('<li><a href="#summary">Summary</a><ul>' + "".join(
            f'<li><a href="#{anchor("summary", slugs[w["name"]])}">{esc(w["name"])}</a></li>' for w in results.workloads)
            + "</ul></li>")
    nav.append('<li><a href="#plots">Plots</a></li>')
    body = [context_section(results)]
    if results.results is not None:
        body.append(summary_section(results, slugs))
        nav.append('<li><a href="#analysis">Memory analysis</a></li>')
    body.append(plots_section(plots, skipped))
    if results.results is not None:
        body.append(analysis_section(results, slugs))
    for section, label, anchor_id in ((capacity_section(results), "Minimum capacity", "capacity"),
                                      (tiers_section(results), "Memory tiers", "tiers"),
                                      (bench_section(results), "Microbenchmarks", "bench")):
        if section:
            body.append(section)
            nav.append(f'<li><a href="#{anchor_id}">{label}</a></li>')
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{esc(title)}</h1>
<p>{esc(context.get('host', '?'))}, {esc(context.get('cpu', '?'))}, commit {esc(context.get('git_commit', '?'))},
measured {esc(context.get('date', '?'))}. Generated by scripts/report.py at {esc(generated)}.</p>
<nav><ul>{''.join(nav)}</ul></nav>
{chr(10).join(body)}
</body>
</html>
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="a results directory (or one results.json)")
    parser.add_argument("-o", "--out", help="the HTML file to write (default: report.html in the results directory)")
    args = parser.parse_args(argv)
    try:
        results = tr.load(args.input)
    except tr.InputError as error:
        print(f"report.py: {error}", file=sys.stderr)
        return 2
    plots = existing_plots(results)
    skipped = []
    if plots is None:
        plots, skipped = drawn_plots(results)
    else:
        index = json.loads((results.directory / "plots.json").read_text())
        skipped = [(s["plot"], s["reason"]) for s in index.get("skipped", [])]
    target = pathlib.Path(args.out) if args.out else results.directory / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(render(results, plots, skipped), encoding="utf-8")
    temporary.replace(target)
    print(f"report: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
