#!/usr/bin/env bash
# Where lavapipe spends a vkdiffusion run's time, down to the instructions LLVM generated for the
# shaders. llvmpipe's JIT code has no symbols, so perf sees bare addresses: this script samples the
# running process, sums the samples by 4 KiB page of JIT code, and disassembles the hottest pages
# from the live process with gdb (the JIT code exists only while it runs).
# Needs perf and gdb (Debian: linux-perf, gdb) and permission to attach (root, or
# kernel.perf_event_paranoid <= 1 and ptrace allowed). Developer tooling: not part of the tests.
# Usage: tools/lavapipe_hotspots.sh [-w SECONDS_BEFORE] [-s SECONDS_SAMPLED] [-p PAGES] [-o OUT_DIR] -- CMD...
#   e.g. tools/lavapipe_hotspots.sh -w 25 -- ./build/vkdiffusion bench unet --model sd15.safetensors --size 256
# Writes OUT_DIR/pages.txt (share of the samples per JIT page, hottest first) and OUT_DIR/asm.txt
# (each hot page disassembled from its lowest sampled address); prints the page summary. The command
# is stopped once its code is disassembled (its output: OUT_DIR/command.log).
set -euo pipefail
wait_s=20 sample_s=4 pages=3 out=/tmp/vkd-hotspots
value() { # option, its value: present, and a whole number except for -o
  [ -n "${2:-}" ] || { echo "lavapipe_hotspots: $1 needs a value" >&2; exit 2; }
  [ "$1" = -o ] || [[ "$2" =~ ^[0-9]+$ ]] || { echo "lavapipe_hotspots: $1 takes a whole number, not '$2'" >&2; exit 2; }
}
while [ $# -gt 0 ]; do
  case "$1" in
    -w) value "$1" "${2:-}"; wait_s=$2; shift 2 ;;
    -s) value "$1" "${2:-}"; sample_s=$2; shift 2 ;;
    -p) value "$1" "${2:-}"; pages=$2; shift 2 ;;
    -o) value "$1" "${2:-}"; out=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "lavapipe_hotspots: unknown option '$1' (usage: see the script's header)" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "lavapipe_hotspots: no command to profile (give it after --)" >&2; exit 2; }
for t in perf gdb; do
  command -v "$t" > /dev/null || { echo "lavapipe_hotspots: '$t' is not installed" >&2; exit 2; }
done
mkdir -p "$out"
"$@" > "$out/command.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2> /dev/null || true' EXIT
sleep "$wait_s"
kill -0 "$pid" 2> /dev/null || { echo "lavapipe_hotspots: the command ended within $wait_s s; see $out/command.log" >&2; exit 1; }
timeout -s INT "$sample_s" perf record -F 2000 -p "$pid" -o "$out/perf.data" > /dev/null 2>&1 || true
# "share address" per sampled JIT address (perf names JIT code by address only).
perf report -i "$out/perf.data" --no-children --sort sym 2> /dev/null |
  awk '$1 ~ /%$/ && $3 ~ /^0x/ {sub("%", "", $1); print $1, $3}' > "$out/samples.txt"
[ -s "$out/samples.txt" ] || { echo "lavapipe_hotspots: perf recorded no JIT samples (permissions?)" >&2; exit 1; }
# Sum by page; remember each page's lowest sampled address (a real instruction boundary).
awk '{page = substr($2, 1, length($2) - 3); s[page] += $1;
      if (!(page in lo) || $2 < lo[page]) lo[page] = $2}
     END {for (p in s) printf "%.1f %s000 %s\n", s[p], p, lo[p]}' "$out/samples.txt" |
  sort -rn | head -n "$pages" > "$out/pages.txt"
: > "$out/gdb.cmd"
while read -r share page low; do
  printf 'echo ==== page %s: %s%% of the samples\\n\nx/300i %s\n' "$page" "$share" "$low" >> "$out/gdb.cmd"
done < "$out/pages.txt"
gdb -p "$pid" -batch -x "$out/gdb.cmd" 2> /dev/null | grep -E '^ |^====' > "$out/asm.txt" || true
echo "hottest JIT pages (share of all samples, page, lowest sampled address):"
cat "$out/pages.txt"
echo "disassembly: $out/asm.txt"
