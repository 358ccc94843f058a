// reduce_sum(v): the sum of v over the work group, returned to every invocation; called by all
// of them (it has barriers). VKD_SUBGROUP: subgroupAdd within each subgroup, then the subgroups'
// partial sums through shared memory (the _subgroup kernels, for devices with subgroup
// arithmetic in compute); otherwise a tree in shared memory.
#ifndef VKD_REDUCE_GLSL
#define VKD_REDUCE_GLSL

const uint WG = gl_WorkGroupSize.x;
shared float red[WG];

#ifdef VKD_SUBGROUP
float reduce_sum(float v) {
  v = subgroupAdd(v);
  if (subgroupElect()) red[gl_SubgroupID] = v;
  barrier();
  float r = 0.0;
  for (uint i = 0; i < gl_NumSubgroups; i++) r += red[i];
  barrier();
  return r;
}
#else
float reduce_sum(float v) {
  uint lid = gl_LocalInvocationID.x;
  red[lid] = v;
  barrier();
  for (uint s = WG / 2; s > 0; s >>= 1) {
    if (lid < s) red[lid] += red[lid + s];
    barrier();
  }
  float r = red[0];
  barrier();
  return r;
}
#endif

#endif
