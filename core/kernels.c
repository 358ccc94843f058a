#include "kernels.h"

#include "gpu.h"
#include "push.h"

/* kernel_includes.inc: one `#include "<name>.spv.h"` per shader, each defining spv_<name>[] */
#include "kernel_includes.inc"

/* Each kernel's contract: tensor arguments (bindings 0.. in order, storage or texel) and its
 * push-constant struct. A shader without a line here fails the build (the count below); a push
 * struct that does not fit the one pipeline layout's range fails it too. */
#define KERNEL_SIGNATURES(X)                 \
  X(activation, 2, eltwise_push)             \
  X(add, 3, eltwise_push)                    \
  X(attention, 4, attention_push)            \
  X(attention_vec4, 4, attention_push)       \
  X(attention_flash, 4, attention_push)      \
  X(concat, 3, concat_push)                  \
  X(embedding, 4, embedding_push)            \
  X(gather_rows, 3, gather_push)             \
  X(geglu, 2, geglu_push)                    \
  X(group_norm, 4, groupnorm_push)           \
  X(group_norm_small, 4, groupnorm_push)     \
  X(group_norm_subgroup, 4, groupnorm_push)  \
  X(im2col, 2, im2col_push)                  \
  X(layernorm, 4, layernorm_push)            \
  X(layernorm_rows, 4, layernorm_push)       \
  X(layernorm_subgroup, 4, layernorm_push)   \
  X(linear, 4, linear_push)                  \
  X(linear_tiled, 4, linear_push)            \
  X(linear_shared, 4, linear_push)           \
  X(peak, 1, peak_push)                      \
  X(peak16, 1, peak_push)                    \
  X(timestep_embedding, 2, timestep_push)    \
  X(upsample, 2, upsample_push)              \
  X(wino_filter, 2, wino_push)               \
  X(wino_input, 2, wino_push)                \
  X(wino_output, 3, wino_push)

#define COUNT(name, bindings, push) +1
_Static_assert(0 KERNEL_SIGNATURES(COUNT) == KERNEL_COUNT,
               "every shaders/*.comp needs its line in KERNEL_SIGNATURES (core/kernels.c)");
#undef COUNT
#define FITS(name, bindings, push)                                                                 \
  _Static_assert(sizeof(struct push) <= GPU_PUSH_SIZE && sizeof(struct push) % 4 == 0,             \
                 #push " must be whole 32-bit words within GPU_PUSH_SIZE");                        \
  _Static_assert((bindings) > 0 && (bindings) <= GPU_STORAGE_BINDINGS + GPU_TEXEL_BINDINGS, #name);
KERNEL_SIGNATURES(FITS)
#undef FITS

static const struct kernel_code table[KERNEL_COUNT] = {
#define ENTRY(name, bindings, push) \
  [KERNEL_##name] = {#name, spv_##name, sizeof spv_##name, bindings, sizeof(struct push)},
    KERNEL_SIGNATURES(ENTRY)
#undef ENTRY
};

const struct kernel_code *kernel_code(enum kernel_id id) {
  return (unsigned)id < KERNEL_COUNT ? &table[id] : NULL;
}
