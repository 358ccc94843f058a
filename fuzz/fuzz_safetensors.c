/* The safetensors reader on arbitrary bytes: open (header, offsets, dtypes, shapes), then read every
 * small tensor in each conversion, and the checked input reader the commands use. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct safetensors *st = NULL;
  if (safetensors_open(fuzz_file("in.safetensors", data, size), &st)) return 0;
  for (int i = 0; i < safetensors_count(st); i++) {
    const struct st_tensor *t = safetensors_at(st, i);
    if (t->numel > (1 << 16)) continue;
    float *f = malloc((size_t)t->numel * sizeof *f + 4);
    uint16_t *h = malloc((size_t)t->numel * sizeof *h + 2);
    int32_t *n = malloc((size_t)t->numel * sizeof *n + 4);
    if (f && h && n) {
      safetensors_read_f32(st, t, f);
      safetensors_read_f16(st, t, h);
      safetensors_read_i32(st, t, n);
    }
    free(f), free(h), free(n);
    float *v = NULL;
    int64_t got[4];
    if (t->numel <= (1 << 16) && !safetensors_read_input(st, t->name, t->ndim < 4 ? t->ndim : 4,
                                                         (int64_t[]){-1, -1, -1, -1}, "anything", got, &v))
      free(v);
  }
  safetensors_metadata(st, "modelspec.resolution");
  safetensors_close(st);
  return 0;
}
