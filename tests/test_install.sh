#!/usr/bin/env bash
# cmake --install into a temporary prefix, then build install_example.c with pkg-config against it
# and run it on a tiny checkpoint: the public header, library and .pc file work as installed; the
# installed vkdiffusion generates with the installed demo model when --model is absent.
set -euo pipefail
build=$1 example=$2 make_ckpt=$3 shared=$4 extra_flags=${5:-} example2=${6:-$(dirname "$2")/install_txt2img.c}
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
"$make_ckpt" sdxl-text tiny -o "$tmp/sdxl.safetensors"
echo '{"text_encoder": {"num_attention_heads": 4}, "text_encoder_2": {"num_attention_heads": 4}}' > "$tmp/config.json"
LD_LIBRARY_PATH=$(dirname "$(find "$tmp/prefix" -name 'libtextenc.so' | head -n 1)") \
  "$tmp/example" "$tmp/tiny.safetensors" "$shared/clip" "$tmp/config.json" "$tmp/sdxl.safetensors" | tee "$tmp/out.txt"
grep -q "width 64, chunks 1" "$tmp/out.txt"
# SDXL conditioning: 64 + 64 context, pooled 64, y = 64 + 1536; the uncond pooled part is 0, emb(crop top 0) starts with cos(0) = 1
grep -q "sdxl: towers 2, context 128, pooled 64, y 1600, uncond y\[0\] 0, y\[576\] 1" "$tmp/out.txt"
# the same program linked with the static libtextenc.a (and Libs.private): the same output
static_lib=$(find "$tmp/prefix" -name 'libtextenc.a' | head -n 1)
[ -n "$static_lib" ] || { echo "FAIL: no libtextenc.a installed"; exit 1; }
cc -std=c11 -Wall -Werror $extra_flags -o "$tmp/example_static" "$example" $(pkg-config --cflags textenc) "$static_lib" \
  $(pkg-config --static --libs-only-l textenc | sed 's/-ltextenc//')
"$tmp/example_static" "$tmp/tiny.safetensors" "$shared/clip" "$tmp/config.json" "$tmp/sdxl.safetensors" > "$tmp/out_static.txt"
cmp "$tmp/out.txt" "$tmp/out_static.txt" || { echo "FAIL: the static build printed something else"; exit 1; }
# libvkdiffusion: txt2img as a library call, from the installed header and .pc file, on the
# installed demo model; it exports its own API only (textenc and core stay inside)
cc -std=c11 -Wall -Werror $extra_flags -o "$tmp/txt2img" "$example2" $(pkg-config --cflags --libs vkdiffusion)
lib=$(find "$tmp/prefix" -name 'libvkdiffusion.so' | head -n 1)
[ -n "$lib" ] || { echo "FAIL: no libvkdiffusion.so installed"; exit 1; }
exported=$(nm -D --defined-only "$lib" | awk '{print $3}' | sed 's/@.*//' | grep -v '^VKDIFFUSION_0$' | sort | tr '\n' ' ')
[ "$exported" = "sd_last_error sd_model_create sd_model_default_options sd_model_destroy sd_model_get_info sd_model_set_loras txt2img txt2img_default_params " ] ||
  { echo "FAIL: libvkdiffusion exports: $exported"; exit 1; }
demo=$(find "$tmp/prefix" -path '*models/demo/demo.safetensors' | head -n 1)
LD_LIBRARY_PATH=$(dirname "$lib") "$tmp/txt2img" "$demo" "$tmp/one.ppm" | tee "$tmp/out2.txt"
grep -q "64x64 image" "$tmp/out2.txt"
[ "$(head -c 2 "$tmp/one.ppm")" = "P6" ] && [ "$(stat -c %s "$tmp/one.ppm")" -eq $((13 + 64 * 64 * 3)) ] ||
  { echo "FAIL: the txt2img example wrote no 64x64 image"; exit 1; }
# the installed generator finds the installed demo model (and its tokenizer) without --model
env -u VKDIFFUSION_MODEL "$tmp/prefix/bin/vkdiffusion" generate --prompt "a red circle" --steps 2 --seed 1 \
  -o "$tmp/gen" 2> "$tmp/gen.txt" || { cat "$tmp/gen.txt"; exit 1; }
grep -q "using $tmp/prefix/bin/../share/vkdiffusion/models/demo/demo.safetensors" "$tmp/gen.txt" ||
  { echo "FAIL: the installed demo model was not the default:"; cat "$tmp/gen.txt"; exit 1; }
ls "$tmp/gen"/*.png > /dev/null
echo "test_install: passed"
