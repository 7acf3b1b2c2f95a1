#!/usr/bin/env python3
"""Turns bench_allocators' Google Benchmark JSON files into one comparison table.

Usage: bench_table.py RESULTS_DIR_OR_JSON... [--baseline LABEL] [--json FILE]

Each JSON file is one bench_allocators process. Rows named pair/system/... and random/system/...
are labelled with the malloc that served that process (its context `tiermark_malloc`), so the same
benchmark run with glibc, jemalloc, tcmalloc or mimalloc preloaded becomes separate rows:
system[glibc], system[jemalloc], ... Every sample of a row (one per file that has it) is kept; the
table shows the median time per item in nanoseconds and the coefficient of variation over samples,
then each median relative to a baseline row. Standard library only: runs under any python3.
"""

import argparse
import json
import pathlib
import statistics
import sys

TIME_UNITS_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def fail(message):
    print(f"bench_table: {message}", file=sys.stderr)
    sys.exit(2)


def tiermark_schema(path):
    """True for a JSON file of tiermark's own schemas (tiermark/1, tiermark-tiers/1, ...)."""
    try:
        return str(json.loads(path.read_text()).get("schema", "")).startswith("tiermark")
    except (OSError, ValueError, AttributeError):
        return False  # not ours: load_samples reports what is wrong with it


def input_files(paths):
    files = []
    for path in map(pathlib.Path, paths):
        if path.is_dir():
            # A results folder also holds tiermark's own files (results.json, tiers.json, ...).
            files.extend(p for p in sorted(path.glob("*.json")) if not tiermark_schema(p))
        elif path.is_file():
            files.append(path)
        else:
            fail(f"{path}: no such file or directory")
    if not files:
        fail(f"no JSON files in {' '.join(paths)}")
    return files


def load_samples(files):
    """Returns {(allocator_label, benchmark): [ns per item, ...]} and the column order seen."""
    samples = {}
    columns = []
    for path in files:
        try:
            document = json.loads(path.read_text())
            malloc = document["context"].get("tiermark_malloc", "glibc")
            rows = document["benchmarks"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            fail(f"{path}: not a bench_allocators JSON file ({error})")
        for row in rows:
            if row.get("run_type", "iteration") != "iteration" or row.get("error_occurred"):
                continue
            parts = row["name"].split("/")
            if len(parts) < 3:
                continue
            kind, allocator, parameter = parts[0], parts[1], parts[2]
            label = f"system[{malloc}]" if allocator == "system" else allocator
            if allocator == "malloc":
                label = f"malloc[{malloc}]"
            items_per_second = row.get("items_per_second")
            if items_per_second:
                ns = 1e9 / items_per_second
            else:
                ns = row["real_time"] * TIME_UNITS_NS[row.get("time_unit", "ns")]
            samples.setdefault((label, f"{kind}/{parameter}"), []).append(ns)
            if f"{kind}/{parameter}" not in columns:
                columns.append(f"{kind}/{parameter}")
    return samples, columns


def column_order(column):
    """pair/<bytes> in ascending size, then random/<range> in the order lo-hi ascending."""
    kind, _, parameter = column.partition("/")
    number = parameter.split("-")[0].rstrip("KMG")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(parameter.split("-")[0][-1:], 1)
    return (kind != "pair", int(number) * scale if number.isdigit() else 0, parameter)


def summarise(samples):
    summary = {}
    for key, values in samples.items():
        median = statistics.median(values)
        cv = statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else 0.0
        summary[key] = {"median_ns": median, "cv": cv, "samples": values}
    return summary


def format_table(summary, columns, baseline):
    labels = sorted({label for label, _ in summary}, key=lambda label: (not label.startswith(("malloc", "system")), label))
    width = max(len(label) for label in labels) + 2
    cell = 16
    lines = ["ns per item (median over runs, coefficient of variation); pair = allocate+free, random = free+allocate"]
    lines.append("allocator".ljust(width) + "".join(column.rjust(cell) for column in columns))
    for label in labels:
        cells = []
        for column in columns:
            entry = summary.get((label, column))
            cells.append(f"{entry['median_ns']:.1f} ({entry['cv'] * 100:.0f}%)".rjust(cell) if entry else "-".rjust(cell))
        lines.append(label.ljust(width) + "".join(cells))
    if any(label == baseline for label, _ in summary):
        lines.append("")
        lines.append(f"relative to {baseline} (below 1.00 is faster)")
        lines.append("allocator".ljust(width) + "".join(column.rjust(cell) for column in columns))
        for label in labels:
            cells = []
            for column in columns:
                entry, base = summary.get((label, column)), summary.get((baseline, column))
                cells.append(f"{entry['median_ns'] / base['median_ns']:.2f}".rjust(cell) if entry and base else "-".rjust(cell))
            lines.append(label.ljust(width) + "".join(cells))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="results directories or bench_allocators JSON files")
    parser.add_argument("--baseline", default="system[tcmalloc]", help="row to compare every other row with")
    parser.add_argument("--json", help="also write the summary as JSON to this file")
    args = parser.parse_args(argv)
    samples, columns = load_samples(input_files(args.inputs))
    if not samples:
        fail("no benchmark rows found")
    summary = summarise(samples)
    columns.sort(key=column_order)
    print(format_table(summary, columns, args.baseline))
    if args.json:
        rows = [{"allocator": label, "benchmark": column, **entry} for (label, column), entry in sorted(summary.items())]
        target = pathlib.Path(args.json)
        temporary = target.with_name(target.name + ".tmp")
        temporary.write_text(json.dumps({"schema": "tiermark-bench-table/1", "rows": rows}, indent=2) + "\n")
        temporary.replace(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
