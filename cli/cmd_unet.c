/* vkdiffusion unet: one U-Net evaluation from a file, for checking the network alone or plugging it
 * into other pipelines. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "unet.h"
#include "unet_config.h"

/* what one command may ask of the device: 8192-pixel sides, 64 images, 64 prompt chunks */
#define UNET_CLI_MAX_SIDE 1024
#define UNET_CLI_MAX_BATCH 64
#define UNET_CLI_MAX_TOKENS (77 * 64)

int cmd_unet(int argc, char **argv) {
  struct part_opts o;
  int rc = cli_parse_part(argc, argv, &o,
                 "usage: vkdiffusion unet --model CKPT --in IN.safetensors -o OUT.safetensors [--config FILE]\n"
                 "                        [--precision fp16|fp32] [--device N] [--lora FILE[:STRENGTH]]... [--lora-strict]\n\n"
                 "IN holds x [N,4,h,w], t [N] (timesteps, fractional allowed), context [N,T,width] and, for\n"
                 "SDXL checkpoints (label_emb), y [N,2816]; each checked against the model (channels, context\n"
                 "width, y width, sizes) before use;\n"
                 "OUT gets eps [N,4,h,w]. --config: a JSON object whose `unet` member holds diffusers keys\n"
                 "(num_attention_heads or attention_head_dim, an int or one per level).\n"
                 "--lora: a LoRA merged into the U-Net first (kohya lora_unet_* with diffusers' or ldm's names, LoCon,\n"
                 "or PEFT unet.*), W += STRENGTH (default 1) * alpha / rank * up . down; repeatable. Keys that match no\n"
                 "tensor are skipped with a warning (--lora-strict: an error).\n");
  if (rc >= 0) return rc;
  struct safetensors *in = NULL, *ck = NULL;
  struct gpu *g = NULL;
  struct unet *u = NULL;
  float *x = NULL, *t = NULL, *ctx = NULL, *y = NULL, *eps = NULL;
  rc = 1;
  struct unet_options uo = {.fp16 = o.fp16};
  if (safetensors_open(o.in, &in) || safetensors_open(o.model, &ck) || unet_config_heads(o.config, uo.heads, &uo.heads_all) ||
      !(g = cli_gpu("unet", o.device)) || unet_load(g, ck, &uo, &u)) {
    if (g || !ck) cli_fail("unet", NULL);
    goto done;
  }
  if (o.loras.n) { /* merged into the U-Net alone (the text encoder's keys are for `encode`) */
    struct lora_target lt = unet_lora_target(u);
    struct lora_state *ls = NULL;
    struct lora_report rep;
    enum status ls_s = lora_state_create(g, &lt, 1, &ls);
    if (!ls_s) ls_s = lora_state_apply(ls, o.loras.v, o.loras.n, o.loras.strict, &rep);
    lora_state_destroy(ls);
    if (ls_s) {
      cli_fail("unet", NULL);
      goto done;
    }
    cli_lora_note("unet", &rep, false);
  }
  /* every input checked against the model before anything reads it: dtype, rank, each dimension */
  struct unet_info info;
  unet_get_info(u, &info);
  int align = 1 << (info.levels - 1);
  int64_t xs[4], ts[1], cs[3];
  char want[200];
  snprintf(want, sizeof want, "[N, %d, H, W] (H and W multiples of %d, at most %d; N at most %d)", info.in_channels,
           align, UNET_CLI_MAX_SIDE, UNET_CLI_MAX_BATCH);
  if (safetensors_read_input(in, "x", 4, (int64_t[]){-1, info.in_channels, -1, -1}, want, xs, &x)) goto fail;
  if (xs[0] > UNET_CLI_MAX_BATCH || xs[2] % align || xs[3] % align || xs[2] > UNET_CLI_MAX_SIDE || xs[3] > UNET_CLI_MAX_SIDE) {
    fprintf(stderr, "vkdiffusion unet: %s: tensor 'x' is [%lld, %lld, %lld, %lld]; expected %s\n", o.in, (long long)xs[0],
            (long long)xs[1], (long long)xs[2], (long long)xs[3], want);
    goto done;
  }
  snprintf(want, sizeof want, "[%lld] (one timestep per image of x)", (long long)xs[0]);
  if (safetensors_read_input(in, "t", 1, (int64_t[]){xs[0]}, want, ts, &t)) goto fail;
  snprintf(want, sizeof want, "[%lld, T, %d] (T at most %d tokens; the model's context width %d)", (long long)xs[0],
           info.context_dim, UNET_CLI_MAX_TOKENS, info.context_dim);
  if (safetensors_read_input(in, "context", 3, (int64_t[]){xs[0], -1, info.context_dim}, want, cs, &ctx)) goto fail;
  if (cs[1] > UNET_CLI_MAX_TOKENS) {
    fprintf(stderr, "vkdiffusion unet: %s: tensor 'context' has %lld tokens; expected %s\n", o.in, (long long)cs[1], want);
    goto done;
  }
  if (info.adm_in_channels) { /* SDXL: the vector y of every image */
    int64_t ys[2];
    snprintf(want, sizeof want, "[%lld, %d] (SDXL's vector y: pooled text embedding ++ size embeddings, one per image "
             "of x)", (long long)xs[0], info.adm_in_channels);
    if (safetensors_read_input(in, "y", 2, (int64_t[]){xs[0], info.adm_in_channels}, want, ys, &y)) goto fail;
  }
  eps = malloc((size_t)xs[0] * info.out_channels * xs[2] * xs[3] * sizeof *eps);
  if (!eps || unet_forward(u, x, t, ctx, y, (int)xs[0], (int)xs[2], (int)xs[3], (int)cs[1], eps, NULL)) goto fail;
  struct st_writer *w;
  if (!st_writer_create(&w)) {
    st_writer_add(w, "eps", ST_F32, 4, (int64_t[]){xs[0], info.out_channels, xs[2], xs[3]}, eps);
    rc = st_writer_finish(w, o.out) ? cli_fail("unet", NULL) : 0;
    st_writer_destroy(w);
  }
  goto done;
fail:
  cli_fail("unet", NULL);
done:
  cli_loras_free(&o.loras);
  free(x), free(t), free(ctx), free(y), free(eps);
  unet_destroy(u);
  safetensors_close(ck);
  safetensors_close(in);
  return cli_finish_gpu(g, rc);
}

