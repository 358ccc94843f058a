/* Zero-shot classification with CLIP (OpenAI), the one classifier every caller uses (classify,
 * generate --score-with, the demo model's test):
 *   class embeddings from caption templates (prompt ensembling: the L2-normalised mean of the
 *   L2-normalised text embeddings, renormalised), then
 *   probs = softmax(exp(logit_scale) * l2n(image) . class) over the classes;
 *   the CLIP score of an image and a text is 100 * cos(image embedding, text embedding).
 *
 *   struct zeroshot *z;
 *   zeroshot_create(&opt, &z);                    // opt.model_path: an HF CLIPModel file
 *   zeroshot_set_labels(z, labels, C, NULL, 0);   // NULL templates: OpenAI's 7
 *   zeroshot_classify(z, pixels, N, probs, NULL); // pixels [N, 3, S, S] (clip_preprocess), probs [N, C]
 *   zeroshot_destroy(z);
 *
 * logit_scale is the checkpoint's `logit_scale`, else ln 100 (where every released CLIP's learned
 * temperature ends up: OpenAI clamp it at 100). Any number of labels. */
#ifndef VKD_ZEROSHOT_H
#define VKD_ZEROSHOT_H

#include "status.h"
#include "textenc.h"

extern const char *const zeroshot_default_templates[7]; /* OpenAI's 7 forward-selected templates */
#define ZEROSHOT_DEFAULT_LOGIT_SCALE 4.605170185988091     /* ln 100 */

struct zeroshot;

/* Both towers of opt->model_path (text tower literal: no prompt syntax), on opt->device when set. */
enum status zeroshot_create(const struct textenc_options *opt, struct zeroshot **out);
void zeroshot_destroy(struct zeroshot *z); /* accepts NULL */
int zeroshot_image_size(const struct zeroshot *z); /* S: the side of preprocessed pixels */
int zeroshot_dim(const struct zeroshot *z);        /* P: the shared embedding width */
float zeroshot_logit_scale(const struct zeroshot *z);
int zeroshot_labels(const struct zeroshot *z);     /* C of the last zeroshot_set_labels */

/* Class embeddings of every label x template caption (templates NULL: the 7 default ones). */
enum status zeroshot_set_labels(struct zeroshot *z, const char *const *labels, int C, const char *const *templates,
                                int T);
/* embeds [N, P] of preprocessed pixels [N, 3, S, S] (projected, not normalised) */
enum status zeroshot_embed_images(struct zeroshot *z, const float *pixels, int N, float *embeds);
/* probs and logits [N, C] (either may be NULL) against the labels */
enum status zeroshot_classify(struct zeroshot *z, const float *pixels, int N, float *probs, float *logits);
/* 100 * cos(image, text) for an 8-bit RGB image (preprocessed here) and a caption */
enum status zeroshot_score(struct zeroshot *z, const unsigned char *rgb, int w, int h, const char *text, double *score);

/* The maths alone, on a text encoder and embeddings the caller has:
 * out [C, P]: class embeddings (every label x template caption encoded as one batch). */
enum status zeroshot_class_embeds(struct textenc *te, const char *const *labels, int C, const char *const *templates,
                                  int T, float *out);
/* logits, probs [N, C] (either may be NULL); any C */
enum status zeroshot_probs(const float *image_embeds, int N, const float *class_embeds, int C, int P, float logit_scale,
                           float *logits, float *probs);

#endif
