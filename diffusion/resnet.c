#include "resnet.h"

#include <stdio.h>

#include "ops.h"

#define GN_GROUPS 32

const struct resnet_names resnet_unet_names = {"in_layers.0", "in_layers.2", "emb_layers.1", "out_layers.0",
                                               "out_layers.3", "skip_connection"};
const struct resnet_names resnet_vae_names = {"norm1", "conv1", NULL, "norm2", "conv2", "nin_shortcut"};

enum status resnet_load(struct weight_loader *l, const struct resnet_names *n, const char *base, int temb_dim,
                        enum dtype dt, float eps, struct resnet *r) {
  char name[512], sub[512], other[512];
  int64_t sh[8];
  snprintf(name, sizeof name, "%s.%s.weight", base, n->conv1);
  enum status s = weight_dims(l, name, 4, sh);
  if (s) return s;
  r->cin = (int)sh[1];
  r->cout = (int)sh[0];
  r->eps = eps;
  r->has_emb = n->emb != NULL;
#define SUB(leaf) (snprintf(sub, sizeof sub, "%s.%s", base, leaf), sub)
  if ((s = weight_load_norm(l, SUB(n->norm1), r->cin, &r->norm1_w, &r->norm1_b))) return s;
  if (r->has_emb) {
    if ((s = weight_load_conv(l, SUB(n->conv1), r->cin, r->cout, 3, dt, &r->conv1_w, NULL)) ||
        (s = weight_load_linear(l, SUB(n->emb), temb_dim, r->cout, dt, &r->emb_w, NULL)))
      return s;
    /* the conv bias and the embedding bias are both added to h: one vector */
    snprintf(name, sizeof name, "%s.%s.bias", base, n->conv1);
    snprintf(other, sizeof other, "%s.%s.bias", base, n->emb);
    if ((s = weight_load_sum(l, name, other, r->cout, &r->conv1_b))) return s;
  } else if ((s = weight_load_conv(l, SUB(n->conv1), r->cin, r->cout, 3, dt, &r->conv1_w, &r->conv1_b))) {
    return s;
  }
  if ((s = weight_load_norm(l, SUB(n->norm2), r->cout, &r->norm2_w, &r->norm2_b)) ||
      (s = weight_load_conv(l, SUB(n->conv2), r->cout, r->cout, 3, dt, &r->conv2_w, &r->conv2_b)))
    return s;
  snprintf(name, sizeof name, "%s.%s.weight", base, n->skip);
  r->has_skip = weight_exists(l, name);
  if (!r->has_skip && r->cin != r->cout)
    return status_set(STATUS_FORMAT, "%s: tensor '%s%s' is missing (channels change %d -> %d)", safetensors_path(l->st),
                      l->prefix, name, r->cin, r->cout);
  if (r->has_skip && (s = weight_load_conv(l, SUB(n->skip), r->cin, r->cout, 1, dt, &r->skip_w, &r->skip_b))) return s;
#undef SUB
  return STATUS_OK;
}

enum status resnet_forward(struct gpu *g, struct workspace *T, const struct resnet *r, const struct gpu_tensor *x,
                           const struct gpu_tensor *emb, const struct gpu_tensor *y, const struct gpu_tensor *scratch) {
  int64_t N = x->shape[0], H = x->shape[2], W = x->shape[3];
  enum status s;
  VkDeviceSize mark = workspace_mark(T);
  struct gpu_tensor h1, h2, eb;
  if ((s = workspace_alloc(T, DT_F32, 4, (int64_t[]){N, r->cin, H, W}, &h1)) ||
      (s = workspace_alloc(T, DT_F32, 4, (int64_t[]){N, r->cout, H, W}, &h2)))
    return s;
  const struct gpu_tensor *bias = &r->conv1_b; /* [cout], or per image [N, cout] with the embedding */
  if (r->has_emb) {
    VKD_ASSERT(emb);
    if ((s = workspace_alloc(T, DT_F32, 2, (int64_t[]){N, r->cout}, &eb))) return s;
    bias = &eb;
  }
  WORKSPACE_RECORD(T, op_group_norm(g, x, &r->norm1_w, &r->norm1_b, &h1, GN_GROUPS, r->eps, true));  /* silu(norm1(x)) */
  if (r->has_emb) WORKSPACE_RECORD(T, op_linear(g, emb, &r->emb_w, &r->conv1_b, &eb, ACT_NONE));     /* emb proj + biases */
  WORKSPACE_RECORD(T, op_conv2d(g, &h1, &r->conv1_w, bias, &h2, 3, 1, 1, false, scratch));           /* conv1 (+ emb) */
  WORKSPACE_RECORD(T, op_group_norm(g, &h2, &r->norm2_w, &r->norm2_b, &h2, GN_GROUPS, r->eps, true)); /* silu(norm2(h)) */
  if (r->has_skip)
    WORKSPACE_RECORD(T, op_conv2d(g, x, &r->skip_w, &r->skip_b, y, 1, 1, 0, false, scratch));        /* skip */
  else if (x->buf != y->buf || x->offset != y->offset) /* y == x: in place */
    WORKSPACE_RECORD(T, gpu_copy(g, x, y));
  WORKSPACE_RECORD(T, op_conv2d(g, &h2, &r->conv2_w, &r->conv2_b, y, 3, 1, 1, true, scratch));       /* y += conv2(h) */
  workspace_reset(T, mark);
  return STATUS_OK;
}

double resnet_macs_per_pixel(const struct resnet *r) {
  return (double)r->cout * (r->cin * 9 + r->cout * 9 + (r->has_skip ? r->cin : 0));
}
