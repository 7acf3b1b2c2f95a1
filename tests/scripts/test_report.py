"""Tests of scripts/report.py on small real results (fixtures/, plot_fixtures.py): one self-contained
HTML file with the context, the summary tables, every plot embedded, the memory analysis, nothing
fetched from the network, text escaped, bad input as one line; and that it renders in a real
browser (headless Chromium, skipped with a note when /usr/bin/chromium is absent)."""

import html
import json
import os
import re
import subprocess
import sys

import pytest

from plot_fixtures import RUN_CNN, RUN_LLM, SCRIPTS, copy_run

sys.path.insert(0, str(SCRIPTS))
pytest.importorskip("matplotlib")

import plot  # noqa: E402
import tiermark_results as tr  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def run_report(*args):
    return subprocess.run([sys.executable, str(SCRIPTS / "report.py"), *map(str, args)], capture_output=True,
                          text=True)


@pytest.fixture(scope="module")
def cnn_report(tmp_path_factory):
    """The report of the cnn run with no plots.json yet: the plots are drawn in memory."""
    directory = copy_run(RUN_CNN, tmp_path_factory.mktemp("report") / "run")
    result = run_report(directory, "-o", directory / "report.html")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"report: {directory / 'report.html'}"
    assert not (directory / "plots.json").exists(), "the report must not write plots next to the results"
    return directory, (directory / "report.html").read_text()


def test_sections_and_tables(cnn_report):
    _, text = cnn_report
    for heading in ("Context", "Summary", "Plots", "Memory analysis", "Minimum capacity", "Memory tiers"):
        assert f">{heading}</h2>" in text, heading
    assert html.escape("cnn/resnet50:batch=2,steps=1") in text
    for allocator in ("caching.pytorch", "caching.bfc", "buddy", "planner", "system.glibc", "system.jemalloc"):
        assert f"</span>{allocator}</td>" in text, allocator
    for header in ("ops/s (cv)", "alloc p50/p99 ns", "peak reserved", "efficiency", "x planner", "max ext. frag.",
                   "OOMs", "peak RSS", "internal frag. at peak", "unreturnable at peak"):
        assert f">{header}</th>" in text, header
    assert "layer4.0.conv2.weight" in text  # a top consumer at the peak
    assert "AMD EPYC" in text or "cpu" in text.lower()


def test_summary_sorted_by_efficiency(cnn_report):
    _, text = cnn_report
    summary = text[text.index('id="summary"'):text.index('id="plots"')]
    table = summary[summary.index("<tbody>"):summary.index("</tbody>")]
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    efficiencies = []
    for row in rows:
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        efficiencies.append(cells[5])
    numbers = [float(e) for e in efficiencies if e != "-"]
    assert numbers == sorted(numbers, reverse=True) and numbers
    assert all(e == "-" for e in efficiencies[len(numbers):]), "rows without efficiency come last"


def test_every_plot_embedded_and_no_network(cnn_report):
    _, text = cnn_report
    plots, _ = plot.make_plots(tr.load(RUN_CNN))
    images = re.findall(r'<img [^>]*src="([^"]*)"', text)
    assert len(images) == len(plots)
    assert all(src.startswith("data:image/png;base64,") for src in images)
    for p in plots:
        assert html.escape(p.title) in text
    assert "http://" not in text and "https://" not in text
    assert not re.search(r'(src|href)="(?!data:|#)', text), "only embedded data and in-page links"


def test_report_uses_existing_plots(tmp_path):
    directory = copy_run(RUN_LLM, tmp_path / "run")
    assert subprocess.run([sys.executable, str(SCRIPTS / "plot.py"), str(directory), "--format", "png"],
                          capture_output=True).returncode == 0
    index = json.loads((directory / "plots.json").read_text())
    result = run_report(directory)  # default output: report.html in the directory
    assert result.returncode == 0, result.stderr
    text = (directory / "report.html").read_text()
    assert len(re.findall(r"<img ", text)) == len(index["plots"])
    assert "KV policy paged" in text and "KV policy exact" in text
    assert "KV util. of reserved" in text
    assert "http://" not in text and "https://" not in text


def test_text_is_escaped(tmp_path):
    directory = copy_run(RUN_LLM, tmp_path / "run")
    document = json.loads((directory / "results.json").read_text())
    hostile = '<script>alert("x")</script>&'
    old = document["workloads"][0]["name"]
    document["workloads"][0]["name"] = hostile
    for run in document["runs"]:
        if run["workload"] == old:
            run["workload"] = hostile
            run["note"] = "<b>bold</b>"
    document["workloads"][0]["top_consumers"][0]["tag"] = "<img src=x>"
    (directory / "results.json").write_text(json.dumps(document))
    result = run_report(directory, "-o", tmp_path / "r.html")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "r.html").read_text()
    assert "<script>" not in text and "<b>bold</b>" not in text and "<img src=x>" not in text
    assert html.escape(hostile) in text and "&lt;b&gt;bold&lt;/b&gt;" in text


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text(json.dumps({"schema": "tiermark/0"}))
    for path, message in ((tmp_path / "missing", "no such file or directory"), (tmp_path / "empty", "no results.json"),
                          (other, "not a tiermark results file")):
        result = run_report(path, "-o", tmp_path / "r.html")
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and lines[0].startswith("report.py: "), result.stderr
    assert not (tmp_path / "r.html").exists()


def test_renders_in_headless_chromium(cnn_report, tmp_path):
    """Headless Chromium from Debian (tools/install-deps.sh installs it; skipped with a note where it is absent)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is absent: apt-get install chromium to run the browser test")
    directory, _ = cnn_report
    screenshot = tmp_path / "report.png"
    result = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                             f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={screenshot}",
                             "--window-size=1280,2000", (directory / "report.html").as_uri()],
                            capture_output=True, text=True, timeout=180)
    assert screenshot.is_file() and screenshot.stat().st_size > 0, result.stderr
    from matplotlib import image

    pixels = image.imread(str(screenshot))
    assert pixels.shape[0] == 2000 and pixels.shape[1] == 1280
    flat = pixels.reshape(-1, pixels.shape[-1])
    assert (flat != flat[0]).any(), "the screenshot is all one colour"
    # Not only a blank page with a little text: a good share of the pixels differ from the background.
    assert (flat != flat[0]).any(axis=1).mean() > 0.02


def test_microbenchmark_table_from_bench_files(tmp_path):
    directory = copy_run(RUN_LLM, tmp_path / "run")
    rows = [{"name": "pair/system/64", "run_type": "iteration", "real_time": 12.5, "time_unit": "ns"},
            {"name": "pair/buddy/64", "run_type": "iteration", "real_time": 30.0, "time_unit": "ns"}]
    (directory / "bench_allocators.glibc.1.json").write_text(
        json.dumps({"context": {"tiermark_malloc": "glibc"}, "benchmarks": rows}))
    result = run_report(directory, "-o", tmp_path / "r.html")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "r.html").read_text()
    assert ">Microbenchmarks</h2>" in text and "system[glibc]" in text and "12.5 (0%)" in text
