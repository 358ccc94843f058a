// im2col: patches of one image for a convolution as a matrix product (see linear_tiled):
//   col[p - pixel0, (c * k + ky) * k + kx] = x[c, oy * stride - pad + ky, ox * stride - pad + kx]
// for output pixels p = oy * out_width + ox in [pixel0, pixel0 + pixels); 0 outside the image and
// in the padding columns up to `cols` (a multiple of 4). 1x1 stride 1 is a plain transpose to [HW, C].
// Bindings: 0 x f32 [.., C, H, W] (the image at x_offset), 1 col f32 [pixels, cols]. Dispatch: (ceil(cols / WG), pixels, 1).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "push.h"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { im2col_push p; };
layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) writeonly buffer Col { float col[]; };

void main() {
  uint j = gl_GlobalInvocationID.x, i = gl_WorkGroupID.y;
  if (j >= p.cols || i >= p.pixels) return;
  uint kk = p.kernel * p.kernel;
  float v = 0.0;
  if (j < p.channels * kk) {
    uint c = j / kk, r = j % kk, ky = r / p.kernel, kx = r % p.kernel;
    uint pix = p.pixel0 + i, oy = pix / p.out_width, ox = pix % p.out_width;
    int iy = int(oy * p.stride + ky) - int(p.pad), ix = int(ox * p.stride + kx) - int(p.pad);
    if (iy >= 0 && ix >= 0 && iy < int(p.height) && ix < int(p.width))
      v = x[p.x_offset + (c * p.height + uint(iy)) * p.width + uint(ix)];
  }
  col[i * p.cols + j] = v;
}
