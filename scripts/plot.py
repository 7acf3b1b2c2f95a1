#!/usr/bin/env python3
"""Plots of a tiermark results directory, written next to the results as PNG and SVG.

Usage: plot.py RESULTS_DIR_OR_JSON [-o OUTDIR] [--format png,svg]

From results.json (tiermark replay, schema tiermark/1): throughput per workload and allocator,
latency percentiles and CDFs, fragmentation over the replay, efficiency against the lower bound
and the planner, KV utilisation per policy (llm-serve) and allocator locality (when measured);
from capacity.json: the minimum capacity per allocator; from tiers.json: bandwidth and latency
against working-set size. `plots.json` lists every file written with its title and caption
(scripts/report.py reads it). docs/plots-and-report.md describes each plot.

Needs matplotlib (Debian's python3-matplotlib serves /usr/bin/python3; under another python3 the
script re-executes itself there, scripts/debian_python.py). Each allocator has one colour in
every plot (tiermark_results.ALLOCATOR_COLOURS).
"""

import argparse
import json
import math
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import tiermark_results as tr  # noqa: E402

PERCENTILES = [("p50", "p50", 0.5), ("p90", "p90", 0.9), ("p99", "p99", 0.99), ("p999", "p99.9", 0.999),
               ("max", "max", 1.0)]
TIER_KERNELS = ["read", "write", "ntwrite", "copy", "triad"]
KERNEL_COLOURS = {"read": "#1f77b4", "write": "#d62728", "ntwrite": "#9467bd", "copy": "#2ca02c", "triad": "#ff7f0e",
                  "latency": "#1f77b4", "latency_thp": "#d62728"}
THREAD_STYLES = ["-", "--", ":", "-."]


class Plot:
    """One figure: `name` is the file stem (throughput, latency_<slug>, ...)."""

    def __init__(self, name, title, figure, caption="", workload=None, kind=None):
        self.name, self.title, self.figure = name, title, figure
        self.caption, self.workload, self.kind = caption, workload, kind or name.split("_")[0]


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "tiermark", "font.size": 9,
                                "axes.titlesize": 10, "figure.titlesize": 11, "legend.fontsize": 8})
    from matplotlib.figure import Figure

    return Figure


def _figure(width, height):
    Figure = _matplotlib()
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _grid(count, columns):
    columns = max(1, min(columns, count))
    return math.ceil(count / columns), columns


def _axes(figure, count, columns, **kwargs):
    rows, columns = _grid(count, columns)
    axes = figure.subplots(rows, columns, squeeze=False, **kwargs).flatten()
    for extra in axes[count:]:
        extra.set_visible(False)
    return axes[:count]


def _legend_right(axes, handles, labels=None, title=None):
    """A legend outside the right edge of `axes` (constrained layout makes room for it; matplotlib 3.6 has no
    figure legend "outside")."""
    if labels is None:
        labels = [h.get_label() for h in handles]
    axes.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), title=title, borderaxespad=0)


def _allocator_legend(axes, allocators):
    from matplotlib.patches import Patch

    _legend_right(axes, [Patch(color=tr.colour(a), label=a) for a in allocators], title="allocator")


def _short(name, limit=48):
    """A workload name cut in the middle: the generator and the last options (kv=paged) both stay readable."""
    if len(name) <= limit:
        return name
    head = (limit - 1) * 2 // 5
    return name[:head] + "\u2026" + name[len(name) - (limit - 1 - head):]


# ---------------------------------------------------------------------------------------- replay


def plot_throughput(results):
    workloads = [w for w in results.workloads if any(tr.metric(r, "ops_per_second") for r in results.runs_of(w["name"]))]
    if not workloads:
        return []
    figure = _figure(11, 1.2 + 3.2 * _grid(len(workloads), 2)[0])
    allocators = []
    for axes, workload in zip(_axes(figure, len(workloads), 2), workloads):
        runs = [r for r in results.runs_of(workload["name"]) if tr.metric(r, "ops_per_second")]
        names = [r["allocator"] for r in runs]
        values, low, high = [], [], []
        for run in runs:
            value = tr.metric(run, "ops_per_second")
            stats = tr.statistic(run, "ops_per_second") or {}
            values.append(value)
            low.append(max(0.0, value - stats.get("min", value)))
            high.append(max(0.0, stats.get("max", value) - value))
        positions = range(len(runs))
        axes.barh(list(positions), values, xerr=[low, high], color=[tr.colour(n) for n in names], capsize=2,
                  error_kw={"elinewidth": 0.8})
        axes.set_yticks(list(positions), names)
        axes.invert_yaxis()
        axes.set_xscale("log")
        axes.set_xlabel("operations per second (allocations + frees), log scale")
        axes.set_title(_short(workload["name"]))
        axes.grid(axis="x", which="both", alpha=0.3)
        allocators += [n for n in names if n not in allocators]
    figure.suptitle("Throughput per workload and allocator (median, bars: min to max over repetitions)")
    caption = ("Replay throughput of each allocator: the median of the repetitions' throughput passes, error bars "
               "from the repetitions' minimum and maximum (runs[].statistics.ops_per_second).")
    return [Plot("throughput", "Throughput per workload and allocator", figure, caption)]


def _latency_runs(results, workload):
    return [r for r in results.runs_of(workload["name"]) if tr.metric(r, "latency_ns.alloc.p50") is not None]


def plot_latency(results, slugs):
    plots = []
    for workload in results.workloads:
        runs = _latency_runs(results, workload)
        if not runs:
            continue
        slug = slugs[workload["name"]]
        figure = _figure(11, 4.6)
        panels = _axes(figure, 2, 2)
        for axes, operation in zip(panels, ("alloc", "free")):
            for offset, run in enumerate(runs):
                xs, ys, low, high = [], [], [], []
                for index, (key, _, _) in enumerate(PERCENTILES):
                    value = tr.metric(run, f"latency_ns.{operation}.{key}")
                    if value is None:
                        continue
                    stats = tr.statistic(run, f"latency_ns.{operation}.{key}") or {}
                    xs.append(index + (offset - len(runs) / 2) * 0.02)
                    ys.append(value)
                    low.append(max(0.0, value - stats.get("min", value)))
                    high.append(max(0.0, stats.get("max", value) - value))
                axes.errorbar(xs, ys, yerr=[low, high], color=tr.colour(run["allocator"]), marker="o", markersize=3,
                              linewidth=1, capsize=2, label=run["allocator"])
            axes.set_xticks(range(len(PERCENTILES)), [label for _, label, _ in PERCENTILES])
            axes.set_yscale("symlog", linthresh=10)
            axes.set_ylim(bottom=0)
            axes.set_xlabel("percentile of the operations timed")
            axes.set_ylabel(f"{operation} latency (ns, log scale above 10 ns)")
            axes.set_title(f"{operation}: p50 to max")
            axes.grid(alpha=0.3, which="both")
        _allocator_legend(panels[-1], [r["allocator"] for r in runs])
        figure.suptitle(f"Latency percentiles, {_short(workload['name'], 70)}")
        caption = ("Per-operation latency from the latency pass (timer cost subtracted, so fast operations read "
                   "0 ns): median over repetitions of each percentile, error bars from their minimum and maximum.")
        plots.append(Plot(f"latency_{slug}", f"Latency percentiles: {workload['name']}", figure, caption,
                          workload["name"], "latency"))
    return plots


def plot_latency_cdf(results, slugs):
    """A CDF drawn through the stored percentiles: results carry p50, p90, p99, p99.9 and max, not a histogram.
    The y axis counts nines (-log10(1 - q)) so that p99 and p99.9 are not squeezed against p90."""
    plots = []
    positions = [-math.log10(1 - q) if q < 1 else 4.0 for _, _, q in PERCENTILES]
    for workload in results.workloads:
        runs = _latency_runs(results, workload)
        if not runs:
            continue
        figure = _figure(11, 4.6)
        panels = _axes(figure, 2, 2)
        for axes, operation in zip(panels, ("alloc", "free")):
            for run in runs:
                points = [(tr.metric(run, f"latency_ns.{operation}.{key}"), y)
                          for (key, _, _), y in zip(PERCENTILES, positions)]
                points = [(x, y) for x, y in points if x is not None]
                axes.plot([x for x, _ in points], [y for _, y in points], drawstyle="steps-post",
                          color=tr.colour(run["allocator"]), marker="o", markersize=3, linewidth=1.2,
                          label=run["allocator"])
            axes.set_xscale("symlog", linthresh=10)
            axes.set_xlim(left=0)
            axes.set_yticks(positions, ["50%", "90%", "99%", "99.9%", "100% (max)"])
            axes.set_xlabel(f"{operation} latency (ns, log scale above 10 ns)")
            axes.set_ylabel("fraction of operations at or below")
            axes.set_title(f"{operation}: CDF through p50, p90, p99, p99.9 and max")
            axes.grid(alpha=0.3, which="both")
        _allocator_legend(panels[-1], [r["allocator"] for r in runs])
        figure.suptitle(f"Latency CDF, {_short(workload['name'], 70)}")
        caption = ("Latency CDF drawn through the percentile points the results store (p50, p90, p99, p99.9, max; "
                   "medians over repetitions): no raw histogram is stored, so the curve between them is a step.")
        plots.append(Plot(f"latency_cdf_{slugs[workload['name']]}", f"Latency CDF: {workload['name']}", figure,
                          caption, workload["name"], "latency_cdf"))
    return plots


def plot_fragmentation(results, slugs):
    plots = []
    for workload in results.workloads:
        runs = [r for r in results.runs_of(workload["name"]) if (r.get("timeline") or {}).get("op_index")]
        if not runs:
            continue
        lower, planner = workload.get("lower_bound_bytes"), workload.get("planner_bytes")
        peak = max([lower or 0, planner or 0] + [max(r["timeline"].get(c) or [0]) for r in runs
                                                 for c in ("reserved_bytes", "allocated_bytes", "requested_bytes")])
        unit, scale = tr.byte_unit(peak)
        rows, columns = _grid(len(runs), 4)
        figure = _figure(12, 1.4 + 2.3 * rows)
        panels = _axes(figure, len(runs), 4, sharex=True, sharey=True)
        for axes, run in zip(panels, runs):
            timeline, tint = run["timeline"], tr.colour(run["allocator"])
            x = timeline["op_index"]
            requested = [v / scale for v in timeline.get("requested_bytes", [])]
            axes.fill_between(x, requested, color="#cccccc", step="post", label="requested")
            axes.step(x, [v / scale for v in timeline.get("allocated_bytes", [])], where="post", color=tint,
                      linestyle="--", linewidth=1, label="allocated")
            if timeline.get("reserved_bytes"):
                axes.step(x, [v / scale for v in timeline["reserved_bytes"]], where="post", color=tint, linewidth=1.6,
                          label="reserved")
            else:
                axes.text(0.02, 0.95, "reserved not known (system malloc)", transform=axes.transAxes, fontsize=7,
                          va="top")
            if lower:
                axes.axhline(lower / scale, color=tr.colour("lower bound"), linestyle=":", linewidth=1,
                             label="lower bound")
            if planner:
                axes.axhline(planner / scale, color=tr.colour("planner"), linestyle="-.", linewidth=0.8,
                             label="planner")
            axes.set_title(run["allocator"], color=tint)
            axes.grid(alpha=0.3)
        for position, axes in enumerate(panels):
            if position + columns >= len(panels):  # the lowest panel of its column
                axes.set_xlabel("event index")
                axes.xaxis.set_tick_params(labelbottom=True)
        for axes in panels[::columns]:
            axes.set_ylabel(f"bytes ({unit})")
        handles, labels = panels[0].get_legend_handles_labels()
        _legend_right(panels[min(columns, len(panels)) - 1], handles, labels)
        figure.suptitle(f"Fragmentation over the replay, {_short(workload['name'], 70)}")
        caption = ("Requested (grey), allocated (dashed) and reserved (solid) bytes after each sampled event of the "
                   "memory pass, one panel per allocator in its colour; the lower bound (peak live requested bytes, "
                   "dotted) and the offline planner's arena (dash-dot) drawn in. The gap between reserved and "
                   "requested is what the allocator holds beyond what the workload uses.")
        plots.append(Plot(f"fragmentation_{slugs[workload['name']]}", f"Fragmentation over the replay: "
                          f"{workload['name']}", figure, caption, workload["name"], "fragmentation"))
    return plots


def plot_efficiency(results):
    workloads = []
    for workload in results.workloads:
        lower = workload.get("lower_bound_bytes")
        runs = [r for r in results.runs_of(workload["name"]) if tr.metric(r, "peak_reserved_bytes") and lower]
        if runs:
            workloads.append((workload, runs))
    if not workloads:
        return []
    from matplotlib.ticker import FuncFormatter

    figure = _figure(11, 1.2 + 3.2 * _grid(len(workloads), 2)[0])
    for axes, (workload, runs) in zip(_axes(figure, len(workloads), 2), workloads):
        lower, planner = workload["lower_bound_bytes"], workload.get("planner_bytes")
        runs = sorted(runs, key=lambda r: (bool(tr.metric(r, "oom_count")), tr.metric(r, "peak_reserved_bytes")))
        ratios = [tr.metric(r, "peak_reserved_bytes") / lower for r in runs]
        served = [ratio for ratio, run in zip(ratios, runs) if not tr.metric(run, "oom_count")] or ratios
        # Rows with failed requests held less than they were asked for: drawn at the left edge, not to scale.
        left = min([0.9] + served) * 0.95
        names = [r["allocator"] for r in runs]
        for index, run in enumerate(runs):
            oom = tr.metric(run, "oom_count") or 0
            axes.barh(index, max(ratios[index], left), color=tr.colour(names[index]), hatch="//" if oom else None,
                      edgecolor="white" if oom else None)
            efficiency = tr.metric(run, "efficiency")
            label = f" {ratios[index]:.3f}" + (f" (eff {efficiency:.3f})" if efficiency is not None else "")
            if oom:
                label = f" {ratios[index]:.3f}: {oom} failed requests, not comparable"
            axes.text(max(ratios[index], left), index, label, va="center", fontsize=7)
        axes.axvline(1.0, color=tr.colour("lower bound"), linestyle=":")
        if planner:
            axes.axvline(planner / lower, color=tr.colour("planner"), linestyle="-.", linewidth=0.8)
        axes.set_yticks(range(len(runs)), names)
        axes.invert_yaxis()
        axes.set_xscale("log")
        axes.set_xlim(left=left, right=max(served) * 1.8)
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}" if str(value)[0] in "1235" else ""))
        axes.set_xlabel("peak reserved bytes / lower bound (log scale; 1.0 is perfect)")
        planner_text = f", planner x{planner / lower:.3f}" if planner else ""
        axes.set_title(f"{_short(workload['name'])}\nlower bound {tr.format_bytes(lower)}{planner_text}")
        axes.grid(axis="x", which="both", alpha=0.3)
    figure.suptitle("Efficiency against the lower bound and the planner")
    caption = ("Peak reserved bytes of each allocator as a multiple of the lower bound (the peak of live requested "
               "bytes), with the offline planner's arena marked; the label is the efficiency (peak requested / peak "
               "reserved); dotted line: the lower bound, dash-dot: the planner. system.* rows are absent: their reserved "
               "memory is not visible. An allocator with failed requests (hatched) held less than it was asked for, so "
               "its bar is not to scale.")
    return [Plot("efficiency", "Efficiency against the lower bound and the planner", figure, caption)]


def plot_kv_utilisation(results):
    groups = []
    for workload in results.workloads:
        runs = [r for r in results.runs_of(workload["name"]) if tr.metric(r, "kv_utilisation") is not None]
        if runs and tr.is_llm_serve(workload):
            groups.append((tr.kv_policy(workload) or "?", workload, runs))
    if not groups:
        return []
    policies = [policy for policy, _, _ in groups]
    labels = [policy if policies.count(policy) == 1 else f"{policy}\n{_short(w['name'], 30)}" for policy, w, _ in groups]
    allocators = sorted({r["allocator"] for _, _, runs in groups for r in runs}, key=tr.allocator_key)
    figure = _figure(11, 4.8)
    width = 0.8 / max(1, len(allocators))
    panels = _axes(figure, 2, 2)
    for axes, key, title in zip(panels, ("kv_utilisation", "kv_utilisation_of_reserved"),
                                ("token bytes / committed KV bytes (the policy's own waste)",
                                 "token bytes / reserved memory not holding other data")):
        for index, allocator in enumerate(allocators):
            for position, (_, _, runs) in enumerate(groups):
                run = next((r for r in runs if r["allocator"] == allocator), None)
                if run is None or tr.metric(run, key) is None:
                    continue
                # A row with failed requests did not hold what it failed to serve: hatched, capped at the top.
                failed = bool(tr.metric(run, "oom_count"))
                axes.bar(position - 0.4 + width * (index + 0.5), min(tr.metric(run, key), 1.04), width=width,
                         color=tr.colour(allocator), hatch="//" if failed else None,
                         edgecolor="white" if failed else None)
        axes.set_xticks(range(len(groups)), labels)
        axes.set_ylim(0, 1.05)
        axes.set_xlabel("KV-cache policy (llm-serve kv=)")
        axes.set_ylabel("KV utilisation (fraction, time-weighted)")
        axes.set_title(title)
        axes.grid(axis="y", alpha=0.3)
    _allocator_legend(panels[-1], allocators)
    figure.suptitle("KV-cache utilisation per policy (llm-serve)")
    caption = ("Left: KV utilisation, the token bytes held over the KV bytes the policy committed, integrated over the "
               "simulated time (the same for every allocator: it is the policy's own waste). Right: the same token "
               "bytes over the reserved memory not holding weights or activations, which adds the allocator's waste. "
               "Hatched: an allocator with failed requests, not comparable (capped at 1).")
    return [Plot("kv_utilisation", "KV-cache utilisation per policy (llm-serve)", figure, caption)]


def plot_locality(results):
    """Drawn from the replay's locality metrics (touching the blocks each allocator hands out, harness/replay_results.cc
    add_locality_metrics) when the run measured them."""
    rows = [r for r in results.runs if tr.metric(r, "touch_bandwidth_bytes_per_second") is not None]
    if not rows:
        return []
    workloads = [w["name"] for w in results.workloads if any(r["workload"] == w["name"] for r in rows)]
    figure = _figure(11, 1.2 + max(2.5, 0.3 * max(len(results.runs_of(n)) for n in workloads)) * len(workloads))
    panels = figure.subplots(len(workloads), 2, squeeze=False)
    for (left, right), name in zip(panels, workloads):
        runs = [r for r in results.runs_of(name) if tr.metric(r, "touch_bandwidth_bytes_per_second") is not None]
        names = [r["allocator"] for r in runs]
        colours = [tr.colour(n) for n in names]
        positions = list(range(len(runs)))
        left.barh(positions, [tr.metric(r, "touch_bandwidth_bytes_per_second") / 1e9 for r in runs], color=colours)
        for key, marker, label in (("touch_hot_bandwidth_bytes_per_second", "^", "hot blocks"),
                                   ("touch_cold_bandwidth_bytes_per_second", "v", "cold blocks")):
            points = [(tr.metric(r, key) / 1e9, i) for i, r in enumerate(runs) if tr.metric(r, key) is not None]
            if points:
                left.scatter([x for x, _ in points], [y for _, y in points], marker=marker, color="#333333",
                             zorder=3, label=label)
        if left.get_legend_handles_labels()[0]:
            left.legend(loc="lower right")
        left.set_xlabel("touch bandwidth (GB/s; markers: hot and cold blocks)")
        right.barh(positions, [tr.metric(r, "touch_cache_resident_fraction") or 0 for r in runs], color=colours)
        cache = next((tr.metric(r, "touch_cache_bytes") for r in runs if tr.metric(r, "touch_cache_bytes")), None)
        right.set_xlabel("fraction of touched bytes resident in cache"
                         + (f" ({tr.format_bytes(cache)} modelled)" if cache else ""))
        right.set_xlim(0, 1)
        for axes in (left, right):
            axes.set_yticks(positions, names)
            axes.invert_yaxis()
            axes.set_title(_short(name))
            axes.grid(axis="x", alpha=0.3)
    figure.suptitle("Allocator locality: touching the memory each allocator hands out")
    caption = ("Bandwidth of touching the blocks each allocator returned during the replay (hot and cold blocks as "
               "markers when measured), and the share of the touched bytes found resident in cache "
               "(runs[].metrics.touch_*).")
    return [Plot("locality", "Allocator locality", figure, caption)]


# -------------------------------------------------------------------------------------- capacity


def plot_capacity(results, slugs):
    plots = []
    capacity = results.capacity or {}
    for workload in capacity.get("workloads", []):
        runs = [r for r in capacity.get("runs", []) if r["workload"] == workload["name"]]
        if not runs:
            continue
        runs.sort(key=lambda r: (tr.metric(r, "min_capacity_bytes") is None, tr.metric(r, "min_capacity_bytes") or 0))
        finite = [tr.metric(r, "min_capacity_bytes") for r in runs if tr.metric(r, "min_capacity_bytes")]
        unit, scale = tr.byte_unit(max(finite or [1]))
        figure = _figure(9, 1.4 + 0.38 * len(runs))
        axes = figure.subplots()
        names = [r["allocator"] for r in runs]
        values = [(tr.metric(r, "min_capacity_bytes") or 0) / scale for r in runs]
        axes.barh(range(len(runs)), values, color=[tr.colour(n) for n in names])
        for index, run in enumerate(runs):
            value, ratio = tr.metric(run, "min_capacity_bytes"), tr.metric(run, "capacity_over_lower_bound")
            text = " fails at every capacity" if value is None else f" {value / (1 << 20):.0f} MiB"
            text += f" (x{ratio:.3f})" if ratio is not None else ""
            axes.text(values[index], index, text, va="center", fontsize=7)
        axes.set_yticks(range(len(runs)), names)
        axes.invert_yaxis()
        axes.set_xlim(0, max(values + [1e-9]) * 1.35)
        axes.set_xlabel(f"minimum device capacity with no failed request ({unit})")
        axes.set_title(f"Minimum capacity per allocator, {_short(workload['name'], 60)}")
        axes.grid(axis="x", alpha=0.3)
        caption = ("The smallest simulated device capacity (to 1 MiB) on which each allocator replays the workload "
                   "with no failed request, from tiermark capacity (docs/capacity.md), beside the planner and the "
                   "lower bound; the factor over the lower bound in brackets.")
        plots.append(Plot(f"capacity_{slugs[workload['name']]}", f"Minimum capacity: {workload['name']}", figure,
                          caption, workload["name"], "capacity"))
    return plots


# ----------------------------------------------------------------------------------------- tiers


def _cache_marks(axes, tiers):
    levels = {}
    for cache in (tiers.get("topology") or {}).get("caches", []):
        level, size = cache.get("level"), cache.get("size_bytes")
        if level and size and (level not in levels or cache.get("type") == "data"):
            levels[level] = size
    for level, size in sorted(levels.items(), key=lambda item: item[1]):
        axes.axvline(size, color="#888888", linestyle=":", linewidth=1)
        axes.text(size, 0.99, f" {level} {tr.format_bytes(size)}", transform=axes.get_xaxis_transform(), fontsize=7,
                  rotation=90, va="top", ha="left", color="#555555")
    from matplotlib.ticker import FuncFormatter, LogLocator

    axes.xaxis.set_major_locator(LogLocator(base=4))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: tr.format_bytes(value)))


def plot_tiers(results):
    tiers = results.tiers
    if tiers is None:
        return []
    plots = []
    points = tiers.get("points", [])
    series = {}
    for point in points:
        if point.get("kernel") in TIER_KERNELS and point.get("bandwidth_bytes_per_second"):
            series.setdefault((point["kernel"], point.get("threads", 1)), []).append(point)
    if series:
        threads = sorted({t for _, t in series})
        figure = _figure(10, 5.5)
        axes = figure.subplots()
        for (kernel, thread_count), items in sorted(series.items(), key=lambda kv: (TIER_KERNELS.index(kv[0][0]), kv[0][1])):
            items.sort(key=lambda p: p["size_bytes"])
            axes.plot([p["size_bytes"] for p in items], [p["bandwidth_bytes_per_second"] / 1e9 for p in items],
                      color=KERNEL_COLOURS[kernel], linestyle=THREAD_STYLES[threads.index(thread_count) % 4],
                      marker=".", label=f"{kernel}, {thread_count} thread{'s' if thread_count > 1 else ''}")
        axes.set_xscale("log", base=2)
        axes.set_yscale("log")
        _cache_marks(axes, tiers)
        axes.set_xlabel("working-set size (bytes, log scale; all threads together)")
        axes.set_ylabel("bandwidth (GB/s, best of samples, log scale)")
        axes.set_title("Memory-tier bandwidth against working-set size")
        axes.legend(ncols=2, fontsize=7)
        axes.grid(alpha=0.3, which="both")
        caption = ("Bandwidth of each kernel and thread count against the working-set size (tiers.json points), "
                   "with the cache sizes hwloc reports marked: each drop is the working set leaving a cache level.")
        plots.append(Plot("tiers_bandwidth", "Memory-tier bandwidth against working-set size", figure, caption))
    latency = {}
    for point in points:
        if point.get("kernel") in ("latency", "latency_thp") and point.get("latency_ns") is not None:
            latency.setdefault(point["kernel"], []).append(point)
    if latency:
        figure = _figure(10, 5)
        axes = figure.subplots()
        for kernel, items in sorted(latency.items()):
            items.sort(key=lambda p: p["size_bytes"])
            axes.plot([p["size_bytes"] for p in items], [p["latency_ns"] for p in items], marker=".",
                      color=KERNEL_COLOURS[kernel],
                      label="4 KiB pages" if kernel == "latency" else "transparent huge pages")
        axes.set_xscale("log", base=2)
        axes.set_yscale("log")
        _cache_marks(axes, tiers)
        axes.set_xlabel("working-set size (bytes, log scale)")
        axes.set_ylabel("load-to-use latency (ns per dependent load, log scale)")
        axes.set_title("Memory-tier latency against working-set size")
        axes.legend()
        axes.grid(alpha=0.3, which="both")
        caption = ("Latency of a chain of dependent loads over a random cycle of the working set, with and without "
                   "transparent huge pages, with the cache sizes marked.")
        plots.append(Plot("tiers_latency", "Memory-tier latency against working-set size", figure, caption))
    return plots


# ----------------------------------------------------------------------------------------- driver


def make_plots(results):
    """Every plot the results allow: (plots, skipped) with skipped a list of (plot, reason)."""
    slugs = results.slugs()
    plots, skipped = [], []

    def add(name, made, reason):
        if made:
            plots.extend(made)
        else:
            skipped.append((name, reason))

    if results.results is not None:
        add("throughput", plot_throughput(results), "no run has ops_per_second")
        add("latency", plot_latency(results, slugs) + plot_latency_cdf(results, slugs),
            "no latency percentiles (replay without --latency)")
        add("fragmentation", plot_fragmentation(results, slugs), "no run has a timeline")
        add("efficiency", plot_efficiency(results), "no run has peak_reserved_bytes")
        add("kv_utilisation", plot_kv_utilisation(results), "no llm-serve workload with kv_utilisation")
        add("locality", plot_locality(results),
            "runs carry no touch_bandwidth_bytes_per_second (allocator locality is not measured yet)")
    else:
        skipped.append(("replay plots", "no results.json"))
    add("capacity", plot_capacity(results, slugs), "no capacity.json (tiermark capacity)")
    add("tiers", plot_tiers(results), "no tiers.json (tiermark tiers)")
    return plots, skipped


def figure_bytes(figure, fmt):
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, metadata=_metadata(fmt))
    return buffer.getvalue()


def _metadata(fmt):
    # No dates or versions in the files, so that the same results give the same files.
    if fmt == "svg":
        return {"Date": None, "Creator": None}
    if fmt == "png":
        return {"Software": None}
    return None


def write_plots(results, outdir, formats=("png", "svg"), quiet=False):
    """Writes every plot in each format and plots.json; returns the index (as written)."""
    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    plots, skipped = make_plots(results)
    index = {"schema": "tiermark-plots/1", "sources": [str(s) for s in results.sources], "formats": list(formats),
             "plots": [], "skipped": [{"plot": name, "reason": reason} for name, reason in skipped]}
    for plot in plots:
        files = {}
        for fmt in formats:
            target = outdir / f"{plot.name}.{fmt}"
            temporary = target.with_name(target.name + ".tmp")
            temporary.write_bytes(figure_bytes(plot.figure, fmt))
            temporary.replace(target)
            files[fmt] = target.name
        index["plots"].append({"name": plot.name, "kind": plot.kind, "title": plot.title, "caption": plot.caption,
                               "workload": plot.workload, "files": files})
    target = outdir / "plots.json"
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(json.dumps(index, indent=1) + "\n")
    temporary.replace(target)
    if not quiet:
        for name, reason in skipped:
            print(f"note: {name} plot skipped: {reason}", file=sys.stderr)
        print(f"plots: {len(plots)} in {outdir} ({', '.join(formats)}), index {target}")
    return index


def parse_formats(text):
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f not in ("png", "svg", "pdf")]
    if not formats or bad:
        raise tr.InputError(f"--format {text!r}: expected a comma list of png, svg, pdf")
    return formats


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="a results directory, or one results.json / capacity.json / tiers.json")
    parser.add_argument("-o", "--out", help="where to write the plots (default: next to the results)")
    parser.add_argument("--format", default="png,svg", help="comma list of png, svg, pdf (default png,svg)")
    args = parser.parse_args(argv)
    try:
        formats = parse_formats(args.format)
        results = tr.load(args.input)
    except tr.InputError as error:
        print(f"plot.py: {error}", file=sys.stderr)
        return 2
    from debian_python import require

    require("matplotlib")
    write_plots(results, args.out or results.directory, formats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
