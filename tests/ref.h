/* Plain-C references of every op (the specification the shaders are tested against).
 * Accumulation in double. Shapes as in ops.h. */
#ifndef VKD_REF_H
#define VKD_REF_H
#include <stdbool.h>
#include <stdint.h>

float ref_act(float x, int act);
void ref_linear(const float *x, const float *w, const float *b, float *y, int64_t M, int64_t N, int64_t K, int act);
void ref_layernorm(const float *x, const float *g, const float *b, float *y, int64_t rows, int64_t cols, float eps);
void ref_embedding(const int32_t *ids, const float *tok, const float *pos, float *y, int64_t N, int64_t T, int64_t D);
void ref_attention(const float *q, const float *k, const float *v, float *o, int64_t N, int64_t Tq, int64_t Tk,
                   int n_head, int64_t D, bool causal, float scale);
void ref_gather_rows(const int32_t *index, const float *x, float *y, int64_t n, int64_t cols);
void ref_conv2d(const float *x, const float *w, const float *b, float *y, int64_t N, int64_t C, int64_t H, int64_t W,
                int64_t Co, int k, int stride, int pad);
void ref_group_norm(const float *x, const float *g, const float *b, float *y, int64_t N, int64_t C, int64_t P,
                    int groups, float eps, bool silu);
void ref_upsample2x(const float *x, float *y, int64_t planes, int64_t H, int64_t W);
void ref_timestep_embedding(const float *t, float *emb, int64_t N, int64_t dim, double max_period);
void ref_geglu(const float *x, float *y, int64_t rows, int64_t F);
void ref_add(const float *a, const float *b, float *y, int64_t n);
void ref_activation(const float *x, float *y, int64_t n, int act);

#endif
