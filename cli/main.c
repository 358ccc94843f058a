/* vkdiffusion: CLIP text encoding and latent diffusion on Vulkan. Subcommand dispatch: one
 * cmd_<name>.c per command (cli.h). */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct command commands[] = {
    {"generate", "text to image: prompt files in, PNGs out", cmd_generate},
    {"devices", "list the Vulkan devices", cmd_devices},
    {"tokenize", "CLIP token ids of texts (JSON, one line per 77-token chunk)", cmd_tokenize},
    {"encode", "CLIP conditioning embeddings of prompts into safetensors", cmd_encode},
    {"unet", "one U-Net evaluation: x, t, context in; eps out (safetensors)", cmd_unet},
    {"decode", "VAE decode: latent in; PNGs or an image tensor out", cmd_decode},
    {"vae-encode", "VAE encode: an image in; mean, logvar and the sampler latent out", cmd_vae_encode},
    {"classify", "zero-shot image classification with CLIP", cmd_classify},
    {"embed-image", "CLIP image embeddings into safetensors", cmd_embed_image},
    {"info", "a checkpoint's components, or a PNG's generation parameters", cmd_info},
    {"bench", "measure speed: ops | tokenize | encode | unet | vae | generate | classify", cmd_bench},
};

static void usage(FILE *f) {
  fprintf(f, "usage: vkdiffusion <command> [options]   (vkdiffusion <command> --help)\n\ncommands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
    fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf(f, "\nenvironment: VKDIFFUSION_DEVICE=N picks a device, VKDIFFUSION_VALIDATION=1 enables the Khronos\n"
             "validation layer, VKDIFFUSION_PROFILE=1 prints GPU time per kernel.\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (cli_is_help(argv[1])) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("vkdiffusion 0.1.0\n");
    return 0;
  }
  cli_handle_signals(false);
  for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
    if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
  fprintf(stderr, "vkdiffusion: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}
