#include "kernels/matmul.h"

#include <omp.h>
#include <stdbool.h>

#include "kernels/cpu.h"
#include "kernels/matmul_internal.h"
#include "kernels/quant.h"

/* Rows a thread takes at a time: a multiple of every tile's row count, and
 * small enough that the weights of a chunk stay in L2 while a prefill batch
 * streams past them. */
#define ROW_CHUNK 16
/* Below this many multiply-adds a team costs more than it saves. */
#define PARALLEL_MIN_MACS (1 << 18)
/* Tokens the reference decodes a weight block for at once. */
#define REF_TOKENS 4

/* ---- scalar reference ---- */

/* Each (row, token) dot is summed in double, element by element in order, so
 * it does not depend on how tokens are grouped. */
static void ref_rows(sl_type wtype, const uint8_t *w, size_t row_bytes, int64_t o0, int64_t o1,
                     int64_t n_in, const float *x, int64_t n_tok, float *y, int64_t ldy)
{
    int64_t be = sl_type_block_elems(wtype);
    size_t bb = sl_type_block_bytes(wtype);
    int64_t step = be > 1 ? be : SL_QK_K; /* float types: dequantise a few at a time */
    float buf[SL_QK_K];
    for (int64_t o = o0; o < o1; o++) {
        const uint8_t *row = w + (size_t)o * row_bytes;
        for (int64_t t0 = 0; t0 < n_tok; t0 += REF_TOKENS) {
            int nt = n_tok - t0 < REF_TOKENS ? (int)(n_tok - t0) : REF_TOKENS;
            double acc[REF_TOKENS] = {0};
            for (int64_t i = 0; i < n_in; i += step) {
                int64_t cnt = n_in - i < step ? n_in - i : step;
                sl_dequantize_row(wtype, row + (size_t)(i / be) * bb, buf, cnt);
                for (int t = 0; t < nt; t++) {
                    const float *xt = x + (t0 + t) * n_in + i;
                    for (int64_t k = 0; k < cnt; k++)
                        acc[t] += (double)buf[k] * xt[k];
                }
            }
            for (int t = 0; t < nt; t++)
                y[(t0 + t) * ldy + o] = (float)acc[t];
        }
    }
}

/* ---- SIMD driver ---- */

static void simd_rows(const sl_mm_kernel *k, const uint8_t *w, size_t row_bytes, int64_t o0,
                      int64_t o1, int64_t n_in, const float *x, int64_t n_tok, float *y,
                      int64_t ldy)
{
    int64_t t = 0;
    for (; t + k->batch_toks <= n_tok; t += k->batch_toks) {
        const float *xt = x + t * n_in;
        float *yt = y + t * ldy;
        int64_t o = o0;
        for (; o + k->batch_rows <= o1; o += k->batch_rows)
            k->batch(w + (size_t)o * row_bytes, row_bytes, n_in, xt, yt + o, ldy);
        for (; o < o1; o++)
            k->batch_row(w + (size_t)o * row_bytes, row_bytes, n_in, xt, yt + o, ldy);
    }
    for (; t < n_tok; t++) {
        const float *xt = x + t * n_in;
        float *yt = y + t * ldy;
        int64_t o = o0;
        for (; o + k->single_rows <= o1; o += k->single_rows)
            k->single(w + (size_t)o * row_bytes, row_bytes, n_in, xt, yt + o, ldy);
        for (; o < o1; o++)
            k->one(w + (size_t)o * row_bytes, row_bytes, n_in, xt, yt + o, ldy);
    }
}

static const sl_mm_kernel *kernel_for(sl_path path, sl_type wtype)
{
#if defined(__x86_64__)
    if (path == SL_PATH_AVX512)
        return sl_mm_kernel_avx512(wtype);
    if (path == SL_PATH_AVX2)
        return sl_mm_kernel_avx2(wtype);
#else
    (void)path;
    (void)wtype;
#endif
    return NULL;
}

/* Row chunks are independent and each (row, token) is computed whole by one
 * thread, so the thread count never changes a bit of y. */
static void run(const sl_mm_kernel *k, sl_type wtype, const void *w, int64_t n_out, int64_t n_in,
                const float *x, int64_t n_tok, float *y, int64_t ldy)
{
    if (n_out <= 0 || n_tok <= 0)
        return;
    size_t row_bytes = sl_row_bytes(wtype, n_in);
    int64_t n_chunks = (n_out + ROW_CHUNK - 1) / ROW_CHUNK;
    bool team = n_chunks > 1 && n_out * n_in * n_tok >= PARALLEL_MIN_MACS && !omp_in_parallel();
#pragma omp parallel for schedule(static) if (team)
    for (int64_t c = 0; c < n_chunks; c++) {
        int64_t o0 = c * ROW_CHUNK;
        int64_t o1 = o0 + ROW_CHUNK < n_out ? o0 + ROW_CHUNK : n_out;
        if (k)
            simd_rows(k, w, row_bytes, o0, o1, n_in, x, n_tok, y, ldy);
        else
            ref_rows(wtype, w, row_bytes, o0, o1, n_in, x, n_tok, y, ldy);
    }
}

void sl_matmul(sl_type wtype, const void *w, int64_t n_out, int64_t n_in, const float *x,
               int64_t n_tok, float *y, int64_t ldy)
{
    run(kernel_for(sl_path_active(), wtype), wtype, w, n_out, n_in, x, n_tok, y, ldy);
}

void sl_matmul_ref(sl_type wtype, const void *w, int64_t n_out, int64_t n_in, const float *x,
                   int64_t n_tok, float *y, int64_t ldy)
{
    run(NULL, wtype, w, n_out, n_in, x, n_tok, y, ldy);
}

const char *sl_matmul_path_name(sl_type wtype)
{
    sl_path path = sl_path_active();
    return kernel_for(path, wtype) ? sl_path_name(path) : sl_path_name(SL_PATH_SCALAR);
}
