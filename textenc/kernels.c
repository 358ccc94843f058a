#include "kernels.h"

/* kernel_includes.inc: one `#include "<name>.spv.h"` per shader, each defining spv_<name>[] */
#include "kernel_includes.inc"

static const struct kernel_code table[KERNEL_COUNT] = {
#define KERNEL(name) {#name, spv_##name, sizeof spv_##name},
#include "kernel_list.inc"
#undef KERNEL
};

const struct kernel_code *kernel_code(enum kernel_id id) {
  return (unsigned)id < KERNEL_COUNT ? &table[id] : NULL;
}
