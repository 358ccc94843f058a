/* The C weight rule against ../shared/ref/goldens/weights_digest_*_seed1.json: every tensor's
 * first values, its sha256 and the sha256 over all tensors in order; plus the README's vectors. */
#include <cjson/cJSON.h>
#include <inttypes.h>

#include "sha256.h"
#include "test.h"
#include "weights.h"


static int check_digest(const char *file) {
  char path[1024];
  test_shared_path(path, sizeof path, file);
  char *text = test_read_file(path, NULL);
  if (!text) {
    char why[1100];
    snprintf(why, sizeof why, "cannot read %s (the reference data folder ../shared)", path);
    return test_skip(why);
  }
  cJSON *root = cJSON_Parse(text);
  free(text);
  CHECK(root != NULL);
  if (!root) return 1;
  uint64_t seed = (uint64_t)cJSON_GetObjectItem(root, "seed")->valuedouble;
  const cJSON *tensors = cJSON_GetObjectItem(root, "tensors");
  struct sha256 all;
  sha256_init(&all);
  int count = 0;
  for (const cJSON *t = tensors->child; t; t = t->next, count++) {
    const char *name = cJSON_GetObjectItem(t, "name")->valuestring;
    const cJSON *shape = cJSON_GetObjectItem(t, "shape");
    int nd = cJSON_GetArraySize(shape);
    int64_t dims[8], numel = 1;
    for (int i = 0; i < nd; i++) numel *= dims[i] = (int64_t)cJSON_GetArrayItem(shape, i)->valuedouble;
    float *v = malloc((size_t)(numel ? numel : 1) * sizeof *v);
    weights_fill(name, nd, dims, seed, v);
    char s_hex[32];
    snprintf(s_hex, sizeof s_hex, "0x%016" PRIx64, weights_fnv1a64(name) ^ seed);
    CHECK_MSG(!strcmp(s_hex, cJSON_GetObjectItem(t, "s")->valuestring), "%s: s %s", name, s_hex);
    CHECK_MSG(weights_rule(name, nd) == cJSON_GetObjectItem(t, "rule")->valueint, "%s: rule", name);
    const cJSON *hex = cJSON_GetObjectItem(t, "first_f32_hex");
    for (int i = 0; i < cJSON_GetArraySize(hex) && i < numel; i++) {
      uint32_t bits;
      memcpy(&bits, &v[i], 4);
      uint32_t want = (uint32_t)strtoul(cJSON_GetArrayItem(hex, i)->valuestring, NULL, 16);
      CHECK_MSG(bits == want, "%s[%d]: 0x%08x, expected 0x%08x", name, i, bits, want);
    }
    struct sha256 one;
    sha256_init(&one);
    sha256_update(&one, v, (size_t)numel * 4);
    sha256_update(&all, v, (size_t)numel * 4);
    char hexd[65];
    sha256_hex(&one, hexd);
    CHECK_MSG(!strcmp(hexd, cJSON_GetObjectItem(t, "sha256_f32")->valuestring), "%s: sha256 %s", name, hexd);
    free(v);
  }
  char hexd[65];
  sha256_hex(&all, hexd);
  const cJSON *whole = cJSON_GetObjectItem(root, "sha256_all_f32_in_order");
  if (whole) CHECK_MSG(!strcmp(hexd, whole->valuestring), "%s: sha256 of all tensors %s", file, hexd);
  printf("  %s: %d tensors checked\n", file, count);
  cJSON_Delete(root);
  return 0;
}

int main(void) {
  /* README test vectors (G = 1) */
  CHECK(weights_fnv1a64("text_model.embeddings.token_embedding.weight") == (0xb72fe613ce2fafc0ull ^ 1));
  CHECK(weights_splitmix64(0xb72fe613ce2fafc0ull) == 0xf538063580eb8fa8ull);
  CHECK(weights_splitmix64(0x0d46953d44c18e5eull) == 0x8d12548dbd12b530ull);
  /* sha256 of "abc" (FIPS 180-4 example) */
  struct sha256 s;
  char hex[65];
  sha256_init(&s);
  sha256_update(&s, "abc", 3);
  sha256_hex(&s, hex);
  CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
  const char *files[] = {"ref/goldens/weights_digest_tiny_seed1.json", "ref/goldens/weights_digest_vision_tiny_seed1.json",
                         "ref/goldens/weights_digest_unet_vae_tiny_seed1.json"};
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    int rc = check_digest(files[i]);
    if (rc) return rc;
  }
  return test_result("test_weights");
}
