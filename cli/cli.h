/* The vkdiffusion command line: one function per subcommand, option helpers. */
#ifndef VKD_CLI_H
#define VKD_CLI_H

#include <stdbool.h>
#include <signal.h>
#include <stdio.h>

#include "gpu.h"
#include "lora.h"
#include "safetensors.h"
#include "vae.h"

struct command {
  const char *name;
  const char *summary;
  int (*run)(int argc, char **argv); /* argv[0] is the subcommand name */
};

int cmd_devices(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_encode(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_unet(int argc, char **argv);
int cmd_decode(int argc, char **argv);
int cmd_vae_encode(int argc, char **argv);
int cmd_classify(int argc, char **argv);
int cmd_embed_image(int argc, char **argv);

/* SIGINT/SIGTERM remove the temporary files being written and exit (status 128 + signal); with
 * stop_cleanly (generate) the first one only sets cli_interrupted, so the work stops after its
 * current step (txt2img's cancel flag) with what is done written, and a second one exits at once. */
extern volatile int cli_interrupted;
void cli_handle_signals(bool stop_cleanly);

/* Option parsing: argv[*i] is the option; its value is argv[*i + 1] (advances *i).
 * Prints an error and returns NULL when the value is missing. */
const char *cli_value(int argc, char **argv, int *i);
bool cli_int(const char *opt, const char *s, long lo, long hi, long *out);
bool cli_double(const char *opt, const char *s, double lo, double hi, double *out); /* finite, lo..hi */
bool cli_is_help(const char *a);
/* Prints "vkdiffusion <cmd>: <message>" for a failed library call; returns 1. */
int cli_fail(const char *cmd, const char *what);
/* The gpu for a command: --device (index, -1 for default). Prints errors. */
struct gpu *cli_gpu(const char *cmd, int device);
/* The model when --model is absent: $VKDIFFUSION_MODEL, else the demo model (models/demo/demo.safetensors)
 * installed beside the executable (<exe>/../share/vkdiffusion), in the source tree it was built from,
 * or in the configured install folder. NULL after printing where it looked. */
const char *cli_default_model(const char *cmd);
/* mkdir -p: every missing folder of path (0755); 0, or -1 with errno set. */
int cli_mkdirs(const char *path);
/* Validation messages seen: printed, and turned into a failing exit code; destroys g. */
int cli_finish_gpu(struct gpu *g, int rc);
/* The same without destroying g (a device owned by a model): the profile and validation count. */
int cli_report_gpu(struct gpu *g, int rc);

/* Options of the networks-one-at-a-time commands (unet, decode): --model, --in, -o, --config,
 * --precision, --device, --vae-tiling. Returns -1 to go on, else the exit code (help: 0). */
/* --lora FILE[:STRENGTH] (repeatable) and --lora-strict, on every model command */
#define CLI_MAX_LORAS 64
struct cli_loras {
  struct lora_spec v[CLI_MAX_LORAS]; /* paths malloc'd */
  int n;
  bool strict;
};
/* Takes --lora's value (false after printing a usage error). */
bool cli_lora_arg(const char *cmd, const char *val, struct cli_loras *l);
void cli_loras_free(struct cli_loras *l);
/* <lora:NAME> -> DIR/NAME.safetensors (DIR: lora_dir, else loras/ beside the model; NAME itself when
 * it ends in .safetensors); false when that is not a file (out: where it looked). */
bool cli_lora_find(const char *lora_dir, const char *model_path, const char *name, char *out, size_t n);
/* One line on stderr about a merge: modules merged, tensors rewritten, and the keys skipped. */
void cli_lora_note(const char *cmd, const struct lora_report *rep, bool quiet);

struct part_opts {
  const char *model, *in, *out, *config;
  struct cli_loras loras; /* unet */
  const char *taesd_decoder, *taesd_encoder; /* decode --vae-decoder, vae-encode --vae-encoder: TAESD, no --model */
  bool fp16;
  int device;
  enum vae_tiling tiling;
};
int cli_parse_part(int argc, char **argv, struct part_opts *o, const char *usage);


#endif
