/* Zero-shot classification with CLIP (OpenAI): class embeddings from caption templates (prompt
 * ensembling: the L2-normalised mean of the L2-normalised text embeddings, renormalised), then
 * probs = softmax(exp(logit_scale) * l2n(image) . l2n(class)) over the classes. */
#ifndef VKD_ZEROSHOT_H
#define VKD_ZEROSHOT_H

#include "status.h"
#include "textenc.h"

extern const char *const zeroshot_default_templates[7]; /* OpenAI's 7 forward-selected templates */

/* out [C, P]: every label x template caption encoded as one batch (projected text embeddings). */
enum status zeroshot_class_embeds(struct textenc *te, const char *const *labels, int C, const char *const *templates,
                                  int T, float *out);
/* logits, probs [N, C] (either may be NULL) */
void zeroshot_probs(const float *image_embeds, int N, const float *class_embeds, int C, int P, float logit_scale,
                    float *logits, float *probs);

#endif
