"""Tests of scripts/import_pytorch_snapshot.py on snapshots built by snapshot_fixtures.py: exact CSV
for small hand-written snapshots, consistency checks on a transformer training run cut at many
ring-buffer windows, and one-line exit-2 failures on bad input."""

import csv
import importlib.util
import json
import os
import pathlib
import pickle
import re
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import snapshot_fixtures as fx  # noqa: E402

SOURCE = pathlib.Path(os.environ.get("TIERMARK_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))
BUILD = pathlib.Path(os.environ.get("TIERMARK_BUILD_DIR", SOURCE / "build" / "release"))
SCRIPT = SOURCE / "scripts" / "import_pytorch_snapshot.py"
MiB = fx.MiB


def run_import(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def load_module():
    spec = importlib.util.spec_from_file_location("import_pytorch_snapshot", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Trace:
    """A CSV trace read and checked by the rules of workloads/csv_trace.cc and trace_validator.cc."""

    def __init__(self, path):
        lines = path.read_text().splitlines()
        self.meta = {}
        index = 0
        while lines[index].startswith("#meta "):
            key, _, value = lines[index][len("#meta "):].partition("=")
            assert re.fullmatch(r"[A-Za-z0-9._-]+", key), key
            assert key not in self.meta, f"metadata {key} twice"
            self.meta[key] = value
            index += 1
        assert lines[index] == "op,id,size,align,stream,thread,tag"
        self.lines = lines[index + 1:]
        self.rows = [row for row in csv.reader(self.lines) if row and not row[0].startswith("#")]
        self.live = {}  # id -> size
        self.seen = set()
        self.counters = []  # (row index, name, value)
        self.phases = []
        live_bytes = 0
        self.peak = 0
        for i, row in enumerate(self.rows):
            assert len(row) == 7, row
            op, slot, size, align, stream, thread, tag = row
            if op == "alloc":
                assert slot.isdigit() and size.isdigit() and int(size) >= 1, row
                assert align == "" and thread == "" and (stream == "" or stream.isdigit()), row
                assert int(slot) not in self.seen, f"id {slot} used twice"
                self.seen.add(int(slot))
                self.live[int(slot)] = int(size)
                live_bytes += int(size)
                self.peak = max(self.peak, live_bytes)
            elif op == "free":
                assert int(slot) in self.live, f"free of {slot}, which is not live"
                assert size == "" and tag == "", row
                live_bytes -= self.live.pop(int(slot))
            elif op == "counter":
                assert slot == align == stream == thread == "" and size.isdigit() and tag, row
                self.counters.append((i, tag, int(size)))
            elif op == "phase":
                assert slot == size == align == stream == thread == "" and tag, row
                self.phases.append((i, tag))
            else:
                pytest.fail(f"unknown op {op}")

    def values(self, name):
        return [value for _, counter, value in self.counters if counter == name]

    def window_start_allocs(self):
        start = next(i for i, name in self.phases if name == "window")
        return [row for row in self.rows[:start] if row[0] == "alloc"]


def convert(tmp_path, snapshot, *extra, name="snap.pickle"):
    source = fx.write_pickle(tmp_path / name, snapshot)
    out = tmp_path / (name + ".csv")
    result = run_import(source, "-o", out, *extra)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return Trace(out), result, source


def test_simple_complete_run_exact_rows(tmp_path):
    trace, result, source = convert(tmp_path, fx.simple_snapshot())
    assert trace.lines == [
        "phase,,,,,,window_start",
        "counter,,0,,,,reference.reserved_bytes",
        "phase,,,,,,window",
        "counter,,2097152,,,,reference.reserved_bytes",
        "alloc,0,4000,,,,forward@model.py:41",
        "alloc,1,1000,,,,forward@model.py:42",
        "counter,,23068672,,,,reference.reserved_bytes",
        'alloc,2,3145728,,,,"mlp@blocks, v2.py:7"',
        "free,0,,,,,",
        "free,2,,,,,",
        "counter,,2097152,,,,reference.reserved_bytes",
        "counter,,1024,,,,reference.snapshot_active_bytes",
    ]
    expected = {
        "source": "pytorch-snapshot", "source.file": str(source), "device": "0", "ends_empty": "false",
        "snapshot.expandable_segments": "false", "import.events": "11", "import.materialized_blocks": "0",
        "import.implicit_frees": "0", "import.unmatched_live_blocks": "0", "import.unmatched_snapshot_blocks": "0",
        "import.peak_requested_bytes": str(4000 + 1000 + 3 * MiB),
        "reference.reserved_at_window_start_bytes": "0", "reference.reserved_at_end_bytes": str(2 * MiB),
        "reference.peak_reserved_bytes": str(22 * MiB), "reference.reserved_at_peak_requested_bytes": str(22 * MiB),
    }
    assert {key: trace.meta.get(key) for key in expected} == expected
    assert list(trace.meta)[:4] == ["source", "source.file", "device", "ends_empty"]
    settings = trace.meta["snapshot.allocator_settings"]
    assert settings.startswith('{"PYTORCH_CUDA_ALLOC_CONF":""') and '"expandable_segments":false' in settings
    assert result.stdout.count("\n") == 1
    assert "11 events" in result.stdout and "3 allocs" in result.stdout and "2 frees" in result.stdout
    assert "0 materialised" in result.stdout and "peak requested 3150728 B" in result.stdout
    assert "PyTorch peak reserved 23068672 B" in result.stdout


def test_window_materialises_blocks_live_before_it_and_reconciles(tmp_path):
    trace, _, _ = convert(tmp_path, fx.windowed_snapshot())
    assert trace.lines == [
        "phase,,,,,,window_start",
        "counter,,23068672,,,,reference.reserved_bytes",  # 2 MiB at the end + the 20 MiB freed in the window
        "alloc,0,3000,,,,attention@model.py:60",  # freed in the window: size from its free event
        "alloc,1,5000,,,,",
        "alloc,2,7000,,,,load_weights@setup.py:12",  # active at the end, untouched by the window
        "phase,,,,,,window",
        "free,0,,,,,",
        "free,1,,,,,",
        "alloc,3,2500,,,,attention@model.py:61",
        "counter,,2097152,,,,reference.reserved_bytes",
        "alloc,4,100,,1,,",  # pending its free at the end: still live
    ]
    expected = {
        "device": "0", "snapshot.devices": "2", "import.materialized_blocks": "3",
        "import.materialized_freed_in_window": "2", "import.materialized_live_throughout": "1",
        "import.unmatched_live_blocks": "0", "import.unmatched_snapshot_blocks": "0", "import.size_mismatches": "0",
        "import.unmatched_frees": "0", "reference.reserved_at_window_start_bytes": str(22 * MiB),
        "reference.reserved_at_end_bytes": str(2 * MiB),  # device 1's segment is not counted
        "import.peak_requested_bytes": "15000", "reference.reserved_at_peak_requested_bytes": str(22 * MiB),
    }
    assert {key: trace.meta.get(key) for key in expected} == expected
    assert sorted(trace.live.values()) == [100, 2500, 7000]


def replay_prefix(events):
    """Live requested bytes, live blocks and reserved bytes after `events`, as PyTorch saw them."""
    live, reserved = {}, 0
    for e in events:
        if e["action"] == "alloc":
            live[e["addr"]] = e["size"]
        elif e["action"] == "free_completed":
            del live[e["addr"]]
        elif e["action"] in ("segment_alloc", "segment_map"):
            reserved += e["size"]
        elif e["action"] in ("segment_free", "segment_unmap"):
            reserved -= e["size"]
    return live, reserved


@pytest.mark.parametrize("expandable", [False, True])
def test_transformer_window_cut_anywhere_reconciles(tmp_path, expandable):
    """Whatever the ring buffer kept, the blocks live when the window opened and PyTorch's reserved
    bytes then are recovered exactly, and the end state matches the final segments."""
    full, allocator = fx.transformer_snapshot(layers=2, steps=2, expandable=expandable)
    events = allocator.events
    final_reserved = sum(segment["total_size"] for segment in full["segments"])
    for keep in (len(events), 2, 57, 300, 611, len(events) - 150):
        snapshot = dict(full, device_traces=[events[-keep:]])
        trace, _, _ = convert(tmp_path, snapshot, name=f"cut{keep}.pickle")
        live, reserved = replay_prefix(events[:len(events) - keep])
        opening = trace.window_start_allocs()
        assert sorted(int(row[2]) for row in opening) == sorted(live.values())
        assert trace.meta["reference.reserved_at_window_start_bytes"] == str(reserved)
        assert trace.values("reference.reserved_bytes")[0] == reserved
        assert trace.values("reference.reserved_bytes")[-1] == final_reserved
        for key in ("import.implicit_frees", "import.unmatched_frees", "import.unmatched_live_blocks",
                    "import.unmatched_snapshot_blocks", "import.size_mismatches", "import.ignored_events"):
            assert trace.meta[key] == "0", (keep, key)
        assert sum(trace.live.values()) == allocator.live_requested()
        assert trace.meta["snapshot.expandable_segments"] == ("true" if expandable else "false")


def test_transformer_sizes_follow_the_formulas(tmp_path):
    b, s, h, a, V = 4, 192, 640, 10, 8000
    f = 4 * h
    trace, _, _ = convert(tmp_path, fx.transformer_snapshot()[0])
    sizes = {int(row[2]) for row in trace.rows if row[0] == "alloc"}
    formula = {b * s * h * 4, b * s * 4, b * a * s * s * 4, b * a * s * s, b * s * f * 4, b * s * V * 4, h * h * 4, h * f * 4}
    assert len(formula) == 8 and formula <= sizes
    assert len(sizes) <= 25  # real training snapshots use only 12 to 25 distinct sizes (REFERENCE s1)
    peak_requested = int(trace.meta["import.peak_requested_bytes"])
    assert peak_requested == trace.peak
    ratio = int(trace.meta["reference.peak_reserved_bytes"]) / peak_requested
    assert 1.0 < ratio < 1.5
    tags = {row[6] for row in trace.rows if row[0] == "alloc"}
    assert {"forward@gpt.py:33", "attention@gpt.py:41", "train_step@train.py:87", "train_step@train.py:93"} <= tags


def test_tiermark_reads_the_imported_trace(tmp_path):
    """The C++ reader and validator accept the trace and agree on its peak (when tiermark is built)."""
    binary = BUILD / "tiermark"
    if not binary.exists():
        pytest.skip(f"{binary} is not built")
    for name, snapshot in [("full", fx.transformer_snapshot()[0]), ("window", fx.transformer_snapshot(max_entries=400)[0]),
                           ("streams", fx.two_stream_snapshot()), ("windowed", fx.windowed_snapshot())]:
        trace, _, source = convert(tmp_path, snapshot, name=f"{name}.pickle")
        result = subprocess.run([str(binary), "trace", "stats", f"{source}.csv", "--json"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        stats = json.loads(result.stdout)
        assert stats["peak_live_bytes"] == int(trace.meta["import.peak_requested_bytes"]) == trace.peak
        assert stats["allocs"] == sum(row[0] == "alloc" for row in trace.rows)


def test_expandable_segments_map_and_unmap_drive_the_reserved_curve(tmp_path):
    allocator = fx.FakeCachingAllocator(expandable=True)
    allocator.malloc(3 * MiB // 2)  # large pool: maps one 20 MiB page
    big = allocator.malloc(25 * MiB)  # 18.5 MiB free at the end, so one more page
    allocator.free(big)
    allocator.empty_cache()  # unmaps the now free second page
    snapshot = allocator.snapshot()
    del snapshot["allocator_settings"]  # the map events alone tell expandable segments apart
    trace, _, _ = convert(tmp_path, snapshot)
    assert [e["action"] for e in snapshot["device_traces"][0]].count("segment_alloc") == 0
    assert trace.values("reference.reserved_bytes") == [0, 20 * MiB, 40 * MiB, 20 * MiB]
    assert trace.meta["snapshot.expandable_segments"] == "true"
    assert trace.meta["reference.peak_reserved_bytes"] == str(40 * MiB)
    assert trace.meta["reference.reserved_at_peak_requested_bytes"] == str(40 * MiB)

    # the window opening after the first map starts from the mapped page
    cut = dict(snapshot, device_traces=[snapshot["device_traces"][0][1:]])
    trace, _, _ = convert(tmp_path, cut, name="cut.pickle")
    assert trace.values("reference.reserved_bytes") == [20 * MiB, 40 * MiB, 20 * MiB]


def test_two_streams_map_to_small_integers_in_order_of_appearance(tmp_path):
    trace, _, _ = convert(tmp_path, fx.two_stream_snapshot())
    blocks = [(row[0], row[1], row[4]) for row in trace.rows if row[0] in ("alloc", "free")]
    assert blocks == [
        ("alloc", "0", "1"),  # stream 0x5603CD20, seen first
        ("alloc", "1", ""),  # the default stream stays 0
        ("alloc", "2", "2"),
        ("alloc", "3", "1"),
        ("free", "0", "1"),
        ("alloc", "4", "2"),  # id 2's free was requested before this, but completes after it
        ("free", "2", "2"),
        ("free", "1", ""),
        ("free", "3", "1"),
    ]
    assert trace.meta["import.streams"] == "3"


class Payload:
    """Pickles as a call to os.system: what a malicious 'snapshot' would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Plain:
    pass


@pytest.mark.parametrize("make", [
    lambda marker: {"segments": [], "device_traces": [[Payload(marker)]]},
    lambda marker: {"segments": [], "device_traces": [[]], "allocator_settings": Plain()},
    lambda marker: {"segments": [], "device_traces": [[]], "when": __import__("datetime").date(2024, 1, 1)},
])
def test_a_pickle_naming_a_global_is_refused(tmp_path, make):
    marker = tmp_path / "ran"
    bad = tmp_path / "evil.pickle"
    bad.write_bytes(pickle.dumps(make(marker)))
    result = run_import(bad, "-o", tmp_path / "out.csv")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"import_pytorch_snapshot: {bad}: ")
    assert "global" in result.stderr
    assert not marker.exists()
    assert not (tmp_path / "out.csv").exists()


def snapshot_with(**changes):
    snapshot = fx.simple_snapshot()
    snapshot.update(changes)
    return snapshot


BAD_INPUTS = {
    "not_a_pickle": (b"op,id,size\nalloc,0,16\n", "not a memory snapshot pickle"),
    "empty_file": (b"", "not a memory snapshot pickle"),
    "truncated": (pickle.dumps(fx.simple_snapshot())[:-40], "not a memory snapshot pickle"),
    "top_level_list": (pickle.dumps([{"address": 0}]), "expected a dict with 'device_traces'"),
    "no_device_traces": (pickle.dumps({"segments": []}), "missing key 'device_traces'"),
    "no_segments": (pickle.dumps({"device_traces": [[]]}), "missing key 'segments'"),
    "traces_not_a_list": (pickle.dumps(snapshot_with(device_traces="x")), "'device_traces' is str, expected a list"),
    "event_without_addr": (pickle.dumps(snapshot_with(device_traces=[[{"action": "alloc", "size": 8}]])),
                           "device_traces[0][0]: missing key 'addr'"),
    "size_is_text": (pickle.dumps(snapshot_with(device_traces=[[fx.event("alloc", 4096, "8")]])),
                     "'size' is '8', expected a non-negative integer"),
    "negative_size": (pickle.dumps(snapshot_with(device_traces=[[fx.event("alloc", 4096, -8)]])),
                      "expected a non-negative integer"),
    "event_not_a_dict": (pickle.dumps(snapshot_with(device_traces=[[["alloc"]]])), "expected a dict, found list"),
    "frames_not_a_list": (pickle.dumps(snapshot_with(device_traces=[[fx.event("alloc", 4096, 8, frames="f")]])),
                          "'frames' is str, expected a list"),
    "segment_without_total": (pickle.dumps(snapshot_with(segments=[{"device": 0, "blocks": []}])),
                              "segments[0]: missing key 'total_size'"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_snapshot_is_one_line_and_exit_2(tmp_path, name):
    content, problem = BAD_INPUTS[name]
    bad = tmp_path / f"{name}.pickle"
    bad.write_bytes(content)
    result = run_import(bad, "-o", tmp_path / "out.csv")
    assert result.returncode == 2, result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"import_pytorch_snapshot: {bad}: ")
    assert problem in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == [bad]


def test_missing_file_is_reported(tmp_path):
    result = run_import(tmp_path / "nowhere.pickle", "-o", tmp_path / "out.csv")
    assert result.returncode == 2
    assert result.stderr.strip() == f"import_pytorch_snapshot: {tmp_path / 'nowhere.pickle'}: no such file or directory"


@pytest.mark.parametrize("device, problem", [
    ("2", "--device 2 is out of range: the snapshot has 2 device(s)"),
    ("7", "--device 7 is out of range: the snapshot has 2 device(s)"),
    ("-1", "--device '-1' is not a device index"),
    ("cuda:0", "--device 'cuda:0' is not a device index"),
])
def test_bad_device_is_one_line_and_exit_2(tmp_path, device, problem):
    source = fx.write_pickle(tmp_path / "snap.pickle", fx.windowed_snapshot())
    result = run_import(source, "-o", tmp_path / "out.csv", f"--device={device}")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"import_pytorch_snapshot: {source}: {problem}")


def test_other_device_is_selectable(tmp_path):
    trace, _, _ = convert(tmp_path, fx.windowed_snapshot(), "--device", "1")
    assert trace.meta["device"] == "1"
    assert trace.meta["reference.reserved_at_end_bytes"] == str(2 * MiB)  # device 1's segment only
    assert [row for row in trace.rows if row[0] in ("alloc", "free")] == []


def test_failed_run_leaves_existing_output_untouched(tmp_path):
    out = tmp_path / "trace.csv"
    out.write_text("old trace\n")
    bad = tmp_path / "bad.pickle"
    bad.write_bytes(pickle.dumps(snapshot_with(device_traces=[[fx.event("alloc", 0, 8), {"action": "alloc"}]])))
    result = run_import(bad, "-o", out)
    assert result.returncode == 2
    assert out.read_text() == "old trace\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pickle", "trace.csv"]  # no temporary left

    good = fx.write_pickle(tmp_path / "good.pickle", fx.simple_snapshot())
    assert run_import(good, "-o", out).returncode == 0
    assert out.read_text().startswith("#meta source=pytorch-snapshot\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pickle", "good.pickle", "trace.csv"]
    assert out.stat().st_mode & 0o777 != 0o600  # an ordinary file, not mkstemp's private mode


def test_unwritable_output_is_one_line(tmp_path):
    source = fx.write_pickle(tmp_path / "snap.pickle", fx.simple_snapshot())
    target = tmp_path / "no" / "such" / "dir.csv"
    result = run_import(source, "-o", target)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no such file or directory" in result.stderr.lower()


@pytest.mark.parametrize("frames, tag", [
    (None, ""),
    ([], ""),
    (fx.CPP_FRAMES, ""),  # C++ only
    ([fx.torch_frame("forward", "nn/modules/linear.py", 116)], ""),  # torch internals only
    (fx.user_stack(("forward", "/work/m.py", 9), torch_frames=[fx.LINEAR, fx.CALL]), "forward@m.py:9"),
    ([fx.frame("forward", "<eval_with_key>.12", 5), fx.frame("run", "/w/x.py", 3)], "run@x.py:3"),
    ([fx.frame("<module>", "<frozen runpy>", 88), fx.frame("<module>", "/w/script.py", 1)], "<module>@script.py:1"),
    ([fx.frame("torch::autograd::Engine::evaluate_function", "/pt/torch/csrc/autograd/engine.cpp", 1), fx.frame("step", "/w/t.py", 4)],
     "step@t.py:4"),
    ([fx.frame("at::native::matmul", "??", 0), fx.frame("kernel", "/w/ops.cu", 4), fx.frame("step", "/w/t.py", 4)],
     "step@t.py:4"),
    ([fx.frame("forward", "C:\\work\\model.py", 12)], "forward@model.py:12"),
    ([fx.frame("forward", "/work/model.py", None)], "forward@model.py"),
    ([fx.frame("inner", "/usr/lib/python3/dist-packages/transformers/modeling_llama.py", 300)],
     "inner@modeling_llama.py:300"),  # other libraries are kept: they name the layer
])
def test_tag_is_the_innermost_useful_frame(frames, tag):
    module = load_module()
    assert module.frame_tag(module.Checker("f"), "here", frames) == tag


def test_oom_snapshot_and_unknown_actions(tmp_path):
    events = [
        fx.event("segment_alloc", fx.A, 2 * MiB),
        fx.event("alloc", fx.A, 512),
        {"action": "oom", "device_free": 123456, "size": 80 * MiB, "stream": 0, "time_us": 5},
        {"action": "annotate", "addr": fx.A, "size": 0, "stream": 0, "user_metadata": "x"},
        {"action": "user_defined", "stream": 0},
        fx.event("free_requested", fx.A, 512),
        fx.event("free_completed", fx.A, 512),
        fx.event("snapshot", 0, 0),
    ]
    snapshot = {"segments": [{"device": 0, "address": fx.A, "total_size": 2 * MiB, "stream": 0, "blocks": [
        {"address": fx.A, "size": 2 * MiB, "requested_size": 0, "state": "inactive"}]}], "device_traces": [events]}
    trace, _, _ = convert(tmp_path, snapshot)
    assert trace.lines[3:] == [
        "counter,,2097152,,,,reference.reserved_bytes",
        "alloc,0,512,,,,",
        "counter,,123456,,,,reference.oom",
        "free,0,,,,,",
        "counter,,0,,,,reference.snapshot_active_bytes",
    ]
    assert trace.meta["reference.ooms"] == "1"
    assert trace.meta["import.ignored_events"] == "2"
    assert "snapshot.allocator_settings" not in trace.meta


def test_missed_free_closes_the_old_block(tmp_path):
    events = [fx.event("alloc", fx.A, 100), fx.event("alloc", fx.A, 200),
              fx.event("free_completed", fx.A, 200), fx.event("free_completed", fx.A, 200)]
    snapshot = {"segments": [], "device_traces": [events]}
    trace, _, _ = convert(tmp_path, snapshot)
    assert [row[:3] for row in trace.rows if row[0] in ("alloc", "free")] == [
        ["alloc", "0", "100"], ["free", "0", ""], ["alloc", "1", "200"], ["free", "1", ""]]
    assert trace.meta["import.implicit_frees"] == "1"
    assert trace.meta["import.unmatched_frees"] == "1"


def test_end_state_mismatches_are_counted(tmp_path):
    # the trace leaves A live, the segments say B (allocated in the window, freed) and C (size differs)
    B, C = fx.A + 4096, fx.A + 8192
    events = [fx.event("alloc", fx.A, 100), fx.event("alloc", B, 100), fx.event("free_completed", B, 100),
              fx.event("alloc", C, 300)]
    blocks = [{"address": B, "size": 512, "requested_size": 100, "state": "active_allocated"},
              {"address": C, "size": 512, "requested_size": 200, "state": "active_allocated"}]
    snapshot = {"segments": [{"device": 0, "total_size": 2 * MiB, "blocks": blocks}], "device_traces": [events]}
    trace, _, _ = convert(tmp_path, snapshot)
    assert trace.meta["import.unmatched_live_blocks"] == "1"
    assert trace.meta["import.unmatched_snapshot_blocks"] == "1"
    assert trace.meta["import.size_mismatches"] == "1"
    assert trace.meta["import.materialized_blocks"] == "0"


def test_without_free_completed_the_request_frees(tmp_path):
    # _record_memory_history(skip_actions=["free_completed"]): only requests are recorded
    events = [fx.event("alloc", fx.A, 100), fx.event("free_requested", fx.A, 100), fx.event("alloc", fx.A + 512, 50)]
    trace, _, _ = convert(tmp_path, {"segments": [], "device_traces": [events]})
    assert [row[:2] for row in trace.rows if row[0] in ("alloc", "free")] == [["alloc", "0"], ["free", "0"], ["alloc", "1"]]
    assert trace.meta["import.free_point"] == "free_requested"


def test_the_real_writer_format_without_frames_and_with_tuples(tmp_path):
    # Events recorded without context carry no 'frames' key; segment_pool_id is a tuple.
    snapshot = fx.simple_snapshot()
    for event in snapshot["device_traces"][0]:
        event.pop("frames", None)
    trace, _, _ = convert(tmp_path, snapshot)
    assert {row[6] for row in trace.rows if row[0] == "alloc"} == {""}
