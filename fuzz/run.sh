#!/usr/bin/env bash
# Runs every libFuzzer harness of a VKD_FUZZ build on its seed corpus for a fixed time and fails
# on any crash, leak, sanitizer report or timeout. New inputs go to a scratch corpus, never into
# fuzz/corpus/. Usage: fuzz/run.sh BUILD_DIR SECONDS_EACH [TARGET...]
#   CI smoke:       fuzz/run.sh build-fuzz 60
#   long campaign:  fuzz/run.sh build-fuzz 3600 fuzz_image   (FUZZ_WORK=dir keeps the corpus and
#                   crash files; FUZZ_JOBS=N runs N workers of each target; TMPDIR=/dev/shm keeps
#                   it CPU-bound: every input is written to a file under $TMPDIR)
set -uo pipefail
build=$1 seconds=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "$build" && pwd)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_safetensors fuzz_prompt fuzz_job_file fuzz_image fuzz_config fuzz_resume fuzz_lora)
work=${FUZZ_WORK:-$(mktemp -d)}
jobs=${FUZZ_JOBS:-1}
failed=0
for t in "${targets[@]}"; do
  bin="$build/fuzz/$t"
  corpus="$work/$t"
  mkdir -p "$corpus" "$work/artifacts"
  cp -n "$here/corpus/${t#fuzz_}"/* "$corpus"/ 2>/dev/null || true
  log="$work/$t.log"
  # -timeout: an input slower than 10 s is a hang; -rss_limit_mb: a leak or blow-up is a failure
  parallel=()
  [ "$jobs" -gt 1 ] && parallel=(-jobs="$jobs" -workers="$jobs") # workers log to fuzz-N.log in the work folder
  (cd "$work" && exec "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${parallel[@]}" \
    -artifact_prefix="$work/artifacts/$t-" "$corpus") > "$log" 2>&1
  rc=$?
  if [ "$jobs" -gt 1 ]; then cat "$work"/fuzz-*.log >> "$log" 2> /dev/null; rm -f "$work"/fuzz-*.log; fi
  execs=$(grep -h 'stat::number_of_executed_units' "$log" | awk '{s += $2} END {print s + 0}')
  if [ $rc -ne 0 ] || grep -q -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:' "$log"; then
    echo "FAIL $t (exit $rc, $execs executions): $(grep -m1 -E 'ERROR|runtime error|SUMMARY' "$log")"
    echo "  log: $log; reproducers: $(ls "$work/artifacts" | grep "^$t-" | tr '\n' ' ')"
    failed=$((failed + 1))
  else
    echo "ok   $t: $execs executions in ${seconds} s, corpus $(ls "$corpus" | wc -l) inputs"
  fi
done
echo "fuzz targets: $(( ${#targets[@]} - failed )) clean, $failed failed"
[ $failed -eq 0 ]
