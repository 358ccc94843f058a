/* The LoRA reader on arbitrary bytes (a .safetensors file): open (key kinds, module pairing, ranks,
 * shapes, alpha), the difference of every small module, and the short hash of the file. */
#include <stdlib.h>

#include "fuzz.h"
#include "lora.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fuzz_file("lora.safetensors", data, size);
  char hash[13];
  lora_short_hash(path, hash);
  struct lora_file *f = NULL;
  if (lora_open(path, &f)) return 0;
  for (int i = 0; i < f->n; i++) {
    const struct lora_module *m = &f->m[i];
    if (m->out * m->in > (1 << 16) || m->rank * (m->in + m->out) > (1 << 16)) continue;
    float *d = malloc((size_t)(m->out * m->in) * sizeof *d);
    if (d) lora_delta(f, m, 0.5, d);
    free(d);
  }
  lora_close(f);
  return 0;
}
