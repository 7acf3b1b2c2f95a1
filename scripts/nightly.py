#!/usr/bin/env python3
"""Nightly tracking: runs a suite, keeps every repetition in a SQLite history, gates regressions.

Usage:
  nightly.py run [--suite quick|standard] [--db PATH] [--baseline NAME] [--tiermark BIN] ...
  nightly.py compare BASE.json NEW.json [--threshold 0.05] [--alpha 0.05]
  nightly.py ingest RESULTS.json... [--db PATH]
  nightly.py baseline [NAME] [--run ID] [--db PATH]
  nightly.py trend [--db PATH] [-o DIR]

Inputs are tiermark results (schema tiermark/1, results/README.md) or Google Benchmark JSON from
the bench_* binaries (anything Google Benchmark's tools/compare.py reads; told apart by their keys).
A metric regresses when a two-sided Mann-Whitney U test over the repetitions gives p < alpha AND
its median moved the wrong way by more than the threshold (docs/nightly.md). Exit codes: 0 no
regression, 1 regression (a table says what), 2 bad input (one line on stderr).

Invariants: the history is only written inside BEGIN IMMEDIATE transactions on a WAL database with
a busy timeout, so concurrent writers queue instead of failing; one run's rows land all or none.
Standard library only, except `trend`, which needs matplotlib (debian_python.require).
"""

import argparse
import datetime
import fnmatch
import hashlib
import json
import math
import os
import pathlib
import random
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import tiermark_results  # noqa: E402  (the one loader of the results schema)

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_DB = ROOT / "results" / "history.sqlite"
DEFAULT_TIERMARK = ROOT / "build" / "release" / "tiermark"
SCHEMA = "tiermark/1"

# The suites. `standard` is what tools/suite.sh replays (keep the two in step); `quick` is a smoke
# run of seconds on in-process allocators only, so it needs no preloadable malloc.
def read_workload_list(path):
    """One workload spec per line; blank lines and # comments skipped (the main job reads it too)."""
    return [line.strip() for line in pathlib.Path(path).read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]


SUITES = {
    "quick": {
        "workloads": ["cnn/resnet50:batch=8,steps=1", "transformer/gpt2-small:steps=1,b=1"],
        "allocator": "caching.pytorch,caching.bfc,caching.vmm,buddy",
        "repetitions": 5,
    },
    "standard": {
        "workloads": read_workload_list(ROOT / "tools" / "standard-workloads.txt"),
        "allocator": "all",
        "repetitions": 5,
    },
}

# Which way is bad, per metric (docs/metrics.md): +1 higher is better, -1 lower is better. Metrics
# not named here (counts, requested bytes, upstream calls, page faults) are stored but not gated.
HIGHER_IS_BETTER = {"ops_per_second", "items_per_second", "bytes_per_second", "efficiency"}
LOWER_IS_BETTER = {"seconds", "real_time", "cpu_time", "peak_reserved_bytes", "peak_rss_bytes"}

# Google Benchmark row keys that describe the run rather than measure it.
GBENCH_NOT_METRICS = {"family_index", "per_family_instance_index", "repetitions", "repetition_index",
                      "threads", "iterations"}
TIME_UNITS_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}

# Exact U distribution up to this many observations in all; the normal approximation above it.
EXACT_MAX_N = 40


class InputError(Exception):
    """Bad input: reported as one line on stderr with exit code 2."""


def fail(message):
    print(f"nightly: {message}", file=sys.stderr)
    sys.exit(2)


# ---------------------------------------------------------------------------------------------
# Mann-Whitney U

def _midranks(values):
    """Ranks 1..n of values, ties sharing the mean of their ranks, and the sizes of the tie groups."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    ties = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


def mann_whitney_u(x, y, method="auto"):
    """Two-sided Mann-Whitney U test of samples x and y: returns (U of x, p).

    `exact` counts, over every way of splitting the pooled midranks into groups of len(x) and
    len(y), how often the rank sum lies at least as far from its mean as the observed one (the
    permutation distribution conditional on the ties, so tied data are handled exactly).
    `asymptotic` is the normal approximation with tie and continuity corrections, the same as
    scipy.stats.mannwhitneyu(method="asymptotic"). `auto` is exact up to EXACT_MAX_N observations.
    All values equal gives p = 1."""
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise ValueError("mann_whitney_u needs two non-empty samples")
    n = n1 + n2
    ranks, ties = _midranks(list(x) + list(y))
    rank_sum = sum(ranks[:n1])
    u1 = rank_sum - n1 * (n1 + 1) / 2
    if len(ties) == 1:
        return u1, 1.0
    if method == "auto":
        method = "exact" if n <= EXACT_MAX_N else "asymptotic"
    if method == "exact":
        # Doubled midranks are whole numbers, so the count is exact integer arithmetic.
        doubled = [round(2 * r) for r in ranks]
        counts = [dict() for _ in range(n1 + 1)]  # counts[k][s]: k-subsets with doubled sum s
        counts[0][0] = 1
        for i, r in enumerate(doubled):
            for k in range(min(i + 1, n1), 0, -1):
                into = counts[k]
                for s, c in counts[k - 1].items():
                    into[s + r] = into.get(s + r, 0) + c
        centre = n1 * (n + 1)  # the mean of the doubled rank sum
        observed = abs(sum(doubled[:n1]) - centre)
        extreme = sum(c for s, c in counts[n1].items() if abs(s - centre) >= observed)
        return u1, min(1.0, extreme / math.comb(n, n1))
    if method == "asymptotic":
        mean = n1 * n2 / 2
        tie_term = sum(t ** 3 - t for t in ties)
        variance = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1)))
        z = (abs(u1 - mean) - 0.5) / math.sqrt(variance)
        return u1, min(1.0, math.erfc(z / math.sqrt(2)))
    raise ValueError(f"unknown method {method!r}")


def min_p_value(n1, n2):
    """The smallest two-sided p any data can give with these sample sizes: 2 / C(n1 + n2, n1)."""
    return min(1.0, 2 / math.comb(n1 + n2, n1))


# ---------------------------------------------------------------------------------------------
# Loading results files

def _flatten(prefix, value, out):
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        if math.isfinite(value):
            out[prefix] = float(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, item, out)


class Results:
    """One results file as rows (workload, allocator, config, metric, repetition, value).

    Repetitions count from 1; repetition 0 holds a tiermark run's metrics measured once (the memory
    pass), which are stored but not tested. Google Benchmark rows have the benchmark name as
    workload and "" as allocator and config."""

    def __init__(self, kind, context, rows, path):
        self.kind, self.context, self.rows, self.path = kind, context, rows, path

    def samples(self):
        """{(workload, label, metric): [value per repetition, in order]}, repetitions >= 1 only.

        The label is the allocator kind, or its config when a workload has the same kind twice
        (two caching.pytorch specs), so that a changed default option does not unpair rows."""
        configs = {}
        for workload, allocator, config, *_ in self.rows:
            configs.setdefault((workload, allocator), set()).add(config)
        grouped = {}
        for workload, allocator, config, metric, repetition, value in self.rows:
            if repetition < 1:
                continue
            label = allocator if len(configs[(workload, allocator)]) == 1 else config
            grouped.setdefault((workload, label, metric), []).append((repetition, value))
        return {key: [v for _, v in sorted(pairs)] for key, pairs in grouped.items()}


def _parse_tiermark(document, path):
    context = document.get("context")
    runs = document.get("runs")
    if not isinstance(context, dict) or not isinstance(runs, list):
        raise InputError(f"{path}: schema {SCHEMA} without 'context' and 'runs'")
    rows = []
    for run in runs:
        try:
            workload, allocator = run["workload"], run["allocator"]
            config = run.get("config") or ""
            repetitions = run.get("repetitions") or []
            per_repetition = set()
            for index, repetition in enumerate(repetitions, 1):
                flat = {}
                _flatten("", repetition, flat)
                per_repetition.update(flat)
                rows.extend((workload, allocator, config, m, index, v) for m, v in flat.items())
            once = {}
            _flatten("", run.get("metrics") or {}, once)
            rows.extend((workload, allocator, config, m, 0, v) for m, v in once.items()
                        if m not in per_repetition)
        except (KeyError, TypeError, AttributeError) as error:
            raise InputError(f"{path}: a run without workload/allocator or with malformed metrics ({error})")
    return Results("tiermark", context, rows, path)


def _parse_gbench(document, path):
    context = document.get("context") if isinstance(document.get("context"), dict) else {}
    rows = []
    seen = {}
    for row in document["benchmarks"]:
        if not isinstance(row, dict) or "name" not in row:
            raise InputError(f"{path}: a Google Benchmark row without a name")
        # compare.py's format: per-repetition rows are "iteration" (old versions omit run_type);
        # the _mean/_median/_stddev/_cv rows are "aggregate" and carry nothing new.
        if row.get("run_type", "iteration") != "iteration" or row.get("error_occurred"):
            continue
        name = row["name"]
        seen[name] = seen.get(name, 0) + 1
        repetition = row.get("repetition_index")
        repetition = repetition + 1 if isinstance(repetition, int) else seen[name]
        scale = TIME_UNITS_NS.get(row.get("time_unit", "ns"), 1.0)
        for key, value in row.items():
            if key in GBENCH_NOT_METRICS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value):
                continue
            if key in ("real_time", "cpu_time"):
                value = value * scale  # kept in ns whatever the row's unit
            rows.append((name, "", "", key, repetition, float(value)))
    return Results("gbench", context, rows, path)


def load_results(path):
    """A results file (a directory means its results.json): Google Benchmark JSON when it has a
    `benchmarks` list, else whatever the project's one loader (tiermark_results.py) accepts."""
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read ({error})")
    try:
        document = json.loads(text)
    except ValueError as error:
        raise InputError(f"{path}: not JSON ({error})")
    if isinstance(document, dict) and "schema" not in document and isinstance(document.get("benchmarks"), list):
        return _parse_gbench(document, path)
    schema = document.get("schema") if isinstance(document, dict) else None
    if schema != SCHEMA:
        raise InputError(f"{path}: not a tiermark results file (schema {schema!r}, expected {SCHEMA!r}) "
                         "nor Google Benchmark JSON")
    try:
        loaded = tiermark_results.load(path)
    except tiermark_results.InputError as error:
        raise InputError(str(error))
    if loaded.results is None:
        raise InputError(f"{path}: not the results of `tiermark replay` (schema {SCHEMA}) "
                         "nor Google Benchmark JSON")
    return _parse_tiermark(loaded.results, path)


# ---------------------------------------------------------------------------------------------
# Comparing

def direction(metric):
    """+1 when higher is better, -1 when lower is better, 0 when the metric is not gated."""
    leaf = metric.rsplit(".", 1)[-1]
    if metric in HIGHER_IS_BETTER:
        return 1
    if metric in LOWER_IS_BETTER:
        return -1
    if metric.startswith("latency_ns.") and leaf != "count":
        return -1
    return 0


# Not gated unless asked (--gate-all): a run's maximum latency is one operation, on a shared machine
# usually the one a preemption landed on (about 4 ms here), so it moves between identical runs.
DEFAULT_EXCLUDE = ("latency_ns.*.max",)
# Latency medians closer than this are one or two steps of the clock: the replay's latencies come in
# 10 ns steps on this machine kind (steady_clock over the VM's clock source), so 10 -> 20 ns is +100%
# and no regression. Measured, docs/nightly.md "How noisy in practice".
DEFAULT_LATENCY_FLOOR_NS = 20.0


def gate_exclusions(args):
    return tuple(args.exclude) + (() if args.gate_all else DEFAULT_EXCLUDE)


def compare_samples(base, new, threshold, alpha, exclude=DEFAULT_EXCLUDE, latency_floor_ns=DEFAULT_LATENCY_FLOOR_NS):
    """Tests every gated metric present on both sides, except those matching an `exclude` pattern
    (fnmatch: `latency_ns.*.max`); a latency whose median moved by no more than `latency_floor_ns`
    is `same`. Returns (findings, summary), findings being dicts with workload, allocator, metric,
    base, new, change, p, verdict (regressed, improved, same)."""
    findings = []
    underpowered = 0
    for key in sorted(base.keys() & new.keys()):
        workload, label, metric = key
        sign = direction(metric)
        if sign == 0 or any(fnmatch.fnmatchcase(metric, pattern) for pattern in exclude):
            continue
        a, b = base[key], new[key]
        base_median, new_median = statistics.median(a), statistics.median(b)
        _, p = mann_whitney_u(a, b)
        if min_p_value(len(a), len(b)) >= alpha:
            underpowered += 1
        verdict = "same"
        if base_median == 0:
            # No relative change exists (a latency below the timer's resolution): not gated.
            change = 0.0 if new_median == 0 else math.copysign(math.inf, new_median)
        else:
            change = (new_median - base_median) / abs(base_median)
            if metric.startswith("latency_ns.") and abs(new_median - base_median) <= latency_floor_ns:
                pass  # within the clock's steps: not a change the gate can stand behind
            elif p < alpha and change * sign < -threshold:
                verdict = "regressed"
            elif p < alpha and change * sign > threshold:
                verdict = "improved"
        findings.append({"workload": workload, "allocator": label, "metric": metric, "base": base_median,
                         "new": new_median, "change": change, "p": p, "verdict": verdict,
                         "n": (len(a), len(b))})
    rows_base = {(w, l) for w, l, _ in base}
    rows_new = {(w, l) for w, l, _ in new}
    summary = {
        "compared": len(findings),
        "improved": sum(f["verdict"] == "improved" for f in findings),
        "regressed": sum(f["verdict"] == "regressed" for f in findings),
        "only_base": len(rows_base - rows_new),
        "only_new": len(rows_new - rows_base),
        "underpowered": underpowered,
    }
    return findings, summary


def format_value(metric, value):
    if metric.endswith("_bytes"):
        return f"{value / 2**20:.1f} MiB"
    return f"{value:.4g}"


def format_table(findings):
    header = ("workload", "allocator", "metric", "base median", "new median", "change", "p")
    lines = [(f["workload"], f["allocator"] or "-", f["metric"], format_value(f["metric"], f["base"]),
              format_value(f["metric"], f["new"]),
              f"{f['change'] * 100:+.1f}%", f"{f['p']:.4f}") for f in findings]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    numeric = {3, 4, 5, 6}

    def render(row):
        return "  ".join(cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
                         for i, cell in enumerate(row)).rstrip()
    return "\n".join([render(header), render(tuple("-" * w for w in widths)), *map(render, lines)])


def report(findings, summary, threshold, alpha, out=sys.stdout):
    """Prints the regression table (if any) and the summary; returns the exit code."""
    regressed = [f for f in findings if f["verdict"] == "regressed"]
    if regressed:
        print(f"regressions (p < {alpha:g} and median worse by more than {threshold * 100:g}%):", file=out)
        print(format_table(regressed), file=out)
    line = (f"{summary['compared']} metrics compared: {summary['improved']} improved, "
            f"{summary['regressed']} regressed")
    extras = []
    if summary["only_base"] or summary["only_new"]:
        extras.append(f"rows only in base: {summary['only_base']}, only in new: {summary['only_new']}")
    if summary["underpowered"]:
        extras.append(f"{summary['underpowered']} with too few repetitions to ever reach p < {alpha:g}")
    print(line + (f" ({'; '.join(extras)})" if extras else ""), file=out)
    return 1 if regressed else 0


def command_compare(args):
    base, new = load_results(args.base), load_results(args.new)
    if base.kind != new.kind:
        raise InputError(f"cannot compare {base.kind} results ({base.path}) with {new.kind} results ({new.path})")
    findings, summary = compare_samples(base.samples(), new.samples(), args.threshold, args.alpha, gate_exclusions(args),
                                        args.latency_floor_ns)
    return report(findings, summary, args.threshold, args.alpha)


# ---------------------------------------------------------------------------------------------
# History

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  time TEXT NOT NULL,              -- when measured, UTC ISO 8601 (the context's date)
  host_fingerprint TEXT NOT NULL,  -- hash of host, cpu, cores, memory_bytes, kernel, compiler, build_type
  host TEXT,
  git_commit TEXT,
  context_json TEXT NOT NULL,
  source TEXT NOT NULL             -- suite:<name> for `run`, file:<kind> for `ingest`
);
CREATE TABLE IF NOT EXISTS measurements (
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  workload TEXT NOT NULL,
  allocator TEXT NOT NULL,
  config TEXT NOT NULL,
  metric TEXT NOT NULL,
  repetition INTEGER NOT NULL,     -- 1..N; 0 for a metric measured once (the memory pass)
  value REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS baselines (
  name TEXT PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs(id),
  time TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_host ON runs(host_fingerprint, source, id);
CREATE INDEX IF NOT EXISTS measurements_by_run ON measurements(run_id);
CREATE INDEX IF NOT EXISTS measurements_by_series ON measurements(workload, allocator, metric);
"""

FINGERPRINT_KEYS = ("host", "cpu", "cores", "memory_bytes", "kernel", "compiler", "build_type")
# Google Benchmark's context names some of them differently and lacks the others.
GBENCH_CONTEXT = {"host": "host_name", "cores": "num_cpus", "build_type": "library_build_type"}


def host_fingerprint(results):
    context = results.context
    if results.kind == "gbench":
        values = [context.get(GBENCH_CONTEXT.get(key, key)) for key in FINGERPRINT_KEYS]
        if context.get("tiermark_build_type"):
            values[-1] = context["tiermark_build_type"]
    else:
        values = [context.get(key) for key in FINGERPRINT_KEYS]
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:16]


def measured_time(context):
    try:
        stamp = datetime.datetime.fromisoformat(str(context["date"]).replace("Z", "+00:00"))
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    except (KeyError, ValueError):
        stamp = datetime.datetime.now(datetime.timezone.utc)
    return stamp.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def retry_while_locked(step, seconds=60):
    """Runs step(), again after a short random pause while SQLite says the database is locked."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return step()
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.01, 0.1))


def open_history(path, create=True):
    path = pathlib.Path(path)
    if path.is_dir():
        raise InputError(f"{path}: a directory, not a history database")
    if not path.exists() and not create:
        raise InputError(f"{path}: no such history database (`nightly.py run` or `ingest` makes it)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE takes the write lock up
        # front, so two writers queue on busy_timeout instead of deadlocking on lock upgrade).
        connection = sqlite3.connect(str(path), timeout=60, isolation_level=None)
        connection.execute("PRAGMA busy_timeout = 60000")
        # Switching a new database to WAL takes an exclusive lock, and SQLite reports a concurrent
        # opener's lock at once, without its busy handler: retry that step for the same 60 s.
        retry_while_locked(lambda: connection.execute("PRAGMA journal_mode = WAL"))
        connection.execute("PRAGMA foreign_keys = ON")
        if create:
            retry_while_locked(lambda: connection.executescript(f"BEGIN IMMEDIATE;\n{SCHEMA_SQL}\nCOMMIT;"))
        else:
            tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not {"runs", "measurements"} <= tables:
                raise InputError(f"{path}: not a tiermark history database (no runs/measurements tables)")
    except (sqlite3.Error, OSError) as error:
        raise InputError(f"{path}: cannot open the history database ({error})")
    return connection


def store(connection, results, source):
    """Stores one results file as a run; returns its id. All of it or nothing."""
    context = results.context
    host = context.get("host", context.get("host_name"))
    try:
        connection.execute("BEGIN IMMEDIATE")
        cursor = connection.execute(
            "INSERT INTO runs(time, host_fingerprint, host, git_commit, context_json, source) VALUES (?,?,?,?,?,?)",
            (measured_time(context), host_fingerprint(results), host, context.get("git_commit"),
             json.dumps(context, sort_keys=True), source))
        run_id = cursor.lastrowid
        connection.executemany(
            "INSERT INTO measurements(run_id, workload, allocator, config, metric, repetition, value)"
            " VALUES (?,?,?,?,?,?,?)", ((run_id, *row) for row in results.rows))
        connection.execute("COMMIT")
    except sqlite3.Error as error:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise InputError(f"cannot store {results.path} in the history ({error})")
    return run_id


def stored_results(connection, run_id):
    row = connection.execute("SELECT context_json, source FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise InputError(f"no run {run_id} in the history")
    rows = connection.execute("SELECT workload, allocator, config, metric, repetition, value FROM measurements"
                              " WHERE run_id = ?", (run_id,)).fetchall()
    kind = "gbench" if row[1] == "file:gbench" else "tiermark"
    return Results(kind, json.loads(row[0]), rows, f"run {run_id}")


def describe_run(connection, run_id):
    time, host, commit, source = connection.execute(
        "SELECT time, host, git_commit, source FROM runs WHERE id = ?", (run_id,)).fetchone()
    return f"run {run_id} ({source}, {host}, {commit}, {time})"


def named_baseline(connection, name):
    row = connection.execute("SELECT run_id FROM baselines WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise InputError(f"no baseline named {name!r} (`nightly.py baseline {name} --run ID` names one)")
    return row[0]


def command_ingest(args):
    connection = open_history(args.db)
    for path in args.results:
        results = load_results(path)
        run_id = store(connection, results, f"file:{results.kind}")
        print(f"stored {results.path} as run {run_id} ({len(results.rows)} measurements)")
    return 0


def command_baseline(args):
    connection = open_history(args.db, create=False)
    try:
        if args.name is None:
            for name, run_id in connection.execute("SELECT name, run_id FROM baselines ORDER BY name"):
                print(f"{name}: {describe_run(connection, run_id)}")
            return 0
        run_id = args.run
        if run_id is None:
            row = connection.execute("SELECT max(id) FROM runs").fetchone()
            if row[0] is None:
                raise InputError(f"{args.db}: no runs stored yet")
            run_id = row[0]
        elif connection.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
            raise InputError(f"no run {run_id} in {args.db}")
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT OR REPLACE INTO baselines(name, run_id, time) VALUES (?,?,?)",
                           (args.name, run_id, measured_time({})))
        connection.execute("COMMIT")
    except sqlite3.Error as error:
        raise InputError(f"{args.db}: {error}")
    print(f"baseline {args.name} = {describe_run(connection, run_id)}")
    return 0


# ---------------------------------------------------------------------------------------------
# run

def command_run(args):
    suite = SUITES[args.suite]
    binary = pathlib.Path(args.tiermark or os.environ.get("TIERMARK_BIN") or DEFAULT_TIERMARK)
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise InputError(f"{binary}: no tiermark binary (build it with tools/build.sh, or pass "
                         "--tiermark / TIERMARK_BIN)")
    connection = open_history(args.db)  # fail on a bad database before spending minutes measuring
    baseline_id = named_baseline(connection, args.baseline) if args.baseline else None

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0])
    parent = pathlib.Path(args.results_dir)
    out = parent / f"{stamp}_{host}_nightly-{args.suite}"
    suffix = 1
    while out.exists():
        suffix += 1
        out = parent / f"{stamp}_{host}_nightly-{args.suite}.{suffix}"
    out.mkdir(parents=True)
    command = [str(binary), "replay"]
    for workload in suite["workloads"]:
        command += ["--workload", workload]
    command += ["--allocator", suite["allocator"], "--latency", "--repetitions", str(suite["repetitions"]),
                "--out", str(out)]
    print(f"nightly: suite {args.suite}: {' '.join(command)}", file=sys.stderr)
    with open(out / "replay_table.txt", "w") as table:
        status = subprocess.run(command, stdout=table).returncode
    if status != 0:
        raise InputError(f"tiermark replay exited with {status} (see {out})")

    results = load_results(out / "results.json")
    run_id = store(connection, results, f"suite:{args.suite}")
    print(f"stored {out / 'results.json'} as run {run_id}")
    if baseline_id is None:
        row = connection.execute(
            "SELECT max(id) FROM runs WHERE host_fingerprint = ? AND source = ? AND id < ?",
            (host_fingerprint(results), f"suite:{args.suite}", run_id)).fetchone()
        baseline_id = row[0]
        if baseline_id is None:
            print(f"no earlier {args.suite} run on this host: nothing to compare with yet")
            return 0
    print(f"baseline: {describe_run(connection, baseline_id)}")
    base = stored_results(connection, baseline_id)
    if base.kind != results.kind:
        raise InputError(f"baseline run {baseline_id} holds {base.kind} results, not tiermark results")
    (fingerprint,), = connection.execute("SELECT host_fingerprint FROM runs WHERE id = ?", (baseline_id,))
    if fingerprint != host_fingerprint(results):
        print(f"note: the baseline was measured on another host fingerprint ({fingerprint})")
    findings, summary = compare_samples(base.samples(), results.samples(), args.threshold, args.alpha,
                                        gate_exclusions(args), args.latency_floor_ns)
    return report(findings, summary, args.threshold, args.alpha)


# ---------------------------------------------------------------------------------------------
# trend

def metric_family(metric):
    """The plot a tracked metric goes into: throughput, time, memory, efficiency, latency_<op>."""
    if metric.startswith("latency_ns."):
        return "latency_" + metric.split(".")[1]
    if metric in ("ops_per_second", "items_per_second", "bytes_per_second"):
        return "throughput"
    if metric in ("seconds", "real_time", "cpu_time"):
        return "time"
    if metric == "efficiency":
        return "efficiency"
    return "memory"


def metric_order(metric):
    """Percentiles in rising order, then max, then the rest by name."""
    leaf = metric.rsplit(".", 1)[-1]
    rank = {"p50": 0, "p90": 1, "p99": 2, "p999": 3, "max": 4}.get(leaf, 5)
    return (rank, metric)


def command_trend(args):
    connection = open_history(args.db, create=False)
    try:
        runs = connection.execute("SELECT id, time, host, host_fingerprint FROM runs ORDER BY id").fetchall()
        series = {}  # (fingerprint, workload, family) -> {metric: {label: [(time, median, lo, hi)]}}
        for run_id, time, host, fingerprint in runs:
            rows = connection.execute("SELECT workload, allocator, config, metric, repetition, value"
                                      " FROM measurements WHERE run_id = ? AND repetition > 0", (run_id,))
            results = Results("", {}, rows.fetchall(), "")
            for (workload, label, metric), values in results.samples().items():
                if direction(metric) == 0:
                    continue
                when = datetime.datetime.strptime(time, "%Y-%m-%dT%H:%M:%SZ")
                plot = series.setdefault((f"{host}_{fingerprint[:8]}", workload, metric_family(metric)), {})
                plot.setdefault(metric, {}).setdefault(label, []).append(
                    (when, statistics.median(values), min(values), max(values)))
    except (sqlite3.Error, ValueError) as error:
        raise InputError(f"{args.db}: cannot read the history ({error})")
    if not series:
        print(f"{args.db}: no tracked metrics stored yet: nothing to plot")
        return 0

    import debian_python
    debian_python.require("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = pathlib.Path(args.output)
    written = []
    for (host, workload, family), metrics in sorted(series.items()):
        names = sorted(metrics, key=metric_order)
        figure, axes = plt.subplots(len(names), 1, figsize=(9, 2.6 * len(names) + 0.8), sharex=True, squeeze=False)
        for axis, metric in zip(axes[:, 0], names):
            for label, points in sorted(metrics[metric].items()):
                points.sort()
                times = [p[0] for p in points]
                line, = axis.plot(times, [p[1] for p in points], marker="o", markersize=3, label=label or workload)
                axis.fill_between(times, [p[2] for p in points], [p[3] for p in points],
                                  color=line.get_color(), alpha=0.2, linewidth=0)
            values = [p[2] for points in metrics[metric].values() for p in points]
            values += [p[3] for points in metrics[metric].values() for p in points]
            if min(values) > 0 and max(values) / min(values) > 20:
                axis.set_yscale("log")  # allocators an order of magnitude apart stay readable
            axis.set_ylabel(metric, fontsize=8)
            axis.grid(True, alpha=0.3)
        axes[0, 0].legend(fontsize=7, loc="best")
        axes[0, 0].set_title(f"{workload}: {family} on {host} (median per run, min-max band)", fontsize=9)
        figure.autofmt_xdate()
        figure.tight_layout()
        directory = out / host
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{re.sub(r'[^A-Za-z0-9_.=,-]+', '_', workload)}.{family}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    for path in written:
        print(path)
    print(f"{len(written)} plots in {out}")
    return 0


# ---------------------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(prog="nightly.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def gate_options(sub):
        sub.add_argument("--threshold", type=float, default=0.05,
                         help="relative median change that counts (default 0.05: 5%%)")
        sub.add_argument("--alpha", type=float, default=0.05, help="significance level of the U test (default 0.05)")
        sub.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                         help="do not gate metrics matching this fnmatch pattern (latency_ns.*.p999); repeatable; "
                              f"added to the default {', '.join(DEFAULT_EXCLUDE)}")
        sub.add_argument("--gate-all", action="store_true",
                         help=f"gate the default exclusions too ({', '.join(DEFAULT_EXCLUDE)})")
        sub.add_argument("--latency-floor-ns", type=float, default=DEFAULT_LATENCY_FLOOR_NS,
                         help=f"latency medians closer than this are the same (default {DEFAULT_LATENCY_FLOOR_NS:g} ns)")

    run = commands.add_parser("run", help="run a suite, store it, compare with the baseline")
    run.add_argument("--suite", choices=sorted(SUITES), default="standard")
    run.add_argument("--db", default=str(DEFAULT_DB), help=f"history database (default {DEFAULT_DB})")
    run.add_argument("--baseline", help="compare with this named baseline instead of the previous run")
    run.add_argument("--tiermark", help=f"tiermark binary (default $TIERMARK_BIN or {DEFAULT_TIERMARK})")
    run.add_argument("--results-dir", default=str(ROOT / "results"),
                     help="where the run's fresh results folder is made (default results/)")
    gate_options(run)

    compare = commands.add_parser("compare", help="compare two results files")
    compare.add_argument("base")
    compare.add_argument("new")
    gate_options(compare)

    ingest = commands.add_parser("ingest", help="store results files in the history")
    ingest.add_argument("results", nargs="+")
    ingest.add_argument("--db", default=str(DEFAULT_DB))

    baseline = commands.add_parser("baseline", help="name a stored run as a baseline (no NAME: list them)")
    baseline.add_argument("name", nargs="?")
    baseline.add_argument("--run", type=int, help="the run id (default: the latest run)")
    baseline.add_argument("--db", default=str(DEFAULT_DB))

    trend = commands.add_parser("trend", help="plot tracked metrics over time per host")
    trend.add_argument("--db", default=str(DEFAULT_DB))
    trend.add_argument("-o", "--output", default=str(ROOT / "results" / "trend"), help="output folder")

    args = parser.parse_args(argv)
    for name in ("threshold", "alpha", "latency_floor_ns"):
        if getattr(args, name, 0) is not None and getattr(args, name, 0) < 0:
            fail(f"--{name} must not be negative")
    handler = {"run": command_run, "compare": command_compare, "ingest": command_ingest,
               "baseline": command_baseline, "trend": command_trend}[args.command]
    try:
        return handler(args)
    except InputError as error:
        fail(str(error))


if __name__ == "__main__":
    sys.exit(main())
