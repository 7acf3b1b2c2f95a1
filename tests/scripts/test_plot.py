"""Tests of scripts/plot.py on small real results (fixtures/, plot_fixtures.py says how they were
made): every plot is drawn with its title and axis labels, files are named predictably and listed
in plots.json, each allocator keeps its colour across plots, bad input is one line and exit 2, and
the script runs under whichever python3 is on PATH (re-executing under Debian's)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from plot_fixtures import DEBIAN_PYTHON, RUN_CNN, RUN_LLM, SCRIPTS, copy_run, debian_has

sys.path.insert(0, str(SCRIPTS))
matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
from matplotlib.colors import to_hex  # noqa: E402

import plot  # noqa: E402
import tiermark_results as tr  # noqa: E402

CNN = "cnn/resnet50:batch=2,steps=1"
CNN_SLUG = "cnn-resnet50-batch-2-steps-1"
LLM_PAGED = "llm-serve/llama2-7b:requests=4,dataset=fixed,prompt_len=32,output_len=4,kv=paged"


@pytest.fixture(scope="module")
def cnn_plots():
    return plot.make_plots(tr.load(RUN_CNN))


@pytest.fixture(scope="module")
def llm_plots():
    return plot.make_plots(tr.load(RUN_LLM))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Both fixture runs plotted into copies of themselves by the command line, as tools/suite.sh does."""
    base = tmp_path_factory.mktemp("plots")
    runs = {}
    for name, source in (("cnn", RUN_CNN), ("llm", RUN_LLM)):
        directory = copy_run(source, base / name)
        result = subprocess.run([sys.executable, str(SCRIPTS / "plot.py"), str(directory)], capture_output=True,
                                text=True)
        assert result.returncode == 0, result.stderr
        runs[name] = (directory, result)
    return runs


def by_name(plots):
    return {p.name: p for p in plots[0]}


def test_every_plot_of_the_cnn_run(cnn_plots):
    names = set(by_name(cnn_plots))
    assert names == {"throughput", "efficiency", f"latency_{CNN_SLUG}", f"latency_cdf_{CNN_SLUG}",
                     f"fragmentation_{CNN_SLUG}", f"capacity_{CNN_SLUG}", "tiers_bandwidth", "tiers_latency"}
    skipped = dict(cnn_plots[1])
    assert "locality" in skipped and "not measured" in skipped["locality"]
    assert "kv_utilisation" in skipped


def test_every_plot_of_the_llm_run(llm_plots):
    names = set(by_name(llm_plots))
    slugs = tr.load(RUN_LLM).slugs()
    for workload, slug in slugs.items():
        assert {f"latency_{slug}", f"latency_cdf_{slug}", f"fragmentation_{slug}"} <= names, workload
    assert {"throughput", "efficiency", "kv_utilisation"} <= names
    assert slugs[LLM_PAGED] == "llm-serve-llama2-7b-requests-4-dataset-fixed-prompt_len-32-output_len-4-kv-paged"


@pytest.mark.parametrize("run", ["cnn_plots", "llm_plots"])
def test_titles_and_axis_labels(run, request):
    for p in request.getfixturevalue(run)[0]:
        figure = p.figure
        suptitle = figure._suptitle.get_text() if figure._suptitle else ""
        axes = [a for a in figure.axes if a.get_visible()]
        assert axes, p.name
        for a in axes:
            assert suptitle or a.get_title(), f"{p.name}: a panel without a title"
            # Panels sharing an axis (a grid of allocators) are labelled once per column or row.
            xshared = [b for b in axes if a.get_shared_x_axes().joined(a, b)]
            assert any(b.get_xlabel() for b in [a] + xshared), f"{p.name}: no x label"
            # A panel's y axis is either labelled or lists the allocators (horizontal bars).
            yshared = [b for b in axes if a.get_shared_y_axes().joined(a, b)]
            ticks = [t.get_text() for t in a.get_yticklabels()]
            assert any(b.get_ylabel() for b in [a] + yshared) or any(ticks), f"{p.name}: no y label"
        assert p.title and p.caption, p.name


def test_units_in_labels(cnn_plots):
    plots = by_name(cnn_plots)
    assert "operations per second" in plots["throughput"].figure.axes[0].get_xlabel()
    assert "(ns" in plots[f"latency_{CNN_SLUG}"].figure.axes[0].get_ylabel()
    assert "GiB" in plots[f"fragmentation_{CNN_SLUG}"].figure.axes[0].get_ylabel() or \
        "MiB" in plots[f"fragmentation_{CNN_SLUG}"].figure.axes[0].get_ylabel()
    assert "GB/s" in plots["tiers_bandwidth"].figure.axes[0].get_ylabel()
    assert plots["tiers_bandwidth"].figure.axes[0].get_xscale() == "log"


def test_cache_sizes_marked_on_tier_plots(cnn_plots):
    texts = [t.get_text() for t in by_name(cnn_plots)["tiers_bandwidth"].figure.axes[0].texts]
    assert any("L1" in t and "48 KiB" in t for t in texts), texts
    assert any("L3" in t and "32 MiB" in t for t in texts), texts
    labels = by_name(cnn_plots)["tiers_bandwidth"].figure.axes[0].get_legend_handles_labels()[1]
    assert "read, 1 thread" in labels and "triad, 2 threads" in labels


def test_fragmentation_has_one_panel_per_allocator_and_references(cnn_plots):
    figure = by_name(cnn_plots)[f"fragmentation_{CNN_SLUG}"].figure
    titles = [a.get_title() for a in figure.axes if a.get_visible()]
    runs = tr.load(RUN_CNN).runs_of(CNN)
    assert titles == [r["allocator"] for r in runs]
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert {"requested", "allocated", "reserved", "lower bound", "planner"} <= set(labels)


def bar_colours(figure):
    """{allocator: colour} of horizontal bar panels (the y tick labels name the bars)."""
    colours = {}
    for axes in figure.axes:
        labels = [t.get_text() for t in axes.get_yticklabels()]
        for label, patch in zip(labels, axes.patches):
            colours[label] = to_hex(patch.get_facecolor())
    return colours


def test_colours_fixed_per_allocator(cnn_plots, llm_plots):
    expected = to_hex(tr.ALLOCATOR_COLOURS["caching.pytorch"])
    cnn, llm = by_name(cnn_plots), by_name(llm_plots)
    assert bar_colours(cnn["throughput"].figure)["caching.pytorch"] == expected
    assert bar_colours(llm["throughput"].figure)["caching.pytorch"] == expected
    assert bar_colours(cnn["efficiency"].figure)["caching.pytorch"] == expected
    latency_lines = [line for line in cnn[f"latency_cdf_{CNN_SLUG}"].figure.axes[0].get_lines()
                     if line.get_label() == "caching.pytorch"]
    assert latency_lines and to_hex(latency_lines[0].get_color()) == expected
    panel = next(a for a in cnn[f"fragmentation_{CNN_SLUG}"].figure.axes if a.get_title() == "caching.pytorch")
    assert to_hex(panel.title.get_color()) == expected
    assert to_hex(bar_colours(cnn[f"capacity_{CNN_SLUG}"].figure)["caching.pytorch"]) == expected
    # Every allocator has its own colour, and one not in the map still gets the same one every time.
    assert len(set(tr.ALLOCATOR_COLOURS.values())) == len(tr.ALLOCATOR_COLOURS) - 1  # lower_bound is an alias
    assert tr.colour("someday.new") == tr.colour("someday.new")


def test_files_and_index(written):
    directory, result = written["cnn"]
    index = json.loads((directory / "plots.json").read_text())
    assert index["schema"] == "tiermark-plots/1"
    listed = {item["name"] for item in index["plots"]}
    assert "throughput" in listed and f"fragmentation_{CNN_SLUG}" in listed
    for item in index["plots"]:
        assert item["title"] and item["caption"]
        for fmt in ("png", "svg"):
            path = directory / item["files"][fmt]
            assert path.name == f"{item['name']}.{fmt}"
            assert path.stat().st_size > 1000
    assert {s["plot"] for s in index["skipped"]} >= {"locality", "kv_utilisation"}
    assert "note: locality plot skipped" in result.stderr
    assert "plots: 8 in" in result.stdout


def test_svg_carries_title_and_axis_labels(written):
    directory, _ = written["cnn"]
    svg = (directory / "throughput.svg").read_text()
    assert "Throughput per workload and allocator" in svg
    assert "operations per second (allocations + frees), log scale" in svg
    svg = (directory / f"fragmentation_{CNN_SLUG}.svg").read_text()
    assert "Fragmentation over the replay" in svg and "event index" in svg and "bytes (" in svg
    svg = (written["llm"][0] / "kv_utilisation.svg").read_text()
    assert "KV-cache utilisation per policy" in svg and "paged" in svg and "exact" in svg
    assert "KV utilisation (fraction, time-weighted)" in svg


def test_output_directory_and_formats(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPTS / "plot.py"), str(RUN_LLM / "results.json"), "-o",
                             str(tmp_path / "out"), "--format", "svg"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert "kv_utilisation.svg" in files and "plots.json" in files
    assert not any(name.endswith(".png") for name in files)


def run_plot(*args):
    return subprocess.run([sys.executable, str(SCRIPTS / "plot.py"), *map(str, args)], capture_output=True, text=True)


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema": "something/2", "runs": []}))
    notjson = tmp_path / "broken.json"
    notjson.write_text("{not json")
    cases = [(tmp_path / "missing", "no such file or directory"), (tmp_path / "empty", "no results.json"),
             (other, "not a tiermark results file"), (notjson, "not JSON")]
    for path, message in cases:
        result = run_plot(path)
        assert result.returncode == 2, (path, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and lines[0].startswith("plot.py: "), result.stderr
    result = run_plot(RUN_CNN, "--format", "gif")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_missing_matplotlib_says_what_to_install():
    """Under an interpreter without matplotlib and no other to turn to: one line naming the package, exit 2.
    `-S` hides the site packages from Debian's python3 itself, so it has nowhere to re-execute."""
    if not os.path.exists(DEBIAN_PYTHON):
        pytest.skip(f"{DEBIAN_PYTHON} is absent")
    env = dict(os.environ, TIERMARK_REEXEC="1")
    result = subprocess.run([DEBIAN_PYTHON, "-S", str(SCRIPTS / "plot.py"), str(RUN_CNN)], capture_output=True,
                            text=True, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "apt-get install python3-matplotlib" in lines[0], result.stderr


def test_runs_with_whichever_python3_is_on_path(tmp_path):
    """`python3 scripts/plot.py` with the python3 on PATH (pyenv's, without matplotlib, on this machine kind) and
    `scripts/plot.py` through its shebang both work: the script re-executes under /usr/bin/python3."""
    if not debian_has("matplotlib"):
        pytest.skip(f"{DEBIAN_PYTHON} has no matplotlib (apt-get install python3-matplotlib)")
    env = {k: v for k, v in os.environ.items() if k != "TIERMARK_REEXEC"}
    python3 = shutil.which("python3", path=env.get("PATH")) or DEBIAN_PYTHON
    for number, command in enumerate(([python3, str(SCRIPTS / "plot.py")], [str(SCRIPTS / "plot.py")])):
        directory = copy_run(RUN_LLM, tmp_path / f"run{number}")
        result = subprocess.run([*command, str(directory), "--format", "png"], capture_output=True, text=True,
                                env=env)
        assert result.returncode == 0, (command, result.stderr)
        assert (directory / "throughput.png").is_file() and (directory / "kv_utilisation.png").is_file()


def test_locality_when_measured(tmp_path):
    """The replay's locality metrics are new: a copy of the fixture with them added (shape of
    harness/replay_results.cc add_locality_metrics) gets locality.png with one bar per allocator."""
    directory = copy_run(RUN_LLM, tmp_path / "run")
    document = json.loads((directory / "results.json").read_text())
    for number, run in enumerate(document["runs"]):
        run["metrics"].update({"touch_cache_bytes": 33554432, "touched_bytes": 1 << 30,
                               "touch_bandwidth_bytes_per_second": 1e10 + number * 1e9,
                               "touch_cache_resident_fraction": 0.1 * (number % 10),
                               "touch_hot_bandwidth_bytes_per_second": 2e10, "touch_cold_bandwidth_bytes_per_second": None})
    (directory / "results.json").write_text(json.dumps(document))
    plots, skipped = plot.make_plots(tr.load(directory))
    locality = by_name((plots, skipped))["locality"]
    assert "locality" not in dict(skipped)
    assert bar_colours(locality.figure)["caching.pytorch"] == to_hex(tr.ALLOCATOR_COLOURS["caching.pytorch"])
    assert "resident in cache" in locality.figure.axes[1].get_xlabel()
    assert "GB/s" in locality.figure.axes[0].get_xlabel()
