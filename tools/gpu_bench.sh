#!/usr/bin/env bash
# The GPU checks of issue 31, as one short script for a machine with a real GPU (run from the
# repository root, with ../shared beside it; about 5-8 minutes on a discrete GPU):
#   1. build (Release), and the kernel tests with the device's own variants and with the GPU ones;
#   2. `vkdiffusion bench ops`: each kernel variant's GFLOP/s (tiled and shared GEMM, vec4 and flash
#      attention, im2col, Winograd and implicit-GEMM convolutions) against the device's measured fp32 peak; the
#      target is the GPU's own GEMM (linear_shared) at >= 50% of it;
#   3. SD 1.5 (random weights of the real shapes, fp16) U-Net step at 512x512 with CFG (batch 2),
#      as it/s, to set beside the same card's published stable-diffusion.cpp Vulkan figures;
#   4. a 512x512 20-step generate with --progress: load, pipelines, phases.
# Usage: tools/gpu_bench.sh [OUT_DIR]   (results: OUT_DIR/gpu_bench.txt; default /tmp/vkd-gpu-bench)
set -euo pipefail
out=${1:-/tmp/vkd-gpu-bench}
mkdir -p "$out"
log="$out/gpu_bench.txt"
exec > >(tee "$log") 2>&1
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
shared=$(cd ../shared && pwd)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j"$(nproc)" > /dev/null
echo "== devices"; ./build/vkdiffusion devices
echo "== kernel tests: the device's variants, then the GPU variants forced"
(cd build && ctest -R 'test_ops|gpu_kernels' --output-on-failure)
echo "== bench ops"; ./build/vkdiffusion bench ops
ckpt="$out/sd15_f16.safetensors"
[ -f "$ckpt" ] || ./build/tests/make_checkpoint sd "$shared/ref/goldens/weights_digest_unet_vae_sd15_seed1.json" vitl14 \
  --dtype f16 -o "$ckpt"
echo "== SD 1.5 U-Net step, 512x512, CFG batch 2 (Winograd where it applies, then implicit GEMM only, then im2col only)"
./build/vkdiffusion bench unet --model "$ckpt" --size 512 --batch 2 --runs 3
VKDIFFUSION_CONV=implicit ./build/vkdiffusion bench unet --model "$ckpt" --size 512 --batch 2 --runs 2
VKDIFFUSION_CONV=im2col ./build/vkdiffusion bench unet --model "$ckpt" --size 512 --batch 2 --runs 2
echo "== SD 1.5 VAE decode 512x512"
./build/vkdiffusion bench vae --model "$ckpt" --size 512 --runs 2
echo "== SD 1.5 generate 512x512, 20 steps"
./build/vkdiffusion generate --model "$ckpt" --tokenizer "$shared/clip" --prompt "a photograph of a lighthouse" \
  --width 512 --height 512 --steps 20 --progress --no-manifest --overwrite -o "$out/images"
echo "results: $log"
