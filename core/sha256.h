/* SHA-256 (FIPS 180-4): weight digests against ../shared/ref, and the model digest in generate's manifest. */
#ifndef VKD_SHA256_H
#define VKD_SHA256_H
#include <stddef.h>
#include <stdint.h>

struct sha256 {
  uint32_t h[8];
  uint64_t len;
  uint8_t buf[64];
  size_t fill;
};
void sha256_init(struct sha256 *s);
void sha256_update(struct sha256 *s, const void *data, size_t n);
void sha256_hex(struct sha256 *s, char out[65]); /* finishes */

#endif
