/* Hugging Face checkpoint (config.json + safetensors shards +
 * tokenizer.model) to GGUF with llama.cpp's keys and tensor names. */
#ifndef SLUICE_CONVERT_H
#define SLUICE_CONVERT_H

#include "kernels/types.h"
#include "util/err.h"

typedef struct sl_convert_opts {
    sl_type type;       /* type of the 2-D weight matrices; norms stay F32 */
    int verbose;        /* progress on stderr */
} sl_convert_opts;

/* Converts the checkpoint in dir (Gemma, Gemma 2, Gemma 3 text, Gemma 4 dense
 * text incl. the language model of Gemma4ForConditionalGeneration, the Gemma 4
 * assistant Gemma4AssistantForCausalLM as gemma4-assistant, Llama) into
 * a GGUF at out_path. Malformed input (bad JSON, missing or misshapen
 * tensors, truncated shards) fails with an error naming the file and field. */
int sl_convert_hf(const char *dir, const char *out_path, const sl_convert_opts *opts, sl_err *err);

#endif
