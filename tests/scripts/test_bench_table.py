"""Tests of scripts/bench_table.py: on JSON made by hand (exact medians and labels), on a real
bench_allocators run, and on bad input."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

SOURCE = pathlib.Path(os.environ.get("TIERMARK_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))
BUILD = pathlib.Path(os.environ.get("TIERMARK_BUILD_DIR", SOURCE / "build" / "release"))
SCRIPT = SOURCE / "scripts" / "bench_table.py"


def run_table(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def bench_file(path, malloc, rows):
    document = {
        "context": {"tiermark_malloc": malloc},
        "benchmarks": [
            {"name": name, "run_type": "iteration", "real_time": ns, "time_unit": "ns", "items_per_second": 1e9 / ns}
            for name, ns in rows
        ],
    }
    path.write_text(json.dumps(document))


def test_medians_labels_and_ratios(tmp_path):
    bench_file(tmp_path / "a.glibc.1.json", "glibc", [("pair/system/64", 10.0), ("pair/pool.fixed/64", 2.0)])
    bench_file(tmp_path / "a.glibc.2.json", "glibc", [("pair/system/64", 30.0), ("pair/pool.fixed/64", 4.0)])
    bench_file(tmp_path / "a.glibc.3.json", "glibc", [("pair/system/64", 20.0), ("pair/pool.fixed/64", 3.0)])
    bench_file(tmp_path / "a.tcmalloc.1.json", "tcmalloc", [("pair/system/64", 6.0)])
    out_json = tmp_path / "summary.json"
    result = run_table(tmp_path, "--json", out_json)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    glibc = next(line for line in lines if line.startswith("system[glibc]"))
    assert "20.0 (50%)" in glibc  # median of 10, 20, 30; stdev 10 / mean 20
    fixed_rows = [line for line in lines if line.startswith("pool.fixed")]
    assert "3.0 (33%)" in fixed_rows[0]
    assert fixed_rows[1].split()[-1] == "0.50"  # 3.0 / tcmalloc's 6.0
    summary = json.loads(out_json.read_text())
    assert summary["schema"] == "tiermark-bench-table/1"
    rows = {(row["allocator"], row["benchmark"]): row for row in summary["rows"]}
    assert rows[("system[tcmalloc]", "pair/64")]["samples"] == [6.0]


def test_real_bench_allocators_output(tmp_path):
    binary = BUILD / "bench_allocators"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: build the release preset first")
    out = tmp_path / "run.json"
    subprocess.run(
        [str(binary), "--benchmark_filter=^pair/(system|pool.fixed|buddy)/(64|4096)$", "--benchmark_min_time=0.001",
         f"--benchmark_out={out}", "--benchmark_out_format=json"],
        check=True, capture_output=True)
    result = run_table(out)
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if line.startswith("allocator"))
    assert header.split()[1:] == ["pair/64", "pair/4096"]
    labels = [line.split()[0] for line in result.stdout.splitlines()[2:] if line.strip()]
    assert {"system[glibc]", "pool.fixed", "buddy"} <= set(labels)


@pytest.mark.parametrize("content", ["not json", json.dumps({"schema": "tiermark/1"})])
def test_bad_input_is_one_line_and_exit_2(tmp_path, content):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    result = run_table(bad)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert str(bad) in result.stderr


def test_missing_path_is_reported(tmp_path):
    result = run_table(tmp_path / "nowhere")
    assert result.returncode == 2
    assert "no such file or directory" in result.stderr
