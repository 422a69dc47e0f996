// model.h - the entry points that phimoec generates for one model.
#ifndef PHIMOE_RT_MODEL_H
#define PHIMOE_RT_MODEL_H

#include "phimoe_rt/runtime.h"

// One forward pass over n tokens (n <= phimoe_model_info.max_tokens) at the given
// positions, writing the keys and values into ctx.cache and the logits of the
// last `logit_rows` tokens to `logits` ([logit_rows, vocab]).
void phimoe_forward(phimoe_rt::Context &ctx, const int32_t *ids, const int32_t *positions,
                    int32_t n, int32_t logit_rows, float *logits);

extern const phimoe_rt::ModelInfo phimoe_model_info;

#endif // PHIMOE_RT_MODEL_H
