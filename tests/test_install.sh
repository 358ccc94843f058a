#!/usr/bin/env bash
# cmake --install into a temporary prefix, then build install_example.c with pkg-config against it
# and run it on a tiny checkpoint: the public header, library and .pc file work as installed; the
# installed vkdiffusion generates with the installed demo model when --model is absent.
set -euo pipefail
build=$1 example=$2 make_ckpt=$3 shared=$4 extra_flags=${5:-}
if [ ! -d "$shared/clip" ]; then
  if [ -n "${CI:-}" ]; then echo "FAIL: $shared/clip is missing"; exit 1; fi
  echo "SKIP: $shared/clip is missing"; exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" > /dev/null
pc=$(find "$tmp/prefix" -name textenc.pc | head -n 1)
[ -n "$pc" ] || { echo "FAIL: no textenc.pc installed"; exit 1; }
export PKG_CONFIG_PATH=$(dirname "$pc")
cc -std=c11 -Wall -Werror $extra_flags -o "$tmp/example" "$example" $(pkg-config --cflags --libs textenc)
"$make_ckpt" clip tiny -o "$tmp/tiny.safetensors"
echo '{"text_encoder": {"num_attention_heads": 4}}' > "$tmp/config.json"
LD_LIBRARY_PATH=$(dirname "$(find "$tmp/prefix" -name 'libtextenc.so' | head -n 1)") \
  "$tmp/example" "$tmp/tiny.safetensors" "$shared/clip" "$tmp/config.json" | tee "$tmp/out.txt"
grep -q "width 64, chunks 1" "$tmp/out.txt"
# the installed generator finds the installed demo model (and its tokenizer) without --model
env -u VKDIFFUSION_MODEL "$tmp/prefix/bin/vkdiffusion" generate --prompt "a red circle" --steps 2 --seed 1 \
  -o "$tmp/gen" 2> "$tmp/gen.txt" || { cat "$tmp/gen.txt"; exit 1; }
grep -q "using $tmp/prefix/bin/../share/vkdiffusion/models/demo/demo.safetensors" "$tmp/gen.txt" ||
  { echo "FAIL: the installed demo model was not the default:"; cat "$tmp/gen.txt"; exit 1; }
ls "$tmp/gen"/*.png > /dev/null
echo "test_install: passed"
