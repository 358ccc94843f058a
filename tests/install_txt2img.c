/* Built by test_install.sh against the installed vkdiffusion.h and libvkdiffusion (pkg-config):
 * one image from a model, written as a PPM. Usage: install_txt2img MODEL OUT.ppm */
#include <stdio.h>
#include <stdlib.h>
#include <vkdiffusion.h>

int main(int argc, char **argv) {
  if (argc != 3) return 2;
  struct sd_model_options mo = sd_model_default_options();
  mo.model_path = argv[1];
  struct sd_model *m;
  if (sd_model_create(&mo, &m) != SD_OK) return fprintf(stderr, "%s\n", sd_last_error()), 1;
  struct sd_model_info info;
  sd_model_get_info(m, &info);
  struct txt2img_params p = txt2img_default_params();
  p.prompt = "a large red circle on a blue background";
  p.seed = 1;
  p.steps = 8;
  p.cfg_scale = 5;
  p.width = info.native_width ? info.native_width : 512;
  p.height = info.native_height ? info.native_height : 512;
  unsigned char *rgb = malloc((size_t)p.width * p.height * 3);
  int rc = rgb ? txt2img(m, &p, rgb, NULL) : SD_OUT_OF_MEMORY;
  FILE *f = rc ? NULL : fopen(argv[2], "wb");
  if (f) fprintf(f, "P6\n%d %d\n255\n", p.width, p.height), fwrite(rgb, 3, (size_t)p.width * p.height, f), fclose(f);
  if (rc) fprintf(stderr, "%s\n", sd_last_error());
  else printf("%dx%d image, first pixel %d %d %d\n", p.width, p.height, rgb[0], rgb[1], rgb[2]);
  free(rgb);
  sd_model_destroy(m);
  return rc ? 1 : 0;
}
