#!/usr/bin/env bash
# tiermark's main job: installs what is missing, builds, runs the allocator benchmarks and prints a
# comparison table. Every allocator runs in one process; the `system` rows run again in a process
# of their own with each of jemalloc, tcmalloc and mimalloc preloaded (they replace malloc for the
# whole process), as do the raw `malloc` baseline rows. Rounds interleave the processes so that
# drift on a shared machine spreads evenly.
# Results (Google Benchmark JSON per process and round, and the table) go to results/<stamp>/.
#
# Environment: TIERMARK_ROUNDS (default 3), TIERMARK_MIN_TIME seconds per row (default 0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${TIERMARK_ROUNDS:-3}
min_time=${TIERMARK_MIN_TIME:-0.1}
if ! [[ "$rounds" =~ ^[1-9][0-9]*$ ]]; then
  echo "tiermark: TIERMARK_ROUNDS='$rounds': expected a positive whole number" >&2
  exit 2
fi
if ! [[ "$min_time" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] || [[ "$min_time" =~ ^0*\.?0*$ ]]; then
  echo "tiermark: TIERMARK_MIN_TIME='$min_time': expected a positive number of seconds" >&2
  exit 2
fi
tools/build.sh >/dev/null

stamp="$(date -u +%Y%m%dT%H%M%SZ)_$(hostname -s)_$(git rev-parse --short HEAD 2>/dev/null || echo nogit)"
out="results/$stamp"
mkdir -p "$out"

preloads=()
for library in libjemalloc.so.2 libtcmalloc_minimal.so.4 libmimalloc.so.2; do
  path=$(ldconfig -p | awk -v lib="$library" '$1 == lib {print $NF; exit}')
  if [ -n "$path" ]; then preloads+=("$path"); else echo "note: $library not found, its row is skipped" >&2; fi
done

bench=build/release/bench_allocators
common=(--benchmark_min_time="$min_time" --benchmark_enable_random_interleaving=true --benchmark_out_format=json)
for round in $(seq 1 "$rounds"); do
  echo "round $round of $rounds: all allocators" >&2
  "$bench" "${common[@]}" --benchmark_out="$out/bench_allocators.glibc.$round.json" >"$out/bench_allocators.glibc.$round.log" 2>&1
  for path in "${preloads[@]}"; do
    name=$(basename "$path" | sed -E 's/^lib([a-z]+).*/\1/')
    echo "round $round of $rounds: system and malloc rows with $name preloaded" >&2
    LD_PRELOAD="$path" "$bench" "${common[@]}" --benchmark_filter='^(pair|random)/(system|malloc)/' \
      --benchmark_out="$out/bench_allocators.$name.$round.json" >"$out/bench_allocators.$name.$round.log" 2>&1
  done
done

scripts/bench_table.py "$out" | tee "$out/table.txt"
echo "results: $out" >&2
