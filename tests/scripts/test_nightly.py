"""Tests of scripts/nightly.py: the Mann-Whitney U test against known values (and scipy when it is
installed); the regression gate on a real tiermark results file and a real bench_allocators file
(fixtures/nightly/, made by the real tools) and on variants derived from them here; the SQLite
history under two concurrent writers; bad input; and `run --suite quick` when tiermark is built.

Timing is never asserted: the injected changes are exact multiples of the fixtures' own values."""

import copy
import itertools
import json
import os
import pathlib
import random
import sqlite3
import subprocess
import sys

import pytest

SOURCE = pathlib.Path(os.environ.get("TIERMARK_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))
BUILD = pathlib.Path(os.environ.get("TIERMARK_BUILD_DIR", SOURCE / "build" / "release"))
SCRIPT = SOURCE / "scripts" / "nightly.py"
FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "nightly"
# `tiermark replay --workload cnn/resnet50:batch=8,steps=1 --allocator caching.pytorch,buddy,caching.vmm
#  --repetitions 5 --latency --sample-every 100000` (the planner row comes with it).
RESULTS = FIXTURES / "resnet50.results.json"
# `bench_allocators --benchmark_filter='pair/(buddy|caching.pytorch)/4096' --benchmark_repetitions=5
#  --benchmark_min_time=0.02 --benchmark_out_format=json`.
GBENCH = FIXTURES / "bench_allocators.json"

sys.path.insert(0, str(SOURCE / "scripts"))
import nightly  # noqa: E402


def run_nightly(*args, **kwargs):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          **kwargs)


def load(path):
    return json.loads(pathlib.Path(path).read_text())


def write(path, document):
    path.write_text(json.dumps(document))
    return path


def regressed_rows(stdout):
    """(allocator, metric) of each row of the regression table."""
    lines = stdout.splitlines()
    if not lines or not lines[0].startswith("regressions"):
        return set()
    rows = set()
    for line in lines[3:]:
        if line.endswith("regressed") or "metrics compared" in line:
            break
        fields = line.split()
        rows.add((fields[1], fields[2]))
    return rows


def set_dotted(mapping, dotted, value):
    *parents, leaf = dotted.split(".")
    for key in parents:
        mapping = mapping[key]
    mapping[leaf] = value


def get_dotted(mapping, dotted):
    for key in dotted.split("."):
        mapping = mapping[key]
    return mapping


# ---------------------------------------------------------------------------------------------
# Mann-Whitney U

def brute_force_p(x, y):
    """Two-sided permutation p of the rank sum, by enumerating every split: the definition."""
    pooled = list(x) + list(y)
    ranks, _ = nightly._midranks(pooled)
    n1 = len(x)
    centre = n1 * (len(pooled) + 1) / 2
    observed = abs(sum(ranks[:n1]) - centre)
    splits = list(itertools.combinations(range(len(pooled)), n1))
    extreme = sum(abs(sum(ranks[i] for i in split) - centre) >= observed - 1e-9 for split in splits)
    return extreme / len(splits)


@pytest.mark.parametrize("x, y, u, p", [
    ([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], 0, 2 / 252),     # complete separation, 5 vs 5
    ([6, 7, 8, 9, 10], [1, 2, 3, 4, 5], 25, 2 / 252),
    ([1, 2, 3, 4], [5, 6, 7, 8], 0, 2 / 70),             # 4 vs 4: the smallest p is 0.029
    ([1, 2, 3, 5], [4, 6, 7, 8], 1, 4 / 70),              # one swap: P(U <= 1) = 2/70, doubled
    ([1, 2, 3], [4, 5, 6], 0, 0.1),                      # 3 vs 3 can never reach p < 0.05
    ([7, 7, 7, 7, 7], [7, 7, 7, 7, 7], 12.5, 1.0),        # a deterministic metric, unchanged
    ([100] * 5, [110] * 5, 0, 2 / 252),                  # ... changed in every repetition: ties
    ([1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0], 12.5, 1.0),
])
def test_mann_whitney_known_values(x, y, u, p):
    statistic, p_value = nightly.mann_whitney_u(x, y)
    assert statistic == u
    assert p_value == pytest.approx(p, rel=1e-12)


def test_mann_whitney_exact_with_ties_matches_enumeration():
    generator = random.Random(7)
    for _ in range(40):
        x = [generator.choice([1, 2, 2, 3, 5, 8]) for _ in range(generator.randint(1, 6))]
        y = [generator.choice([1, 2, 3, 3, 5, 9]) for _ in range(generator.randint(1, 6))]
        if len(set(x + y)) == 1:
            continue
        assert nightly.mann_whitney_u(x, y, "exact")[1] == pytest.approx(brute_force_p(x, y), rel=1e-12)


def test_mann_whitney_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    generator = random.Random(11)
    for _ in range(30):
        n1, n2 = generator.randint(2, 9), generator.randint(2, 9)
        x = [generator.gauss(0, 1) for _ in range(n1)]
        y = [generator.gauss(0.8, 1) for _ in range(n2)]
        expected = stats.mannwhitneyu(x, y, alternative="two-sided", method="exact")
        assert nightly.mann_whitney_u(x, y, "exact") == pytest.approx((expected.statistic, expected.pvalue))
    for _ in range(30):  # the normal approximation, with ties, on larger samples
        n1, n2 = generator.randint(20, 60), generator.randint(20, 60)
        x = [generator.randint(0, 12) for _ in range(n1)]
        y = [generator.randint(2, 14) for _ in range(n2)]
        expected = stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic")
        assert nightly.mann_whitney_u(x, y, "asymptotic") == pytest.approx((expected.statistic, expected.pvalue))
        assert nightly.mann_whitney_u(x, y)[1] == pytest.approx(expected.pvalue, rel=1e-9)


def test_directions():
    assert nightly.direction("ops_per_second") == 1
    assert nightly.direction("items_per_second") == 1
    assert nightly.direction("efficiency") == 1
    assert nightly.direction("latency_ns.alloc.p99") == -1
    assert nightly.direction("real_time") == -1
    assert nightly.direction("peak_reserved_bytes") == -1
    assert nightly.direction("peak_rss_bytes") == -1
    assert nightly.direction("latency_ns.free.count") == 0
    assert nightly.direction("peak_requested_bytes") == 0
    assert nightly.direction("upstream_allocs") == 0


# ---------------------------------------------------------------------------------------------
# The gate on tiermark results

def test_fixtures_are_real_and_small():
    document = load(RESULTS)
    assert document["schema"] == "tiermark/1"
    assert document["context"]["command"][:2] == ["tiermark", "replay"]
    assert all(len(run["repetitions"]) == 5 for run in document["runs"])
    assert RESULTS.stat().st_size < 100_000 and GBENCH.stat().st_size < 100_000


def test_gate_passes_a_run_against_itself():
    result = run_nightly("compare", RESULTS, RESULTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 improved, 0 regressed" in result.stdout
    assert "regressions" not in result.stdout


def test_gate_passes_noise_within_the_coefficient_of_variation(tmp_path):
    document = load(RESULTS)
    generator = random.Random(2026)
    noisy = 0
    for run in document["runs"]:
        for metric, statistic in run["statistics"].items():
            cv = statistic["cv"]
            if cv <= 0:
                continue
            for repetition in run["repetitions"]:
                value = get_dotted(repetition, metric)
                set_dotted(repetition, metric, value * generator.uniform(1 - cv, 1 + cv))
                noisy += 1
    assert noisy > 0
    result = run_nightly("compare", RESULTS, write(tmp_path / "noisy.json", document))
    assert result.returncode == 0, result.stdout + result.stderr


def test_gate_fails_a_20_percent_throughput_drop(tmp_path):
    document = load(RESULTS)
    for run in document["runs"]:
        for repetition in run["repetitions"]:
            repetition["ops_per_second"] *= 0.8
    result = run_nightly("compare", RESULTS, write(tmp_path / "slow.json", document))
    assert result.returncode == 1, result.stdout + result.stderr
    rows = regressed_rows(result.stdout)
    assert {metric for _, metric in rows} == {"ops_per_second"}
    # caching.vmm's 5 repetitions hold one slow outlier, so a 20% drop does not separate its samples
    # (p = 0.095): the rows whose spread is below the drop must be flagged.
    assert {("caching.pytorch", "ops_per_second"), ("buddy", "ops_per_second")} <= rows
    assert "-20.0%" in result.stdout
    excluded = run_nightly("compare", RESULTS, tmp_path / "slow.json", "--exclude", "ops_*", "--exclude", "x")
    assert excluded.returncode == 0, excluded.stdout


def test_gate_fails_a_10_percent_growth_in_peak_reserved_bytes(tmp_path):
    document = load(RESULTS)
    for run in document["runs"]:
        for repetition in run["repetitions"]:
            repetition["peak_reserved_bytes"] = round(repetition["peak_reserved_bytes"] * 1.10)
    result = run_nightly("compare", RESULTS, write(tmp_path / "fat.json", document))
    assert result.returncode == 1, result.stdout + result.stderr
    # Deterministic: equal in every repetition on each side, so p is the smallest 5 vs 5 allows.
    allocators = {run["allocator"] for run in document["runs"]}
    assert regressed_rows(result.stdout) == {(a, "peak_reserved_bytes") for a in allocators}
    assert "0.0079" in result.stdout and "+10.0%" in result.stdout


def test_small_changes_and_improvements_do_not_fail(tmp_path):
    document = load(RESULTS)
    for run in document["runs"]:
        for repetition in run["repetitions"]:
            repetition["peak_reserved_bytes"] = round(repetition["peak_reserved_bytes"] * 1.03)  # < 5%
            repetition["ops_per_second"] *= 1.5
    result = run_nightly("compare", RESULTS, write(tmp_path / "better.json", document))
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 regressed" in result.stdout and "0 improved" not in result.stdout
    assert run_nightly("compare", RESULTS, tmp_path / "better.json", "--threshold", "0.02").returncode == 1


# ---------------------------------------------------------------------------------------------
# The gate on Google Benchmark JSON

def test_gbench_passes_against_itself_and_flags_a_slowdown(tmp_path):
    result = run_nightly("compare", GBENCH, GBENCH)
    assert result.returncode == 0, result.stdout + result.stderr
    document = load(GBENCH)
    iterations = [row for row in document["benchmarks"] if row["run_type"] == "iteration"]
    assert len(iterations) == 10 and all("repetition_index" in row for row in iterations)
    slow = copy.deepcopy(document)
    for row in slow["benchmarks"]:
        row["real_time"] *= 1.5  # aggregates too: they must be ignored, not trusted
    result = run_nightly("compare", GBENCH, write(tmp_path / "slow.json", slow))
    assert result.returncode == 1, result.stdout + result.stderr
    rows = regressed_rows(result.stdout)
    assert {metric for _, metric in rows} == {"real_time"}
    assert "pair/buddy/4096" in result.stdout and "pair/caching.pytorch/4096" in result.stdout


def test_gbench_minimal_compare_py_format(tmp_path):
    """Only what Google Benchmark's tools/compare.py needs: name, run_type, times, time_unit."""
    def document(scale):
        return {"context": {}, "benchmarks": [
            {"name": "BM_x", "run_type": "iteration", "real_time": t * scale, "cpu_time": t * scale,
             "time_unit": "us", "iterations": 10} for t in (10, 11, 10.5, 10.2, 10.8)]
            + [{"name": "BM_x_mean", "run_type": "aggregate", "aggregate_name": "mean", "real_time": 1e9,
                "cpu_time": 1e9, "time_unit": "us", "iterations": 5}]}
    base = write(tmp_path / "base.json", document(1.0))
    assert run_nightly("compare", base, base).returncode == 0
    result = run_nightly("compare", base, write(tmp_path / "new.json", document(1.3)))
    assert result.returncode == 1
    assert regressed_rows(result.stdout) == {("-", "real_time"), ("-", "cpu_time")}


# ---------------------------------------------------------------------------------------------
# Bad input

def assert_one_line_failure(result, *needles):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nightly: ")
    for needle in needles:
        assert needle in lines[0]


def test_bad_input_gives_one_line_and_exit_2(tmp_path):
    missing = tmp_path / "missing.json"
    assert_one_line_failure(run_nightly("compare", missing, RESULTS), str(missing), "no such file")
    other = write(tmp_path / "other.json", {"schema": "tiermark-capacity/9", "runs": []})
    assert_one_line_failure(run_nightly("compare", RESULTS, other), "schema", "tiermark/1")
    unrelated = write(tmp_path / "unrelated.json", {"hello": "world"})
    assert_one_line_failure(run_nightly("compare", unrelated, RESULTS), "not a tiermark results file")
    text = tmp_path / "text.json"
    text.write_text("not json at all")
    assert_one_line_failure(run_nightly("compare", text, RESULTS), "not JSON")
    assert_one_line_failure(run_nightly("compare", RESULTS, GBENCH), "cannot compare")
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    assert_one_line_failure(run_nightly("ingest", RESULTS, "--db", garbage), str(garbage))
    assert_one_line_failure(run_nightly("trend", "--db", garbage, "-o", tmp_path / "t"), str(garbage))
    assert_one_line_failure(run_nightly("trend", "--db", tmp_path / "none.sqlite"), "no such history")
    db = tmp_path / "h.sqlite"
    assert run_nightly("ingest", RESULTS, "--db", db).returncode == 0
    assert_one_line_failure(run_nightly("baseline", "x", "--run", "99", "--db", db), "no run 99")
    assert_one_line_failure(run_nightly("run", "--suite", "quick", "--db", db, "--tiermark",
                                        tmp_path / "no-tiermark"), "no tiermark binary")
    assert_one_line_failure(run_nightly("run", "--suite", "quick", "--db", db, "--baseline", "nope",
                                        "--tiermark", sys.executable), "no baseline named 'nope'")


# ---------------------------------------------------------------------------------------------
# History

def test_ingest_stores_every_repetition_with_its_context(tmp_path):
    db = tmp_path / "h.sqlite"
    result = run_nightly("ingest", RESULTS, GBENCH, "--db", db)
    assert result.returncode == 0, result.stderr
    connection = sqlite3.connect(db)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    runs = connection.execute("SELECT id, host, git_commit, source, host_fingerprint, context_json FROM runs"
                              " ORDER BY id").fetchall()
    assert [r[3] for r in runs] == ["file:tiermark", "file:gbench"]
    document = load(RESULTS)
    assert json.loads(runs[0][5]) == document["context"]
    assert runs[0][1] == document["context"]["host"] and runs[0][2] == document["context"]["git_commit"]
    buddy = next(run for run in document["runs"] if run["allocator"] == "buddy")
    for index, repetition in enumerate(buddy["repetitions"], 1):
        for metric in ("ops_per_second", "peak_reserved_bytes", "latency_ns.alloc.p99"):
            (value,), = connection.execute(
                "SELECT value FROM measurements WHERE run_id = 1 AND allocator = 'buddy' AND metric = ?"
                " AND repetition = ?", (metric, index)).fetchall()
            assert value == get_dotted(repetition, metric)
    # the memory pass's metrics, measured once, are kept as repetition 0
    (value,), = connection.execute("SELECT value FROM measurements WHERE run_id = 1 AND allocator = 'buddy'"
                                   " AND metric = 'reserved_bytes_at_peak'").fetchall()
    assert value == buddy["metrics"]["reserved_bytes_at_peak"]
    (count,), = connection.execute("SELECT count(*) FROM measurements WHERE run_id = 2").fetchone(),
    assert count == len(nightly.load_results(GBENCH).rows)

    assert run_nightly("baseline", "golden", "--run", "1", "--db", db).returncode == 0
    listing = run_nightly("baseline", "--db", db)
    assert listing.returncode == 0 and listing.stdout.startswith("golden: run 1")


def test_history_survives_concurrent_writers(tmp_path):
    db = tmp_path / "history.sqlite"
    copies = 6
    # Two processes create the database and write into it at the same time, each run in its own
    # transaction; BEGIN IMMEDIATE and busy_timeout make the second wait rather than fail.
    writers = [subprocess.Popen([sys.executable, str(SCRIPT), "ingest", *[str(RESULTS)] * copies, "--db", str(db)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [writer.communicate(timeout=300) for writer in writers]
    for writer, (out, err) in zip(writers, outputs):
        assert writer.returncode == 0, err
        assert out.count("stored ") == copies
    connection = sqlite3.connect(db)
    rows_per_run = len(nightly.load_results(RESULTS).rows)
    assert connection.execute("SELECT count(*) FROM runs").fetchone()[0] == 2 * copies
    assert connection.execute("SELECT count(*) FROM measurements").fetchone()[0] == 2 * copies * rows_per_run
    per_run = connection.execute("SELECT count(*) FROM measurements GROUP BY run_id").fetchall()
    assert per_run == [(rows_per_run,)] * (2 * copies)


def test_trend_writes_one_png_per_workload_and_family(tmp_path):
    pytest.importorskip("matplotlib")
    db = tmp_path / "h.sqlite"
    slow = load(RESULTS)
    slow["context"]["date"] = "2026-11-24T03:00:00Z"
    for run in slow["runs"]:
        for repetition in run["repetitions"]:
            repetition["ops_per_second"] *= 0.9
    assert run_nightly("ingest", RESULTS, write(tmp_path / "next.json", slow), GBENCH, "--db", db).returncode == 0
    result = run_nightly("trend", "--db", db, "-o", tmp_path / "trend")
    assert result.returncode == 0, result.stderr
    pngs = sorted((tmp_path / "trend").rglob("*.png"))
    assert [str(p) for p in pngs] == sorted(line for line in result.stdout.splitlines() if line.endswith(".png"))
    names = {p.name for p in pngs}
    for family in ("throughput", "time", "memory", "efficiency", "latency_alloc", "latency_free"):
        assert f"cnn_resnet50_batch=8,steps=1.{family}.png" in names
    assert "pair_buddy_4096.time.png" in names
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


# ---------------------------------------------------------------------------------------------
# run

def test_run_quick_twice_compares_with_the_first(tmp_path):
    binary = BUILD / "tiermark"
    if not binary.exists():
        pytest.skip(f"{binary} is not built")
    db = tmp_path / "h.sqlite"
    # A huge threshold: this checks the plumbing; timing is not asserted by tests (docs/nightly.md).
    common = ["run", "--suite", "quick", "--db", db, "--tiermark", binary, "--results-dir", tmp_path / "results",
              "--threshold", "100"]
    first = run_nightly(*common)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "nothing to compare with yet" in first.stdout
    second = run_nightly(*common)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "baseline: run 1 (suite:quick" in second.stdout
    assert " 0 regressed" in second.stdout
    folders = sorted((tmp_path / "results").iterdir())
    assert len(folders) == 2 and all((f / "results.json").is_file() for f in folders)
    connection = sqlite3.connect(db)
    fingerprints = {row[0] for row in connection.execute("SELECT host_fingerprint FROM runs")}
    assert len(fingerprints) == 1
    workloads = {row[0] for row in connection.execute("SELECT DISTINCT workload FROM measurements")}
    assert workloads == set(nightly.SUITES["quick"]["workloads"])


def _scaled_latency(document, path, factor, add_ns=0.0):
    """Every repetition's `path` latency (e.g. alloc.max) times `factor` plus `add_ns`."""
    for run in document["runs"]:
        for repetition in run["repetitions"]:
            latency = repetition.get("latency_ns")
            if latency:
                side, leaf = path.split(".")
                latency[side][leaf] = latency[side][leaf] * factor + add_ns
    return document


def test_max_latency_is_gated_only_when_asked(tmp_path):
    """A run's max is one operation (a preemption on a shared machine): out of the default gate."""
    slow_max = write(tmp_path / "max.json", _scaled_latency(load(RESULTS), "alloc.max", 3.0, 1000.0))
    default = run_nightly("compare", RESULTS, slow_max)
    assert default.returncode == 0, default.stdout + default.stderr
    gated = run_nightly("compare", RESULTS, slow_max, "--gate-all")
    assert gated.returncode == 1, gated.stdout + gated.stderr
    assert {metric for _, metric in regressed_rows(gated.stdout)} == {"latency_ns.alloc.max"}


def test_latency_steps_of_the_clock_are_not_regressions(tmp_path):
    """+20 ns on every p50 (10 -> 30 ns is +200%) stays within the clock-step floor; +40 ns does not."""
    base = load(RESULTS)
    medians = [r["latency_ns"]["alloc"]["p50"] for run in base["runs"] for r in run["repetitions"] if r.get("latency_ns")]
    assert medians, "the fixture has latencies"
    within = write(tmp_path / "within.json", _scaled_latency(load(RESULTS), "alloc.p50", 1.0, 20.0))
    result = run_nightly("compare", RESULTS, within)
    assert result.returncode == 0, result.stdout + result.stderr
    beyond = write(tmp_path / "beyond.json", _scaled_latency(load(RESULTS), "alloc.p50", 1.0, 40.0 + max(medians)))
    result = run_nightly("compare", RESULTS, beyond)
    assert result.returncode == 1, result.stdout + result.stderr
    assert {metric for _, metric in regressed_rows(result.stdout)} == {"latency_ns.alloc.p50"}
    # Without the floor the same +20 ns is a regression where the repetitions are tight (buddy: 20 ns
    # in all five, so 20 -> 40 ns separates the samples).
    floor_off = run_nightly("compare", RESULTS, within, "--latency-floor-ns", "0")
    assert floor_off.returncode == 1, floor_off.stdout + floor_off.stderr
    assert ("buddy", "latency_ns.alloc.p50") in regressed_rows(floor_off.stdout)
