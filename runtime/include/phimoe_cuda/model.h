// model.h - the entry points that phimoec generates for one model, --target sm_XX.
#ifndef PHIMOE_CUDA_MODEL_H
#define PHIMOE_CUDA_MODEL_H

#include "phimoe_cuda/runtime.h"

// One forward pass over n tokens (n <= phimoe_model_info.max_tokens): ids and positions are
// device arrays; keys and values go into ctx's KV cache and the logits of the last
// `logit_rows` tokens to the device buffer `logits` ([logit_rows, vocab]). Kernels are
// queued on ctx.stream; nothing synchronises.
void phimoe_forward(phimoe_cuda::Context &ctx, const int32_t *ids, const int32_t *positions,
                    int32_t n, int32_t logit_rows, float *logits);

extern const phimoe_rt::ModelInfo phimoe_model_info;

#endif // PHIMOE_CUDA_MODEL_H
