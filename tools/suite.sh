#!/usr/bin/env bash
# tiermark's main job: installs what is missing, builds, and runs the default suite on this machine:
#  1. `tiermark replay` of the built-in workloads that suit a 2-core machine against every allocator
#     (tiermark's own, the caching models, the offline planner and the lower bound, and glibc, jemalloc,
#     mimalloc and tcmalloc each in a process of its own), with per-operation latency;
#  2. `tiermark tiers --quick`: bandwidth and latency of each memory tier (tiers.json);
#  3. `tiermark stress --allocator all --verify`: 2 s of verified two-thread churn per allocator (stress.json);
#  4. the allocator microbenchmarks (bench_allocators), in rounds of separate processes, the system
#     rows again with each malloc preloaded;
# then prints the summary tables, draws the plots and writes one self-contained HTML report, whose
# path is the last line printed. Everything goes to results/<date>_<host>_<commit>/: results.json
# (schema tiermark/1, results/README.md), results.csv, the Google Benchmark JSON, table.txt, the
# plots (plots.json, PNG and SVG) and report.html.
#
# Environment: TIERMARK_REPETITIONS (replay repetitions, default 3), TIERMARK_ROUNDS (benchmark
# rounds, default 2), TIERMARK_MIN_TIME seconds per benchmark row (default 0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
repetitions=${TIERMARK_REPETITIONS:-3}
rounds=${TIERMARK_ROUNDS:-2}
min_time=${TIERMARK_MIN_TIME:-0.1}
for setting in "TIERMARK_REPETITIONS=$repetitions" "TIERMARK_ROUNDS=$rounds"; do
  if ! [[ "${setting#*=}" =~ ^[1-9][0-9]*$ ]]; then
    echo "tiermark: $setting: expected a positive whole number" >&2
    exit 2
  fi
done
if ! [[ "$min_time" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] || [[ "$min_time" =~ ^0*\.?0*$ ]]; then
  echo "tiermark: TIERMARK_MIN_TIME='$min_time': expected a positive number of seconds" >&2
  exit 2
fi
tools/build.sh >/dev/null

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
export TIERMARK_GIT_COMMIT="$commit"  # the commit at build time can be older than the checkout
out="results/$(date -u +%Y-%m-%d)_$(hostname -s)_$commit"
mkdir -p "$out"

# The standard workloads (tools/standard-workloads.txt, shared with scripts/nightly.py).
workloads=()
while read -r line; do
  case "$line" in ''|'#'*) ;; *) workloads+=("$line") ;; esac
done < tools/standard-workloads.txt
replay_args=()
for workload in "${workloads[@]}"; do replay_args+=(--workload "$workload"); done
echo "replay: ${#workloads[@]} workloads x all allocators, $repetitions repetitions" >&2
build/release/tiermark replay "${replay_args[@]}" --allocator all --latency --repetitions "$repetitions" --out "$out" \
  | tee "$out/replay_table.txt"

# The memory tiers of this machine (docs/tiers.md): the quick sweep, bandwidth and latency per tier.
echo "tiers: bandwidth and latency of L1, L2, L3 and DRAM (quick sweep)" >&2
build/release/tiermark tiers --quick --out "$out" | tee "$out/tiers_table.txt"

# Verified stress of every allocator (docs/stress.md): two threads of random churn for 2 s each, every
# block's contents and non-overlap checked. A corruption or a failed growth gate makes the main job
# exit 1 at the end, after the report is written.
echo "stress: every allocator, 2 threads, verified churn" >&2
stress_status=0
build/release/tiermark stress --allocator all --threads 2 --seconds 2 --verify --out "$out" | tee "$out/stress_table.txt" ||
  stress_status=$?

preloads=()
for library in libjemalloc.so.2 libtcmalloc_minimal.so.4 libmimalloc.so.2; do
  path=$(ldconfig -p | awk -v lib="$library" '$1 == lib {print $NF; exit}')
  if [ -n "$path" ]; then preloads+=("$path"); else echo "note: $library not found, its row is skipped" >&2; fi
done

bench=build/release/bench_allocators
common=(--benchmark_min_time="$min_time" --benchmark_enable_random_interleaving=true --benchmark_out_format=json)
for round in $(seq 1 "$rounds"); do
  echo "benchmarks, round $round of $rounds: all allocators" >&2
  "$bench" "${common[@]}" --benchmark_out="$out/bench_allocators.glibc.$round.json" >"$out/bench_allocators.glibc.$round.log" 2>&1
  for path in "${preloads[@]}"; do
    name=$(basename "$path" | sed -E 's/^lib([a-z]+).*/\1/')
    echo "benchmarks, round $round of $rounds: system and malloc rows with $name preloaded" >&2
    LD_PRELOAD="$path" "$bench" "${common[@]}" --benchmark_filter='^(pair|random)/(system|malloc)/' \
      --benchmark_out="$out/bench_allocators.$name.$round.json" >"$out/bench_allocators.$name.$round.log" 2>&1
  done
done

scripts/bench_table.py "$out" | tee "$out/table.txt"
echo "results: $out/results.json" >&2

# The plots (PNG and SVG, plots.json) next to the results, then one self-contained HTML report of it
# all (docs/plots-and-report.md); its path is the last line printed.
scripts/plot.py "$out"
python3 scripts/report.py "$out" -o "$out/report.html" >/dev/null
echo "report: $out/report.html"
exit "$stress_status"
