#!/usr/bin/env python3
"""Side-by-side accuracy check of `tiermark tiers` against likwid-bench (Debian package likwid).

Runs likwid-bench's AVX-512 kernels and tiermark's at the same working-set sizes and thread counts in
one session, and prints tiermark vs likwid per size, kernel and thread count. Both count bytes the
STREAM way (read + written, no write-allocate: likwid-bench -l shows "Bytes per element" 8 for load,
16 for copy, 24 for stream, 32 for its 4-stream triad), and both read the size as the total of all
streams of all threads (likwid-bench -w S0:<size>:<threads>).

tiermark's triad is STREAM's (a = b + s*c, 3 streams): its likwid counterpart is stream_avx512_fma;
likwid's triad_avx512_fma (a = b*c + d, 4 streams) is printed too, as a reference only.

usage: tools/compare_likwid.py TIERMARK [--sizes 24kB,512kB,16MB,1GB] [--threads 1,2] [--rounds 3]
"""
import argparse
import json
import re
import subprocess
import sys
import tempfile

PAIRS = [("read", "load_avx512"), ("copy", "copy_avx512"), ("triad", "stream_avx512_fma"), (None, "triad_avx512_fma")]


def likwid_run(test, size, threads, iterations=None):
    command = ["likwid-bench", "-t", test, "-w", f"S0:{size}:{threads}"]
    if iterations is not None:
        command += ["-i", str(iterations)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    field = lambda name: float(re.search(rf"^{name}:\s+([0-9.e+-]+)", out, re.M).group(1))
    return field("MByte/s") * 1e6, field("Time"), int(field("Iterations per thread"))


def likwid(test, size, threads, runs):
    """Best of `runs` runs of about 20 ms: likwid-bench's default run lasts about a second and averages
    every interruption on a shared machine into its figure, where tiermark keeps its best 10 ms
    sample; short runs put the two on the same footing."""
    _, seconds, iterations = likwid_run(test, size, threads)
    short = max(1, int(iterations * 0.02 / max(seconds, 1e-9)))
    return max(likwid_run(test, size, threads, short)[0] for _ in range(runs))


def tiermark(binary, kernel, size, threads, scratch):
    subprocess.run([binary, "tiers", "--sizes", size.replace("kB", "KB"), "--kernels", kernel, "--threads", str(threads),
                    "--isa", "avx512", "--samples", "5", "--json", f"{scratch}/t.json", "--out", scratch], check=True,
                   stdout=subprocess.DEVNULL)
    point = json.load(open(f"{scratch}/t.json"))["points"][0]
    return point["bandwidth_bytes_per_second"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("tiermark")
    parser.add_argument("--sizes", default="24kB,512kB,16MB,1GB")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sizes = args.sizes.split(",")
    threads = [int(t) for t in args.threads.split(",")]
    # On a shared machine the load moves between runs: the two tools alternate, round after round, and
    # each keeps its best (both report best-of-samples figures anyway).
    print(f"{'size':>7} {'thr':>3} {'tiermark':>9} {'likwid':>19} {'tiermark GB/s':>14} {'likwid GB/s':>12} {'diff':>7}")
    with tempfile.TemporaryDirectory() as scratch:
        for size in sizes:
            for t in threads:
                for kernel, test in PAIRS:
                    mine, theirs = 0.0, 0.0
                    for _ in range(args.rounds):
                        if kernel is not None:
                            mine = max(mine, tiermark(args.tiermark, kernel, size, t, scratch))
                        theirs = max(theirs, likwid(test, size, t, 7))
                    if kernel is None:
                        print(f"{size:>7} {t:>3} {'-':>9} {test:>19} {'-':>14} {theirs / 1e9:12.1f}")
                    else:
                        print(f"{size:>7} {t:>3} {kernel:>9} {test:>19} {mine / 1e9:14.1f} {theirs / 1e9:12.1f} "
                              f"{100 * (mine - theirs) / theirs:+6.1f}%")
                    sys.stdout.flush()


if __name__ == "__main__":
    main()
