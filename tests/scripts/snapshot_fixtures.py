"""Builders of PyTorch CUDA memory snapshots for the tests of scripts/import_pytorch_snapshot.py.

A snapshot here is exactly what torch.cuda.memory._dump_snapshot() pickles (shared/REFERENCE.md
section 1, checked against torch/csrc/cuda/memory_snapshot.cpp): a dict with `segments` (each with
`device`, `address`, `total_size`, `stream`, `segment_type`, `is_expandable`, `blocks`), one event
list per device in `device_traces`, and `allocator_settings`. Frames are innermost first.

Two kinds of builder:
- small hand-written snapshots whose converted CSV the tests spell out row by row;
- FakeCachingAllocator, a small model of PyTorch's caching allocator (512 B rounding, small blocks
  of at most 1 MiB carved from 2 MiB segments, 20 MiB segments up to 10 MiB, bigger requests in
  their own segment rounded to 2 MiB, best fit, split and merge, expandable segments mapped in 2 or
  20 MiB pages) that records events the way the real one does, so that long realistic traces
  (a transformer's forward and backward with formula sizes) stay consistent with their final
  segments, and the ring-buffer window can be cut anywhere.

Run as a script to write the pickles into a directory: python3 snapshot_fixtures.py OUT_DIR
"""

import pickle
import sys

KiB = 1024
MiB = 1024 * KiB
BASE = 0x7F0000000000

# Frames as PyTorch records them with stacks="all": the allocator's C++ first (innermost), then
# torch's Python, then the user's code.
CPP_FRAMES = [
    {"name": "c10::cuda::CUDACachingAllocator::Native::DeviceCachingAllocator::malloc", "filename": "??", "line": 0},
    {"name": "at::detail::empty_generic", "filename": "/pytorch/aten/src/ATen/EmptyTensor.cpp", "line": 58},
]


def frame(name, filename, line):
    return {"name": name, "filename": filename, "line": line}


def torch_frame(name, module, line):
    return frame(name, f"/opt/conda/lib/python3.11/site-packages/torch/{module}", line)


def user_stack(*user_frames, torch_frames=()):
    """C++ frames, then torch internals, then the user's frames (each innermost first)."""
    return CPP_FRAMES + [torch_frame(*f) for f in torch_frames] + [frame(*f) for f in user_frames]


def default_settings(expandable=False):
    return {
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True" if expandable else "",
        "max_split_size": -1,
        "garbage_collection_threshold": 0.0,
        "expandable_segments": expandable,
        "pinned_num_register_threads": 1,
        "release_lock_on_cudamalloc": False,
        "pinned_use_cuda_host_register": False,
        "roundup_power2_divisions": {"1": 0, "2": 0, "4": 0, "8": 0},
    }


def event(action, addr, size, stream=0, frames=None, time_us=0):
    entry = {"action": action, "addr": addr, "size": size, "stream": stream, "time_us": time_us}
    if frames is not None:  # the real writer omits the key when no context was recorded
        entry["frames"] = frames
    return entry


def write_pickle(path, snapshot):
    path.write_bytes(pickle.dumps(snapshot))
    return path


# ---- a model of the caching allocator ------------------------------------------------------------

class _Block:
    __slots__ = ("addr", "size", "requested", "state", "frames", "stream")

    def __init__(self, addr, size, stream):
        self.addr, self.size, self.stream = addr, size, stream
        self.requested, self.state, self.frames = 0, "inactive", []


class _Segment:
    def __init__(self, addr, stream, is_large, expandable):
        self.addr, self.stream, self.is_large, self.expandable = addr, stream, is_large, expandable
        self.total = 0
        self.blocks = []  # address order, covering [addr, addr + total)


def _round_up(value, quantum):
    return (value + quantum - 1) // quantum * quantum


class FakeCachingAllocator:
    """Records a device trace and final segments the way c10/cuda/CUDACachingAllocator.cpp does."""

    def __init__(self, device=0, expandable=False, base=BASE):
        self.device = device
        self.expandable = expandable
        self.segments = []
        self.by_addr = {}
        self.events = []
        self.next_segment = base
        self.clock = 1_700_000_000_000_000
        self.pending = []

    def _record(self, action, addr, size, stream, frames=None, key="addr"):
        self.clock += 7
        entry = {"action": action, key: addr, "size": size, "stream": stream, "time_us": self.clock}
        if frames is not None:
            entry["frames"] = frames
        self.events.append(entry)

    # -- segments
    def _new_segment(self, stream, is_large, size):
        segment = _Segment(self.next_segment, stream, is_large, False)
        self.next_segment += _round_up(size, 2 * MiB) + 64 * MiB  # leave gaps: addresses stay distinct
        segment.total = size
        segment.blocks = [_Block(segment.addr, size, stream)]
        self.segments.append(segment)
        self._record("segment_alloc", segment.addr, size, stream)
        return segment

    def _expandable_segment(self, stream, is_large):
        for segment in self.segments:
            if segment.expandable and segment.stream == stream and segment.is_large == is_large:
                return segment
        segment = _Segment(self.next_segment, stream, is_large, True)
        self.next_segment += 1 << 36  # the reserved virtual range: far larger than anything mapped
        self.segments.append(segment)
        return segment

    def _map(self, segment, needed):
        page = 20 * MiB if segment.is_large else 2 * MiB
        last = segment.blocks[-1] if segment.blocks else None
        if last is not None and last.state == "inactive":
            needed -= last.size
        size = _round_up(needed, page)
        start = segment.addr + segment.total
        self._record("segment_map", start, size, segment.stream)
        if last is not None and last.state == "inactive":
            last.size += size
        else:
            segment.blocks.append(_Block(start, size, segment.stream))
        segment.total += size

    # -- blocks
    def _best_fit(self, rounded, stream, is_large):
        best = None
        for segment in self.segments:
            if segment.stream != stream or segment.is_large != is_large:
                continue
            for block in segment.blocks:
                if block.state == "inactive" and block.size >= rounded:
                    if best is None or (block.size, block.addr) < (best[1].size, best[1].addr):
                        best = (segment, block)
        return best

    def malloc(self, size, stream=0, frames=None):
        rounded = max(512, _round_up(size, 512))
        is_large = rounded > 1 * MiB
        found = self._best_fit(rounded, stream, is_large)
        if found is None:
            if self.expandable:
                self._map(self._expandable_segment(stream, is_large), rounded)
            elif not is_large:
                self._new_segment(stream, False, 2 * MiB)
            elif rounded < 10 * MiB:
                self._new_segment(stream, True, 20 * MiB)
            else:
                self._new_segment(stream, True, _round_up(rounded, 2 * MiB))
            found = self._best_fit(rounded, stream, is_large)
        segment, block = found
        remainder = block.size - rounded
        if remainder >= 512 and (not is_large or segment.expandable or remainder > 1 * MiB):
            rest = _Block(block.addr + rounded, remainder, stream)
            block.size = rounded
            segment.blocks.insert(segment.blocks.index(block) + 1, rest)
        block.state, block.requested, block.frames = "active_allocated", size, list(frames or [])
        self.by_addr[block.addr] = (segment, block)
        self._record("alloc", block.addr, size, stream, frames)
        return block.addr

    def free(self, addr, frames=None, pending=False):
        """free_requested then free_completed; `pending` defers completion (a block used on another
        stream stays active_pending_free until its events finish)."""
        segment, block = self.by_addr[addr]
        self._record("free_requested", addr, block.requested, block.stream, frames if frames is not None else block.frames)
        if pending:
            block.state = "active_pending_free"
            self.pending.append(addr)
        else:
            self._complete(addr, frames)

    def complete_pending(self):
        pending, self.pending = self.pending, []
        for addr in pending:
            self._complete(addr, None)

    def _complete(self, addr, frames):
        segment, block = self.by_addr.pop(addr)
        self._record("free_completed", addr, block.requested, block.stream, frames if frames is not None else block.frames)
        block.state, block.requested, block.frames = "inactive", 0, []
        index = segment.blocks.index(block)
        if index + 1 < len(segment.blocks) and segment.blocks[index + 1].state == "inactive":
            block.size += segment.blocks.pop(index + 1).size
        if index > 0 and segment.blocks[index - 1].state == "inactive":
            segment.blocks[index - 1].size += segment.blocks.pop(index).size

    def empty_cache(self):
        """Returns wholly free segments (segment_free) and unmaps free trailing pages (segment_unmap)."""
        kept = []
        for segment in self.segments:
            if not segment.expandable:
                if len(segment.blocks) == 1 and segment.blocks[0].state == "inactive":
                    self._record("segment_free", segment.addr, segment.total, segment.stream)
                    continue
            elif segment.blocks and segment.blocks[-1].state == "inactive":
                page = 20 * MiB if segment.is_large else 2 * MiB
                last = segment.blocks[-1]
                start = segment.addr + _round_up(last.addr - segment.addr, page)
                end = segment.addr + segment.total
                if start < end:
                    self._record("segment_unmap", start, end - start, segment.stream)
                    last.size -= end - start
                    segment.total -= end - start
                    if last.size == 0:
                        segment.blocks.pop()
            kept.append(segment)
        self.segments = kept

    def oom(self, size, device_free, stream=0):
        self._record("oom", device_free, size, stream, key="device_free")

    def live_requested(self):
        return sum(block.requested for _, block in self.by_addr.values())

    def snapshot(self, max_entries=None, devices=1):
        """The pickle's dict. Taking it records a `snapshot` event (size = active bytes), as the real
        allocator does; `max_entries` keeps only the newest entries, as its ring buffer does."""
        segments = []
        active_total = 0
        for segment in sorted(self.segments, key=lambda s: s.addr):
            if segment.total == 0:
                continue
            blocks = [{"address": b.addr, "size": b.size, "requested_size": b.requested, "state": b.state,
                       "frames": b.frames} for b in segment.blocks]
            allocated = sum(b.size for b in segment.blocks if b.state == "active_allocated")
            active = sum(b.size for b in segment.blocks if b.state != "inactive")
            active_total += active
            segments.append({
                "device": self.device, "address": segment.addr, "total_size": segment.total,
                "allocated_size": allocated, "active_size": active,
                "requested_size": sum(b.requested for b in segment.blocks),
                "stream": segment.stream, "segment_type": "large" if segment.is_large else "small",
                "segment_pool_id": (0, 0), "is_expandable": segment.expandable, "frames": [], "blocks": blocks,
            })
        self._record("snapshot", 0, active_total, 0)
        trace = self.events if max_entries is None else self.events[-max_entries:]
        traces = [[] for _ in range(devices)]
        traces[self.device] = list(trace)
        return {"segments": segments, "device_traces": traces,
                "allocator_settings": default_settings(self.expandable)}


# ---- hand-written snapshots with exact expected CSV ------------------------------------------------

A = BASE           # first 2 MiB segment
B = BASE + 0x400000  # a 20 MiB segment

MODEL = "/work/train/model.py"
LINEAR = ("forward", "nn/modules/linear.py", 116)
CALL = ("_call_impl", "nn/modules/module.py", 1527)


def simple_snapshot():
    """A complete run (the ring buffer never wrapped): two segments, three tensors, one freed early,
    empty_cache at the end returns the 20 MiB segment. Nothing is live before the first event."""
    q_frames = user_stack(("forward", MODEL, 41), torch_frames=[LINEAR, CALL])
    events = [
        event("segment_alloc", A, 2 * MiB),
        event("alloc", A, 4000, frames=q_frames),
        event("alloc", A + 4096, 1000, frames=user_stack(("forward", MODEL, 42))),
        event("segment_alloc", B, 20 * MiB),
        event("alloc", B, 3 * MiB, frames=user_stack(("mlp", "/work/train/blocks, v2.py", 7))),
        event("free_requested", A, 4000, frames=q_frames),
        event("free_completed", A, 4000, frames=q_frames),
        event("free_requested", B, 3 * MiB),
        event("free_completed", B, 3 * MiB),
        event("segment_free", B, 20 * MiB),
        event("snapshot", 0, 1024),
    ]
    segments = [{
        "device": 0, "address": A, "total_size": 2 * MiB, "allocated_size": 1024, "active_size": 1024,
        "requested_size": 1000, "stream": 0, "segment_type": "small", "segment_pool_id": (0, 0),
        "is_expandable": False, "frames": [],
        "blocks": [
            {"address": A, "size": 4096, "requested_size": 0, "state": "inactive", "frames": []},
            {"address": A + 4096, "size": 1024, "requested_size": 1000, "state": "active_allocated",
             "frames": user_stack(("forward", MODEL, 42))},
            {"address": A + 5120, "size": 2 * MiB - 5120, "requested_size": 0, "state": "inactive", "frames": []},
        ],
    }]
    return {"segments": segments, "device_traces": [events], "allocator_settings": default_settings()}


def windowed_snapshot():
    """The ring buffer wrapped: the window opens with the completion of a free whose alloc it lost
    (X, 3000 B), then frees W (5000 B, requested before the window), while P (7000 B) was live the
    whole time and is still active at the end; Y is allocated and then pending its free at the end.
    A 20 MiB segment that existed before the window is freed in it."""
    X, W, P, Y = A, A + 4096, A + 16384, A + 32768
    events = [
        event("free_completed", X, 3000, frames=user_stack(("attention", MODEL, 60))),
        event("free_completed", W, 5000),
        event("alloc", X, 2500, frames=user_stack(("attention", MODEL, 61))),
        event("segment_free", B, 20 * MiB),
        event("alloc", Y, 100, stream=0x55AA00),
        event("free_requested", Y, 100, stream=0x55AA00),
    ]
    segments = [{
        "device": 0, "address": A, "total_size": 2 * MiB, "allocated_size": 2560 + 7168, "active_size": 2560 + 7168 + 512,
        "requested_size": 2500 + 7000 + 100, "stream": 0, "segment_type": "small", "segment_pool_id": (0, 0),
        "is_expandable": False, "frames": [],
        "blocks": [
            {"address": X, "size": 2560, "requested_size": 2500, "state": "active_allocated", "frames": []},
            {"address": X + 2560, "size": 16384 - 2560, "requested_size": 0, "state": "inactive", "frames": []},
            {"address": P, "size": 7168, "requested_size": 7000, "state": "active_allocated",
             "frames": user_stack(("load_weights", "/work/train/setup.py", 12))},
            {"address": P + 7168, "size": Y - P - 7168, "requested_size": 0, "state": "inactive", "frames": []},
            {"address": Y, "size": 512, "requested_size": 100, "state": "active_pending_free", "frames": []},
            {"address": Y + 512, "size": A + 2 * MiB - Y - 512, "requested_size": 0, "state": "inactive", "frames": []},
        ],
    }, {
        # another device's segment: must not count toward device 0's reserved bytes
        "device": 1, "address": BASE + (1 << 40), "total_size": 2 * MiB, "allocated_size": 0, "active_size": 0,
        "requested_size": 0, "stream": 0, "segment_type": "small", "segment_pool_id": (0, 0),
        "is_expandable": False, "frames": [],
        "blocks": [{"address": BASE + (1 << 40), "size": 2 * MiB, "requested_size": 0, "state": "inactive", "frames": []}],
    }]
    return {"segments": segments, "device_traces": [events, []], "allocator_settings": default_settings()}


def two_stream_snapshot():
    """Allocations on the default stream and two side streams (CUDA stream handles are pointers)."""
    s1, s2 = 0x5603AB10, 0x5603CD20
    alloc = FakeCachingAllocator()
    a = alloc.malloc(1000, stream=s2)
    b = alloc.malloc(2000, stream=0)
    c = alloc.malloc(3000, stream=s1)
    d = alloc.malloc(4000, stream=s2)
    alloc.free(a)
    alloc.free(c, pending=True)  # used on another stream: completes later
    alloc.malloc(500, stream=s1)
    alloc.complete_pending()
    alloc.free(b)
    alloc.free(d)
    return alloc.snapshot()


# ---- a realistic workload ----------------------------------------------------------------------------

def transformer_snapshot(batch=4, seq=192, hidden=640, heads=10, layers=2, vocab=8000, steps=3,
                         max_entries=None, expandable=False):
    """A 2-layer GPT-style model trained for `steps` steps in fp32, eager PyTorch with unfused
    attention, sizes by the formulas of shared/REFERENCE.md section 5: activations b*s*h*4,
    layer-norm statistics b*s*4, attention scores b*a*s^2*4, dropout mask b*a*s^2, FFN b*s*f*4
    (f = 4h), logits b*s*V*4 plus an fp32 log-softmax copy; weights h^2*4 and h*f*4; weight
    gradients recreated each step (zero_grad(set_to_none=True)); Adam's m and v created lazily at
    the first step. The default shape keeps every formula size distinct and, like real models, mostly
    not a power of two (head dimension 64, as in the 2.7B model of REFERENCE section 1). Returns
    (snapshot, allocator)."""
    b, s, h, a, f, V = batch, seq, hidden, heads, 4 * hidden, vocab
    alloc = FakeCachingAllocator(expandable=expandable)
    train = "/work/train/train.py"
    model = "/work/train/gpt.py"

    def tagged(function, line, *torch_frames):
        return user_stack((function, model, line), ("train_step", train, 88), torch_frames=torch_frames)

    def grad_frames(line):  # backward runs in the autograd engine: the user frame is loss.backward()
        return user_stack(("train_step", train, line),
                          torch_frames=[("_engine_run_backward", "autograd/graph.py", 768),
                                        ("backward", "autograd/__init__.py", 289), ("backward", "_tensor.py", 521)])

    def opt_frames():
        return user_stack(("train_step", train, 93),
                          torch_frames=[("_single_tensor_adam", "optim/adam.py", 412), ("step", "optim/adam.py", 223)])

    # parameters, allocated once by model.cuda()
    shapes = [("wte", V * h)]
    for layer in range(layers):
        shapes += [(f"h{layer}.ln1.w", h), (f"h{layer}.ln1.b", h), (f"h{layer}.q", h * h), (f"h{layer}.k", h * h),
                   (f"h{layer}.v", h * h), (f"h{layer}.o", h * h), (f"h{layer}.ln2.w", h), (f"h{layer}.ln2.b", h),
                   (f"h{layer}.up", h * f), (f"h{layer}.up.b", f), (f"h{layer}.down", f * h), (f"h{layer}.down.b", h)]
    shapes += [("ln_f.w", h), ("ln_f.b", h)]
    setup = user_stack(("main", train, 30), torch_frames=[("convert", "nn/modules/module.py", 1160)])
    params = {name: alloc.malloc(elements * 4, frames=setup) for name, elements in shapes}
    grads, adam = {}, {}
    workspace = alloc.malloc(8519680, frames=tagged("forward", 12, LINEAR))  # cuBLAS workspace, once

    for step in range(steps):
        for name in list(grads):  # optimizer.zero_grad(set_to_none=True)
            alloc.free(grads.pop(name), frames=user_stack(("train_step", train, 80)))
        tokens = alloc.malloc(b * s * 8, frames=user_stack(("train_step", train, 84)))
        x = alloc.malloc(b * s * h * 4, frames=tagged("forward", 20))  # token + position embedding
        saved = []  # (address, size) of tensors autograd keeps for backward, in creation order
        for _ in range(layers):
            def keep(size, line, *tf):
                addr = alloc.malloc(size, frames=tagged("forward", line, *tf))
                saved.append((addr, size))
                return addr
            keep(b * s * h * 4, 31, ("layer_norm", "nn/functional.py", 2546))  # ln1 out
            keep(b * s * 4, 31, ("layer_norm", "nn/functional.py", 2546))  # mean
            keep(b * s * 4, 31, ("layer_norm", "nn/functional.py", 2546))  # rstd
            for line in (33, 34, 35):  # q, k, v
                keep(b * s * h * 4, line, LINEAR, CALL)
            scores = alloc.malloc(b * a * s * s * 4, frames=tagged("attention", 41))
            keep(b * a * s * s * 4, 42, ("softmax", "nn/functional.py", 1885))  # probabilities
            alloc.free(scores)
            keep(b * a * s * s, 43, ("dropout", "nn/functional.py", 1295))  # mask (bool)
            keep(b * a * s * s * 4, 43, ("dropout", "nn/functional.py", 1295))
            keep(b * s * h * 4, 44)  # context
            out = alloc.malloc(b * s * h * 4, frames=tagged("attention", 45, LINEAR, CALL))
            resid = alloc.malloc(b * s * h * 4, frames=tagged("forward", 52))
            alloc.free(out)
            saved.append((x, b * s * h * 4))
            x = resid
            keep(b * s * h * 4, 53, ("layer_norm", "nn/functional.py", 2546))
            keep(b * s * 4, 53, ("layer_norm", "nn/functional.py", 2546))
            keep(b * s * 4, 53, ("layer_norm", "nn/functional.py", 2546))
            keep(b * s * f * 4, 61, LINEAR, CALL)  # FFN up
            keep(b * s * f * 4, 62, ("gelu", "nn/functional.py", 1520))
            down = alloc.malloc(b * s * h * 4, frames=tagged("mlp", 63, LINEAR, CALL))
            resid = alloc.malloc(b * s * h * 4, frames=tagged("forward", 54))
            alloc.free(down)
            saved.append((x, b * s * h * 4))
            x = resid
        logits = alloc.malloc(b * s * V * 4, frames=tagged("forward", 70, LINEAR, CALL))
        logp = alloc.malloc(b * s * V * 4, frames=user_stack(("train_step", train, 86),
                                                             torch_frames=[("cross_entropy", "nn/functional.py", 3104)]))
        loss = alloc.malloc(4, frames=user_stack(("train_step", train, 86)))

        # backward: a gradient per saved tensor, then the saved tensor goes
        grad = alloc.malloc(b * s * V * 4, frames=grad_frames(87))
        alloc.free(logp)
        alloc.free(logits)
        alloc.free(loss)
        dx = alloc.malloc(b * s * h * 4, frames=grad_frames(87))
        alloc.free(grad)
        alloc.free(x)
        for addr, size in reversed(saved):
            g = alloc.malloc(size, frames=grad_frames(87))
            alloc.free(addr)
            alloc.free(g)
        alloc.free(tokens)
        for name, elements in shapes:  # weight gradients, recreated every step
            grads[name] = alloc.malloc(elements * 4, frames=grad_frames(87))
        alloc.free(dx)

        # optimizer.step(): Adam state on the first step
        for name, elements in shapes:
            if name not in adam:
                adam[name] = (alloc.malloc(elements * 4, frames=opt_frames()),
                              alloc.malloc(elements * 4, frames=opt_frames()))
    del params, workspace  # still live at the end, as in a real training process
    return alloc.snapshot(max_entries=max_entries), alloc


def main(argv):
    import pathlib
    if len(argv) != 2:
        print("usage: snapshot_fixtures.py OUT_DIR", file=sys.stderr)
        return 2
    out = pathlib.Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    write_pickle(out / "simple.pickle", simple_snapshot())
    write_pickle(out / "windowed.pickle", windowed_snapshot())
    write_pickle(out / "two_streams.pickle", two_stream_snapshot())
    write_pickle(out / "transformer.pickle", transformer_snapshot()[0])
    write_pickle(out / "transformer_window.pickle", transformer_snapshot(max_entries=400)[0])
    write_pickle(out / "transformer_expandable.pickle", transformer_snapshot(expandable=True)[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
