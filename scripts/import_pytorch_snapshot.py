#!/usr/bin/env python3
"""Converts a PyTorch CUDA memory snapshot into a tiermark CSV trace.

Usage: import_pytorch_snapshot.py SNAPSHOT.pickle -o TRACE.csv [--device N]

The input is what torch.cuda.memory._dump_snapshot() writes: a pickle of plain dicts, lists, ints,
strings (and a few tuples, floats, bools) with the keys `segments`, `device_traces` and
`allocator_settings`. The output follows docs/trace-format.md and docs/import-pytorch-snapshot.md.

Invariants of the trace written:
- Every block event of device N becomes one row; a block is live from its `alloc` to its
  `free_completed` (the point where PyTorch may hand the memory out again). `free_requested` alone
  leaves it live. Ids are fresh and sequential (0, 1, 2, ...), never reused, so the trace is valid
  even when PyTorch reuses an address.
- The recorded history is a ring buffer, so it may start mid-run. Blocks that were live when the
  window opened are allocated first, inside the `window_start` phase: those freed in the window
  (size from their free event) and those still active in the final `segments` that the window never
  touched (their requested_size). Whatever else disagrees with the final segments is counted in the
  `import.*` metadata, never silently dropped.
- `reference.reserved_bytes` counters give PyTorch's own reserved bytes (sum of its segments) right
  after `window_start` and after every segment event, so a replay can be compared at any point.
- Bad input prints one line `import_pytorch_snapshot: FILE: problem` to stderr and exits 2. The
  output is written to a temporary file next to it and renamed, so a failed run never leaves a
  half-written trace and never touches an existing one.
- The pickle is read with an Unpickler that refuses every global: a snapshot names none, and a file
  that does could run code on load.
Standard library only: runs under any python3. Linear in the number of events.
"""

import argparse
import json
import os
import pickle
import sys
import tempfile

PROGRAM = "import_pytorch_snapshot"

# Block states in the final segments that hold a live tensor. `active_pending_free` is what the C++
# snapshot writes (torch/csrc/cuda/memory_snapshot.cpp); torch/cuda/memory.py's docstring calls the
# same state `active_awaiting_free`, so both are accepted.
ACTIVE_STATES = ("active_allocated", "active_pending_free", "active_awaiting_free")
BLOCK_ACTIONS = ("alloc", "free_requested", "free_completed")
# Segment events and the sign they give to PyTorch's reserved bytes (c10/cuda/CUDACachingAllocator.cpp:
# segment_alloc/segment_free are cudaMalloc/cudaFree; segment_map/segment_unmap are the physical pages
# of an expandable segment being mapped or unmapped).
SEGMENT_ACTIONS = {"segment_alloc": 1, "segment_map": 1, "segment_free": -1, "segment_unmap": -1}
CPP_SUFFIXES = (".cpp", ".cc", ".cxx", ".c", ".h", ".hpp", ".cu", ".cuh")


class InputError(Exception):
    """Bad input: reported as one line and exit status 2."""


def fail(file, problem):
    raise InputError(f"{file}: {problem}")


class RefusingUnpickler(pickle.Unpickler):
    """Builds only the plain containers and scalars; any global (class, function) is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"the pickle names a global ({module}.{name}); a memory snapshot names none")


def load_snapshot(path):
    try:
        stream = open(path, "rb")
    except OSError as error:
        fail(path, (error.strerror or str(error)).lower())
    with stream:
        try:
            return RefusingUnpickler(stream).load()
        except OSError as error:
            fail(path, f"read error ({error.strerror or error})")
        except pickle.UnpicklingError as error:
            fail(path, f"not a memory snapshot pickle ({error})")
        except Exception as error:  # a malformed pickle may raise almost anything; it is all bad input
            fail(path, f"not a memory snapshot pickle ({type(error).__name__}: {error})")


def short(value):
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 40 else text[:37] + "..."


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


class Checker:
    """Typed access to the snapshot's dicts, with messages that say where the problem is."""

    def __init__(self, path):
        self.path = path

    def field(self, where, record, key, kind, default=None, required=True):
        if not isinstance(record, dict):
            fail(self.path, f"{where}: expected a dict, found {type(record).__name__}")
        if key not in record:
            if required:
                fail(self.path, f"{where}: missing key '{key}'")
            return default
        value = record[key]
        if kind == "uint":
            if not is_int(value) or value < 0:
                fail(self.path, f"{where}: '{key}' is {short(value)}, expected a non-negative integer")
        elif kind == "str":
            if not isinstance(value, str):
                fail(self.path, f"{where}: '{key}' is {type(value).__name__}, expected a string")
        elif kind == "list":
            if not isinstance(value, (list, tuple)):
                fail(self.path, f"{where}: '{key}' is {type(value).__name__}, expected a list")
        return value


def frame_tag(checker, where, frames):
    """`function@file:line` of the innermost frame that is the user's Python code, or ''.

    Frames are stored innermost first (torch/cuda/_memory_viz.py reverses them to draw flame
    graphs root first). The innermost frames are nearly always the allocator's C++ and torch's own
    Python; the first frame outside both names the operator or module that asked for the memory.
    """
    if frames is None:
        return ""
    if not isinstance(frames, (list, tuple)):
        fail(checker.path, f"{where}: 'frames' is {type(frames).__name__}, expected a list")
    for frame in frames:
        if not isinstance(frame, dict):
            fail(checker.path, f"{where}: a frame is {type(frame).__name__}, expected a dict")
        filename, name, line = frame.get("filename"), frame.get("name"), frame.get("line")
        if not isinstance(filename, str) or not isinstance(name, str) or not filename or not name:
            continue
        path = "/" + filename.replace("\\", "/")
        if filename == "??" or name == "??" or "::" in name or path.endswith(CPP_SUFFIXES):
            continue  # C++ (recorded with stacks="all"): the allocator and dispatcher, never the cause
        if filename.startswith("<"):
            continue  # <frozen ...>, <string>, <eval_with_key>.N: generated code with no file to open
        if "/torch/" in path:
            continue  # torch's own Python (nn.functional, autograd, module __call__)
        tag = f"{name}@{path.rsplit('/', 1)[-1]}"
        if is_int(line):
            tag += f":{line}"
        return tag.replace("\r", " ").replace("\n", " ")
    return ""


def csv_field(text):
    """RFC 4180 quoting, by the same rule as tiermark's C++ CSV writer."""
    if any(c in text for c in ',"') or (text and (text[0] == " " or text[-1] == " ")):
        return '"' + text.replace('"', '""') + '"'
    return text


def render_settings(settings):
    """One line for `#meta snapshot.allocator_settings=`: compact JSON, or repr if not JSON-able."""
    try:
        text = json.dumps(settings, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        text = repr(settings)
    return text.replace("\r", " ").replace("\n", " ")


class Importer:
    def __init__(self, path, snapshot, device):
        self.path = path
        self.check = Checker(path)
        if not isinstance(snapshot, dict):
            fail(path, f"not a memory snapshot: the pickle holds a {type(snapshot).__name__}, expected a dict with 'device_traces'")
        traces = self.check.field("snapshot", snapshot, "device_traces", "list")
        segments = self.check.field("snapshot", snapshot, "segments", "list")
        if device >= len(traces):
            fail(path, f"--device {device} is out of range: the snapshot has {len(traces)} device(s)")
        self.device = device
        self.device_count = len(traces)
        self.events = traces[device]
        if not isinstance(self.events, (list, tuple)):
            fail(path, f"device_traces[{device}] is {type(self.events).__name__}, expected a list")
        self.settings = snapshot.get("allocator_settings")
        self.segments = [s for s in segments if not isinstance(s, dict) or s.get("device", device) == device]
        self.rows = []  # CSV rows after the header, in order
        self.streams = {0: 0}
        self.next_id = 0
        self.live = {}  # address -> (id, requested size, stream row value)
        self.live_bytes = 0
        self.peak_requested = 0
        self.reserved = 0
        self.peak_reserved = 0
        self.reserved_at_peak_requested = 0
        self.counts = dict.fromkeys(
            ("events", "allocs", "frees", "materialized_freed_in_window", "materialized_live_throughout",
             "implicit_frees", "unmatched_frees", "unmatched_live_blocks", "unmatched_snapshot_blocks",
             "size_mismatches", "ignored_events", "ooms"), 0)

    # ---- reading the input ------------------------------------------------------------------
    def read_events(self):
        """Validates every event once and returns (action, addr, size, stream, event, where)."""
        parsed = []
        for index, event in enumerate(self.events):
            where = f"device_traces[{self.device}][{index}]"
            action = self.check.field(where, event, "action", "str")
            stream = self.check.field(where, event, "stream", "uint", default=0, required=False)
            if action in BLOCK_ACTIONS or action in SEGMENT_ACTIONS:
                addr = self.check.field(where, event, "addr", "uint")
                size = self.check.field(where, event, "size", "uint")
            elif action == "oom":
                addr = self.check.field(where, event, "device_free", "uint")
                size = self.check.field(where, event, "size", "uint", default=0, required=False)
            else:
                addr = 0
                size = event.get("size", 0) if is_int(event.get("size", 0)) else 0
            parsed.append((action, addr, size, stream, event, where))
        return parsed

    def final_blocks(self):
        """The device's final segments: total reserved bytes and the active blocks by address."""
        reserved = 0
        expandable = False
        active = {}
        for i, segment in enumerate(self.segments):
            where = f"segments[{i}]"
            reserved += self.check.field(where, segment, "total_size", "uint")
            stream = self.check.field(where, segment, "stream", "uint", default=0, required=False)
            expandable = expandable or segment.get("is_expandable") is True
            for j, block in enumerate(self.check.field(where, segment, "blocks", "list")):
                block_where = f"{where}.blocks[{j}]"
                state = self.check.field(block_where, block, "state", "str")
                if state not in ACTIVE_STATES:
                    continue
                address = self.check.field(block_where, block, "address", "uint")
                size = self.check.field(block_where, block, "requested_size", "uint", default=None, required=False)
                if size is None:  # snapshots before requested_size existed: the block size is all there is
                    size = self.check.field(block_where, block, "size", "uint")
                active[address] = (size, stream, block.get("frames"), block_where, state)
        return reserved, expandable, active

    # ---- writing rows ------------------------------------------------------------------------
    def stream_of(self, stream):
        # CUDA streams are pointers; tiermark wants small integers. Default stream 0 stays 0.
        if stream not in self.streams:
            self.streams[stream] = len(self.streams)
        return self.streams[stream]

    def emit_alloc(self, address, size, stream, tag):
        slot = self.next_id
        self.next_id += 1
        mapped = self.stream_of(stream)
        self.live[address] = (slot, size, mapped)
        self.live_bytes += size
        if self.live_bytes > self.peak_requested:
            self.peak_requested = self.live_bytes
            self.reserved_at_peak_requested = self.reserved
        self.rows.append(f"alloc,{slot},{size},,{mapped or ''},,{csv_field(tag)}")

    def emit_free(self, address):
        slot, size, mapped = self.live.pop(address)
        self.live_bytes -= size
        self.rows.append(f"free,{slot},,,{mapped or ''},,")

    def emit_counter(self, name, value):
        self.rows.append(f"counter,,{value},,,,{name}")

    def emit_reserved(self):
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        self.emit_counter("reference.reserved_bytes", self.reserved)

    # ---- the conversion ----------------------------------------------------------------------
    def run(self):
        events = self.read_events()
        final_reserved, expandable, final_active = self.final_blocks()
        self.counts["events"] = len(events)

        # A block whose first event in the window is a free was allocated before the window opened.
        first_action = {}
        opening_frees = []
        segment_delta = 0
        lowest_delta = 0
        has_free_completed = False
        for action, addr, size, stream, event, where in events:
            if action in BLOCK_ACTIONS:
                has_free_completed = has_free_completed or action == "free_completed"
                if addr not in first_action:
                    first_action[addr] = action
                    if action != "alloc":
                        opening_frees.append((addr, size, stream, event, where))
            elif action in SEGMENT_ACTIONS:
                segment_delta += SEGMENT_ACTIONS[action] * size
                lowest_delta = min(lowest_delta, segment_delta)
                expandable = expandable or action in ("segment_map", "segment_unmap")

        # With skip_actions=["free_completed"] the only free there is is the request.
        only_requests = not has_free_completed and any(e[0] == "free_requested" for e in events)
        free_action = "free_requested" if only_requests else "free_completed"
        if free_action == "free_requested":  # then a block pending its free is no longer live
            final_active = {a: b for a, b in final_active.items() if b[4] == "active_allocated"}

        # Reserved bytes when the window opened: the final total minus what the window added.
        reserved_start = final_reserved - segment_delta
        adjusted = max(0, -(reserved_start + lowest_delta))
        self.reserved = reserved_start + adjusted

        self.rows.append("phase,,,,,,window_start")
        self.emit_reserved()
        for addr, size, stream, event, where in opening_frees:
            if size == 0:
                self.counts["ignored_events"] += 1
                continue
            self.emit_alloc(addr, size, stream, frame_tag(self.check, where, event.get("frames")))
            self.counts["materialized_freed_in_window"] += 1
        for addr, (size, stream, frames, where, _) in final_active.items():
            if addr in first_action or size == 0:
                continue
            self.emit_alloc(addr, size, stream, frame_tag(self.check, where, frames))
            self.counts["materialized_live_throughout"] += 1
        self.rows.append("phase,,,,,,window")

        for action, addr, size, stream, event, where in events:
            if action == "alloc":
                if size == 0:
                    self.counts["ignored_events"] += 1
                    continue
                if addr in self.live:  # the free of the previous block here fell outside what was recorded
                    self.emit_free(addr)
                    self.counts["implicit_frees"] += 1
                self.emit_alloc(addr, size, stream, frame_tag(self.check, where, event.get("frames")))
                self.counts["allocs"] += 1
            elif action == free_action:
                if addr in self.live:
                    self.emit_free(addr)
                    self.counts["frees"] += 1
                else:
                    self.counts["unmatched_frees"] += 1
            elif action in BLOCK_ACTIONS:
                pass  # free_requested: the block stays live (pending) until free_completed
            elif action in SEGMENT_ACTIONS:
                self.reserved += SEGMENT_ACTIONS[action] * size
                self.emit_reserved()
            elif action == "oom":
                self.counts["ooms"] += 1
                self.emit_counter("reference.oom", addr)
            elif action == "snapshot":
                # Recorded each time a snapshot is taken; its size is the active bytes then.
                self.emit_counter("reference.snapshot_active_bytes", size)
            else:
                self.counts["ignored_events"] += 1  # annotate, user_defined, and actions yet to come

        # Reconcile the end state with the final segments.
        for addr, (slot, size, mapped) in self.live.items():
            block = final_active.get(addr)
            if block is None:
                self.counts["unmatched_live_blocks"] += 1
            elif block[0] != size:
                self.counts["size_mismatches"] += 1
        for addr, block in final_active.items():
            if addr not in self.live and block[0] != 0:
                self.counts["unmatched_snapshot_blocks"] += 1

        materialized = self.counts["materialized_freed_in_window"] + self.counts["materialized_live_throughout"]
        meta = [
            ("source", "pytorch-snapshot"),
            ("source.file", self.path),
            ("device", str(self.device)),
            ("ends_empty", "false"),
            ("snapshot.devices", str(self.device_count)),
            ("snapshot.expandable_segments", "true" if self._expandable(expandable) else "false"),
        ]
        if self.settings is not None:
            meta.append(("snapshot.allocator_settings", render_settings(self.settings)))
        meta += [
            ("import.events", str(self.counts["events"])),
            ("import.free_point", free_action),
            ("import.streams", str(len(self.streams))),
            ("import.materialized_blocks", str(materialized)),
            ("import.materialized_freed_in_window", str(self.counts["materialized_freed_in_window"])),
            ("import.materialized_live_throughout", str(self.counts["materialized_live_throughout"])),
            ("import.implicit_frees", str(self.counts["implicit_frees"])),
            ("import.unmatched_frees", str(self.counts["unmatched_frees"])),
            ("import.unmatched_live_blocks", str(self.counts["unmatched_live_blocks"])),
            ("import.unmatched_snapshot_blocks", str(self.counts["unmatched_snapshot_blocks"])),
            ("import.size_mismatches", str(self.counts["size_mismatches"])),
            ("import.ignored_events", str(self.counts["ignored_events"])),
            ("import.peak_requested_bytes", str(self.peak_requested)),
            ("reference.reserved_at_window_start_bytes", str(reserved_start + adjusted)),
            ("reference.reserved_at_end_bytes", str(final_reserved)),
            ("reference.peak_reserved_bytes", str(self.peak_reserved)),
            ("reference.reserved_at_peak_requested_bytes", str(self.reserved_at_peak_requested)),
            ("reference.ooms", str(self.counts["ooms"])),
        ]
        if adjusted:
            # The final segments hold less than the window's segment events imply (segments of this
            # device missing from the snapshot): the curve is lifted so it never goes below zero.
            meta.append(("import.reserved_adjusted_bytes", str(adjusted)))
        return meta

    def _expandable(self, seen):
        if isinstance(self.settings, dict) and isinstance(self.settings.get("expandable_segments"), bool):
            return self.settings["expandable_segments"] or seen
        return seen


def write_atomically(target, meta, rows):
    """Writes next to `target` and renames, so readers see the old file or the whole new one."""
    directory = os.path.dirname(os.path.abspath(target))
    handle, temporary = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", suffix=".tmp", dir=directory)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(handle, 0o666 & ~umask)  # mkstemp makes 0600; a trace is an ordinary file
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as out:
            for key, value in meta:
                out.write(f"#meta {key}={value}\n")
            out.write("op,id,size,align,stream,thread,tag\n")
            for row in rows:
                out.write(row)
                out.write("\n")
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("snapshot", help="pickle written by torch.cuda.memory._dump_snapshot()")
    parser.add_argument("-o", "--output", required=True, help="CSV trace to write")
    # Parsed here rather than by argparse so that a bad value is one line and exit 2 like other bad input.
    parser.add_argument("--device", default="0", help="CUDA device index whose trace to import (default 0)")
    args = parser.parse_args(argv)
    try:
        if not (args.device.isascii() and args.device.isdigit()):
            fail(args.snapshot, f"--device '{args.device}' is not a device index (expected 0, 1, ...)")
        if os.path.exists(args.output) and os.path.exists(args.snapshot) and os.path.samefile(args.output, args.snapshot):
            fail(args.snapshot, "the output would overwrite the snapshot")
        importer = Importer(args.snapshot, load_snapshot(args.snapshot), int(args.device))
        meta = importer.run()
        try:
            write_atomically(args.output, meta, importer.rows)
        except OSError as error:
            raise InputError(f"{args.output}: cannot write ({error.strerror or error})")
    except InputError as error:
        print(f"{PROGRAM}: {error}".replace("\n", " "), file=sys.stderr)
        return 2
    counts = importer.counts
    materialized = counts["materialized_freed_in_window"] + counts["materialized_live_throughout"]
    print(f"{PROGRAM}: {args.output}: {counts['events']} events -> {counts['allocs']} allocs, {counts['frees']} frees, "
          f"{materialized} materialised blocks; peak requested {importer.peak_requested} B, "
          f"PyTorch peak reserved {importer.peak_reserved} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
