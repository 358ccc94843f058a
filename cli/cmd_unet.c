/* vkdiffusion unet: one U-Net evaluation from a file, for checking the network alone or plugging it
 * into other pipelines. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "unet.h"
#include "unet_config.h"

int cmd_unet(int argc, char **argv) {
  struct part_opts o;
  int rc = cli_parse_part(argc, argv, &o,
                 "usage: vkdiffusion unet --model CKPT --in IN.safetensors -o OUT.safetensors [--config FILE]\n"
                 "                        [--precision fp16|fp32] [--device N]\n\n"
                 "IN holds x [N,4,h,w], t [N] (timesteps, fractional allowed) and context [N,T,width];\n"
                 "OUT gets eps [N,4,h,w]. --config: a JSON object whose `unet` member holds diffusers keys\n"
                 "(num_attention_heads or attention_head_dim, an int or one per level).\n");
  if (rc >= 0) return rc;
  struct safetensors *in = NULL, *ck = NULL;
  struct gpu *g = NULL;
  struct unet *u = NULL;
  float *x = NULL, *t = NULL, *ctx = NULL, *eps = NULL;
  const struct st_tensor *xt, *tt, *ct;
  rc = 1;
  if (safetensors_open(o.in, &in)) {
    cli_fail("unet", NULL);
    goto done;
  }
  if (!(x = cli_read_input(in, "x", 4, &xt)) || !(t = cli_read_input(in, "t", 1, &tt)) || !(ctx = cli_read_input(in, "context", 3, &ct)))
    goto done;
  if (tt->shape[0] != xt->shape[0] || ct->shape[0] != xt->shape[0]) {
    fprintf(stderr, "vkdiffusion unet: %s: x, t and context must have the same batch size\n", o.in);
    goto done;
  }
  struct unet_options uo = {.fp16 = o.fp16};
  if (safetensors_open(o.model, &ck) || unet_config_heads(o.config, uo.heads, &uo.heads_all) || !(g = cli_gpu("unet", o.device)) ||
      unet_load(g, ck, &uo, &u)) {
    if (g || !ck) cli_fail("unet", NULL);
    goto done;
  }
  eps = malloc((size_t)xt->numel * sizeof *eps);
  if (!eps || unet_forward(u, x, t, ctx, (int)xt->shape[0], (int)xt->shape[2], (int)xt->shape[3], (int)ct->shape[1], eps, NULL)) {
    cli_fail("unet", NULL);
    goto done;
  }
  struct st_writer *w;
  if (!st_writer_create(&w)) {
    st_writer_add(w, "eps", ST_F32, 4, xt->shape, eps);
    rc = st_writer_finish(w, o.out) ? cli_fail("unet", NULL) : 0;
    st_writer_destroy(w);
  }
done:
  free(x), free(t), free(ctx), free(eps);
  unet_destroy(u);
  safetensors_close(ck);
  safetensors_close(in);
  return cli_finish_gpu(g, rc);
}

