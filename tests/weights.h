/* The deterministic random-weight rule of ../shared/ref/README.md (splitmix64 keyed by the
 * tensor name), so tests can build real-size checkpoints without storing them. */
#ifndef VKD_WEIGHTS_H
#define VKD_WEIGHTS_H
#include <stdint.h>

uint64_t weights_fnv1a64(const char *s);
uint64_t weights_splitmix64(uint64_t x);
int weights_rule(const char *name, int ndim);
/* Fills out[numel] with the values of tensor `name` (canonical name, no checkpoint prefix). */
void weights_fill(const char *name, int ndim, const int64_t *shape, uint64_t seed, float *out);

#endif
