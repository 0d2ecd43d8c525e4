/* Dequantises raw blocks for test_ref.py: `dequant_rows TYPE N` reads the
 * bytes of N elements of GGML type id TYPE on stdin and writes N float32
 * values on stdout, through sl_dequantize_row and, for the same bytes taken
 * as N/COLS rows, sl_dequantize_range over odd spans (both must agree). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/quant.h"

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: dequant_rows TYPE N\n");
        return 2;
    }
    int type = atoi(argv[1]);
    long long n = atoll(argv[2]);
    if (!sl_type_supported(type) || n <= 0 || n % sl_type_block_elems((sl_type)type)) {
        fprintf(stderr, "dequant_rows: bad type %d or element count %lld\n", type, n);
        return 2;
    }
    size_t bytes = sl_row_bytes((sl_type)type, n);
    unsigned char *raw = malloc(bytes);
    float *out = malloc(sizeof(float) * (size_t)n), *part = malloc(sizeof(float) * (size_t)n);
    if (!raw || !out || !part || fread(raw, 1, bytes, stdin) != bytes) {
        fprintf(stderr, "dequant_rows: short input\n");
        return 2;
    }
    sl_dequantize_row((sl_type)type, raw, out, n);
    /* the same values through ranges that start and end mid-block */
    for (long long i = 0; i < n;) {
        long long take = 7 + (i % 61);
        if (take > n - i)
            take = n - i;
        sl_dequantize_range((sl_type)type, raw, part + i, i, take);
        i += take;
    }
    if (memcmp(out, part, sizeof(float) * (size_t)n) != 0) {
        fprintf(stderr, "dequant_rows: sl_dequantize_range differs from sl_dequantize_row\n");
        return 1;
    }
    fwrite(out, sizeof(float), (size_t)n, stdout);
    free(raw);
    free(out);
    free(part);
    return 0;
}
