"""The one loader of tiermark's results for the Python scripts (plot.py, report.py).

A results directory (results/<date>_<host>_<commit>/, results/README.md) holds `results.json` from
`tiermark replay` (schema tiermark/1), maybe `capacity.json` from `tiermark capacity` (the same
schema, docs/capacity.md), maybe `tiers.json` from `tiermark tiers` (schema tiermark-tiers/1) and
bench_allocators' Google Benchmark JSON. `load(path)` reads whichever of them are there and checks
each is the document it claims to be; anything else raises InputError with one line to show.

Also here, so that every plot and table agrees: the fixed colour of each allocator, the order
allocators are listed in, file-name slugs of workload names, and byte and rate formatting.
Standard library only.
"""

import hashlib
import json
import pathlib
import re

SCHEMA = "tiermark/1"
TIERS_SCHEMA = "tiermark-tiers/1"

# One colour per allocator in every plot (matplotlib's tab20 and a few named colours). The planner
# and the lower bound are the references every other row is measured against: black and grey.
ALLOCATOR_COLOURS = {
    "bump": "#8c564b",
    "system": "#7f7f7f",
    "buddy": "#d62728",
    "pool.fixed": "#bcbd22",
    "pool.sizeclass": "#17becf",
    "pool.coalescing": "#9467bd",
    "caching.pytorch": "#ff7f0e",
    "caching.bfc": "#1f77b4",
    "caching.vmm": "#2ca02c",
    "planner": "#000000",
    "system.glibc": "#e377c2",
    "system.jemalloc": "#aec7e8",
    "system.mimalloc": "#98df8a",
    "system.tcmalloc": "#ffbb78",
    "lower bound": "#555555",
}
ALLOCATOR_COLOURS["lower_bound"] = ALLOCATOR_COLOURS["lower bound"]
ALLOCATOR_ORDER = list(ALLOCATOR_COLOURS)
# Allocators not in the map (added after this file) get one of these, chosen by a hash of the name
# so that the colour is the same in every plot and every run.
FALLBACK_COLOURS = ["#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354"]


class InputError(Exception):
    """Input that is not a tiermark results file or directory; str() is the one line to print."""


def colour(allocator):
    if allocator in ALLOCATOR_COLOURS:
        return ALLOCATOR_COLOURS[allocator]
    digest = hashlib.sha1(allocator.encode()).digest()
    return FALLBACK_COLOURS[digest[0] % len(FALLBACK_COLOURS)]


def allocator_key(allocator):
    """Sort key: the fixed order above, then others by name."""
    if allocator in ALLOCATOR_ORDER:
        return (0, ALLOCATOR_ORDER.index(allocator), allocator)
    return (1, 0, allocator)


def slug(name):
    """A file-name part for a workload name: `cnn/resnet50:batch=8,steps=2` -> `cnn-resnet50-batch-8-steps-2`."""
    text = re.sub(r"[^A-Za-z0-9._]+", "-", name).strip("-.")
    return text or "workload"


def workload_slugs(names):
    """{name: slug}, unique: a slug two names share gets -2, -3 ... after the first."""
    slugs, seen = {}, {}
    for name in names:
        base = slug(name)
        if len(base) > 80:  # a long trace path: keep the end and a hash of the whole
            base = base[-60:].lstrip("-.") + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
        count = seen.get(base, 0) + 1
        seen[base] = count
        slugs[name] = base if count == 1 else f"{base}-{count}"
    return slugs


def kv_policy(workload):
    """The KV-cache policy of an llm-serve workload (`paged`, `exact`, ...), or None."""
    metadata = workload.get("metadata") or {}
    if metadata.get("kv.policy"):
        return metadata["kv.policy"]
    for text in (metadata.get("spec", ""), workload.get("name", "")):
        match = re.search(r"[:,]kv=([A-Za-z0-9_.-]+)", text)
        if match:
            return match.group(1)
    return None


def is_llm_serve(workload):
    metadata = workload.get("metadata") or {}
    return metadata.get("generator") == "llm-serve" or workload.get("name", "").startswith("llm-serve")


def format_bytes(value):
    if value is None:
        return "-"
    value = float(value)
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}" if value / scale < 100 else f"{value / scale:.0f} {unit}"
    return f"{value:.0f} B"


def byte_unit(maximum):
    """(unit name, divisor) that shows `maximum` bytes as a number of a reasonable size."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if maximum >= scale:
            return unit, float(scale)
    return "bytes", 1.0


def format_rate(value):
    if value is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g}"


def format_ratio(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def metric(run, dotted):
    """runs[].metrics value by dotted name (`latency_ns.alloc.p99`), None when absent."""
    value = run.get("metrics") or {}
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def statistic(run, dotted):
    """runs[].statistics[dotted] ({median, min, max, cv, n}) or None."""
    return (run.get("statistics") or {}).get(dotted)


def _read_json(path):
    try:
        text = path.read_text()
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror or error})") from None
    try:
        return json.loads(text)
    except ValueError as error:
        raise InputError(f"{path}: not JSON ({error})") from None


def _is_capacity(document):
    runs = document.get("runs") or []
    return bool(runs) and all("min_capacity_bytes" in (run.get("metrics") or {}) for run in runs)


def _check_results(path, document):
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        schema = document.get("schema") if isinstance(document, dict) else None
        raise InputError(f"{path}: not a tiermark results file (schema {schema!r}, expected {SCHEMA!r})")
    for key, kind in (("workloads", list), ("runs", list)):
        if not isinstance(document.get(key), kind):
            raise InputError(f"{path}: schema {SCHEMA} but no {key} list")
    for run in document["runs"]:
        if not isinstance(run, dict) or "workload" not in run or "allocator" not in run:
            raise InputError(f"{path}: a run without workload and allocator")
    document.setdefault("context", {})
    document.setdefault("notes", [])


def _check_tiers(path, document):
    if not isinstance(document.get("points"), list):
        raise InputError(f"{path}: schema {TIERS_SCHEMA} but no points list")
    document.setdefault("topology", {})
    document.setdefault("tiers", [])


class Results:
    """What one results directory (or one JSON file) holds.

    results: the replay document or None; capacity: the capacity document or None; tiers: the
    tiers document or None; bench_files: bench_allocators JSON paths; directory: where the
    files are (plots go next to them); sources: the files read."""

    def __init__(self, directory):
        self.directory = directory
        self.results = None
        self.capacity = None
        self.tiers = None
        self.bench_files = []
        self.sources = []

    def add(self, path):
        document = _read_json(path)
        schema = document.get("schema") if isinstance(document, dict) else None
        if schema == TIERS_SCHEMA:
            _check_tiers(path, document)
            self.tiers = document
        elif schema == SCHEMA:
            _check_results(path, document)
            # capacity.json shares the schema; older builds wrote it as results.json.
            if path.name == "capacity.json" or _is_capacity(document):
                self.capacity = document
            else:
                self.results = document
        elif isinstance(document, dict) and "benchmarks" in document and "context" in document:
            self.bench_files.append(path)
            return
        else:
            raise InputError(f"{path}: not a tiermark results file (schema {schema!r}, expected {SCHEMA!r} "
                             f"or {TIERS_SCHEMA!r})")
        self.sources.append(path)

    @property
    def context(self):
        for document in (self.results, self.capacity, self.tiers):
            if document is not None:
                return document.get("context") or {}
        return {}

    @property
    def workloads(self):
        return (self.results or {}).get("workloads", [])

    @property
    def runs(self):
        return (self.results or {}).get("runs", [])

    def runs_of(self, workload_name):
        """The runs of one workload, in the fixed allocator order."""
        runs = [run for run in self.runs if run["workload"] == workload_name]
        return sorted(runs, key=lambda run: allocator_key(run["allocator"]))

    def slugs(self):
        names = [w["name"] for w in self.workloads]
        names += [w["name"] for w in (self.capacity or {}).get("workloads", []) if w["name"] not in names]
        return workload_slugs(names)


def load(path):
    """Results from a results directory or one JSON file; InputError when there is nothing to read."""
    path = pathlib.Path(path)
    if path.is_dir():
        results = Results(path)
        for name in ("results.json", "capacity.json", "tiers.json"):
            if (path / name).is_file():
                results.add(path / name)
        results.bench_files = sorted(path.glob("bench_allocators*.json"))
        if not results.sources:
            raise InputError(f"{path}: no results.json, capacity.json or tiers.json in this directory")
        return results
    if path.is_file():
        results = Results(path.parent)
        results.add(path)
        if not results.sources:
            raise InputError(f"{path}: a Google Benchmark file, not tiermark results (scripts/bench_table.py reads it)")
        return results
    raise InputError(f"{path}: no such file or directory")
