#define _DEFAULT_SOURCE /* readlink, sigaction */
#include <errno.h>
#include <limits.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "fileio.h"
#include "job_file.h"
#include "safetensors.h"

volatile int cli_interrupted;
static volatile sig_atomic_t cancellable;

static void on_signal(int sig) {
  if (cancellable && !cli_interrupted) { /* the command stops cleanly after its current step */
    cli_interrupted = sig;
    return;
  }
  file_tmp_remove_all(); /* async-signal-safe: unlink only */
  _exit(128 + sig);
}

void cli_handle_signals(bool stop_cleanly) {
  cancellable = stop_cleanly;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

const char *cli_value(int argc, char **argv, int *i) {
  if (*i + 1 >= argc) {
    fprintf(stderr, "vkdiffusion %s: option %s needs a value\n", argv[0], argv[*i]);
    return NULL;
  }
  return argv[++*i];
}

bool cli_int(const char *opt, const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) {
    fprintf(stderr, "vkdiffusion: %s expects an integer from %ld to %ld, got '%s'\n", opt, lo, hi, s);
    return false;
  }
  *out = v;
  return true;
}

bool cli_double(const char *opt, const char *s, double lo, double hi, double *out) {
  char *end;
  double v = strtod(s, &end);
  if (end == s || *end || !(v >= lo && v <= hi)) {
    fprintf(stderr, "vkdiffusion: %s expects a number from %g to %g, got '%s'\n", opt, lo, hi, s);
    return false;
  }
  *out = v;
  return true;
}

bool cli_is_help(const char *a) { return !strcmp(a, "--help") || !strcmp(a, "-h"); }

int cli_fail(const char *cmd, const char *what) {
  if (what)
    fprintf(stderr, "vkdiffusion %s: %s: %s\n", cmd, what, status_message());
  else
    fprintf(stderr, "vkdiffusion %s: %s\n", cmd, status_message());
  return 1;
}

struct gpu *cli_gpu(const char *cmd, int device) {
  struct gpu *g = NULL;
  struct gpu_options o = {.device_index = device, .validation = -1, .profile = -1};
  if (gpu_create(&o, &g)) {
    cli_fail(cmd, NULL);
    return NULL;
  }
  return g;
}

int cli_mkdirs(const char *path) {
  char p[4096];
  if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p) return errno = ENAMETOOLONG, -1;
  for (char *s = p + 1; *s; s++)
    if (*s == '/') {
      *s = 0;
      if (mkdir(p, 0755) != 0 && errno != EEXIST) return -1;
      *s = '/';
    }
  return mkdir(p, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

int cli_report_gpu(struct gpu *g, int rc) {
  if (!g) return rc;
  if (gpu_profiling(g)) gpu_profile_print(g, stderr);
  const char *last;
  int n = gpu_validation_count(g, &last);
  if (n) {
    fprintf(stderr, "vkdiffusion: %d Vulkan validation message(s); last: %s\n", n, last ? last : "?");
    return rc ? rc : 1;
  }
  return rc;
}

int cli_finish_gpu(struct gpu *g, int rc) {
  rc = cli_report_gpu(g, rc);
  gpu_destroy(g);
  return rc;
}

/* models/demo/demo.safetensors under a data folder, if readable */
static bool demo_in(const char *dir, char *buf, size_t n, char *looked, size_t *lo, size_t ln) {
  snprintf(buf, n, "%s/models/demo/demo.safetensors", dir);
  if (access(buf, R_OK) == 0) return true;
  *lo += (size_t)snprintf(looked + *lo, *lo < ln ? ln - *lo : 0, "%s%s", *lo ? ", " : "", buf);
  return false;
}

const char *cli_default_model(const char *cmd) {
  static char path[PATH_MAX + 64];
  char looked[4 * PATH_MAX], exe[PATH_MAX], dir[PATH_MAX + 32];
  size_t lo = 0;
  const char *env = getenv("VKDIFFUSION_MODEL");
  if (env && *env) return env;
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) { /* an installed binary: <prefix>/bin/vkdiffusion -> <prefix>/share/vkdiffusion */
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    snprintf(dir, sizeof dir, "%s/../share/vkdiffusion", exe);
    if (demo_in(dir, path, sizeof path, looked, &lo, sizeof looked)) return path;
  }
#ifdef VKD_SOURCE_DIR /* the source tree this binary was built from */
  if (demo_in(VKD_SOURCE_DIR, path, sizeof path, looked, &lo, sizeof looked)) return path;
#endif
#ifdef VKD_DATADIR
  if (demo_in(VKD_DATADIR, path, sizeof path, looked, &lo, sizeof looked)) return path;
#endif
  fprintf(stderr, "vkdiffusion %s: no --model given and no default model found ($VKDIFFUSION_MODEL unset; looked in: %s)\n",
          cmd, lo ? looked : "nowhere");
  return NULL;
}

/* --- the networks-one-at-a-time commands (unet, decode) --- */

bool cli_lora_arg(const char *cmd, const char *val, struct cli_loras *l) {
  char *path;
  double s;
  if (l->n == CLI_MAX_LORAS) {
    fprintf(stderr, "vkdiffusion %s: more than %d --lora\n", cmd, CLI_MAX_LORAS);
    return false;
  }
  if (!job_lora_parse(val, &path, &s)) {
    fprintf(stderr, "vkdiffusion %s: --lora %s: expected FILE or FILE:STRENGTH (a number from -100 to 100)\n", cmd, val);
    return false;
  }
  l->v[l->n++] = (struct lora_spec){.path = path, .strength = s};
  return true;
}

bool cli_lora_find(const char *lora_dir, const char *model_path, const char *name, char *out, size_t n) {
  char dir[4096];
  if (lora_dir) {
    snprintf(dir, sizeof dir, "%s", lora_dir);
  } else { /* loras/ beside the model file (or inside a diffusers folder's parent) */
    const char *slash = model_path ? strrchr(model_path, '/') : NULL;
    struct stat mb;
    bool folder = model_path && stat(model_path, &mb) == 0 && S_ISDIR(mb.st_mode);
    if (folder) snprintf(dir, sizeof dir, "%s/../loras", model_path);
    else if (slash) snprintf(dir, sizeof dir, "%.*s/loras", (int)(slash - model_path), model_path);
    else snprintf(dir, sizeof dir, "loras");
  }
  size_t len = strlen(name);
  bool has_ext = len > 12 && !strcmp(name + len - 12, ".safetensors");
  snprintf(out, n, "%s/%s%s", dir, name, has_ext ? "" : ".safetensors");
  struct stat sb;
  return stat(out, &sb) == 0 && S_ISREG(sb.st_mode);
}

void cli_loras_free(struct cli_loras *l) {
  for (int i = 0; i < l->n; i++) free((char *)l->v[i].path);
  l->n = 0;
}

void cli_lora_note(const char *cmd, const struct lora_report *rep, bool quiet) {
  if (rep->unmatched || rep->unsupported)
    fprintf(stderr, "vkdiffusion %s: warning: %d LoRA key(s) match no tensor of the model and %d are of kinds not merged: "
            "skipped (--lora-strict refuses them)%s%s\n", cmd, rep->unmatched, rep->unsupported,
            rep->first_unmatched[0] ? "; first: " : "", rep->first_unmatched);
  if (!quiet)
    fprintf(stderr, "vkdiffusion %s: LoRA: %d of %d modules merged, %d device tensors rewritten%s\n", cmd, rep->applied,
            rep->modules, rep->rewritten, rep->other ? " (modules for networks not loaded here ignored)" : "");
}

static int parse_part(int argc, char **argv, struct part_opts *o, const char *usage) {
  *o = (struct part_opts){.fp16 = true, .device = -1, .tiling = VAE_TILING_AUTO};
  long v;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val;
    if (cli_is_help(a)) {
      printf("%s", usage);
      return 0;
    }
    if (!strcmp(a, "--lora-strict") && !strcmp(argv[0], "unet")) {
      o->loras.strict = true;
      continue;
    }
    if (!(val = cli_value(argc, argv, &i))) return 2;
    if (!strcmp(a, "--lora") && !strcmp(argv[0], "unet")) {
      if (!cli_lora_arg(argv[0], val, &o->loras)) return 2;
    } else if (!strcmp(a, "--model")) o->model = val;
    else if (!strcmp(a, "--in")) o->in = val;
    else if (!strcmp(a, "-o") || !strcmp(a, "--output")) o->out = val;
    else if (!strcmp(a, "--config")) o->config = val;
    else if (!strcmp(a, "--vae-decoder")) o->taesd_decoder = val;
    else if (!strcmp(a, "--vae-encoder")) o->taesd_encoder = val;
    else if (!strcmp(a, "--precision") && (!strcmp(val, "fp16") || !strcmp(val, "fp32"))) o->fp16 = !strcmp(val, "fp16");
    else if (!strcmp(a, "--device") && cli_int(a, val, 0, 64, &v)) o->device = (int)v;
    else if (!strcmp(a, "--vae-tiling") && (!strcmp(val, "auto") || !strcmp(val, "on") || !strcmp(val, "off")))
      o->tiling = !strcmp(val, "on") ? VAE_TILING_ON : !strcmp(val, "off") ? VAE_TILING_OFF : VAE_TILING_AUTO;
    else {
      fprintf(stderr, "vkdiffusion %s: bad option '%s %s' (see --help)\n", argv[0], a, val);
      return 2;
    }
  }
  bool taesd = (o->taesd_decoder && !strcmp(argv[0], "decode")) || (o->taesd_encoder && !strcmp(argv[0], "vae-encode"));
  if ((!o->model && !taesd) || !o->in || !o->out) {
    fprintf(stderr, "vkdiffusion %s: %s, --in and -o are required (see --help)\n", argv[0],
            !strcmp(argv[0], "decode") ? "--model (or --vae-decoder)" : !strcmp(argv[0], "vae-encode") ? "--model (or --vae-encoder)" : "--model");
    return 2;
  }
  if ((o->taesd_decoder && strcmp(argv[0], "decode")) || (o->taesd_encoder && strcmp(argv[0], "vae-encode"))) {
    fprintf(stderr, "vkdiffusion %s: %s does not apply here\n", argv[0], o->taesd_decoder ? "--vae-decoder" : "--vae-encoder");
    return 2;
  }
  return -1;
}

int cli_parse_part(int argc, char **argv, struct part_opts *o, const char *usage) {
  int rc = parse_part(argc, argv, o, usage);
  if (rc >= 0) cli_loras_free(&o->loras); /* help or a usage error: nothing runs */
  return rc;
}


