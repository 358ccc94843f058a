// im2col: patches of one image for a convolution as a matrix product (see linear_tiled):
//   col[p - pixel0, (c * k + ky) * k + kx] = x[c, oy * stride - pad + ky, ox * stride - pad + kx]
// for output pixels p = oy * out_width + ox in [pixel0, pixel0 + pixels); 0 outside the image and
// in the padding columns up to `cols` (a multiple of 4). 1x1 stride 1 is a plain transpose to [HW, C].
// Bindings: 0 x f32 [.., C, H, W] (the image at x_offset), 1 col f32 [pixels, cols].
// Dispatch: (ceil(cols / WG), ceil(pixels / PIXELS), 1): each invocation fills one column for
// PIXELS consecutive pixels. On llvmpipe every work group has a fixed cost, and one pixel per
// group made this kernel a third of a VAE decode; the kernel size is a specialization constant
// so the column's (c, ky, kx) costs no run-time division.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "push.h"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint KERNEL = 3; // equals p.kernel
const uint PIXELS = 16;                        // pixels per work group (IM2COL_PIXELS in ops.c)
layout(push_constant) uniform Push { im2col_push p; };
layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) writeonly buffer Col { float col[]; };

void main() {
  uint j = gl_GlobalInvocationID.x, i0 = gl_WorkGroupID.y * PIXELS;
  if (j >= p.cols) return;
  const uint KK = KERNEL * KERNEL;
  bool real = j < p.channels * KK;
  uint c = j / KK, r = j - c * KK, ky = r / KERNEL, kx = r - ky * KERNEL;
  uint base = p.x_offset + c * p.height * p.width;
  uint pix = p.pixel0 + i0, oy = pix / p.out_width, ox = pix - oy * p.out_width;
  for (uint t = 0; t < PIXELS; t++) {
    uint i = i0 + t;
    if (i >= p.pixels) break;
    float v = 0.0;
    int iy = int(oy * p.stride + ky) - int(p.pad), ix = int(ox * p.stride + kx) - int(p.pad);
    if (real && iy >= 0 && ix >= 0 && iy < int(p.height) && ix < int(p.width)) v = x[base + uint(iy) * p.width + uint(ix)];
    col[i * p.cols + j] = v;
    if (++ox == p.out_width) ox = 0, oy++;
  }
}
