/* The element-wise ops on every kernel path against the scalar code (and
 * the scalar code against double-precision definitions), on odd lengths and
 * on values where the formulas are delicate: large |x| for GELU, SiLU and
 * tanh, zeros and tiny rows for RMSNorm. Bounds are stated per op. */
#include <stdint.h>

#include "kernels/cpu.h"
#include "kernels/ops.h"
#include "tests/test.h"

static uint64_t rng = 0x853c49e6748fea9bull;

static float rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2 - 1);
}

#define N_MAX 1000

static void fill(float *x, int n, float scale)
{
    for (int i = 0; i < n; i++)
        x[i] = rnd() * scale;
    if (n > 8) { /* edges inside every row */
        x[0] = 0.0f;
        x[1] = -30.0f;
        x[2] = 30.0f;
        x[3] = -9.5f;
        x[n - 1] = 1e-20f;
    }
}

static double gelu_exact(double x)
{
    return 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}

static void check_elementwise(int n, sl_path path)
{
    float x[N_MAX] = {0}, u[N_MAX] = {0}, a[N_MAX] = {0}, b[N_MAX] = {0};
    fill(x, n, 6.0f);
    fill(u, n, 2.0f);
    /* GELU x up: the formulas differ (tanh vs an exp); both are within a
     * few roundings of the exact value: 1e-6 of |x up| covers them */
    memcpy(a, x, sizeof(float) * (size_t)n);
    sl_gelu_tanh_mul(a, u, n);
    int bad = 0;
    for (int i = 0; i < n; i++)
        bad += !(fabs(a[i] - gelu_exact(x[i]) * u[i]) <= 1e-6 * fabs(x[i] * u[i]) + 1e-30);
    CHECKF(bad == 0, "gelu %s n %d: %d off", sl_path_name(path), n, bad);
    memcpy(a, x, sizeof(float) * (size_t)n);
    sl_silu_mul(a, u, n);
    bad = 0;
    for (int i = 0; i < n; i++) {
        double want = x[i] / (1 + exp(-(double)x[i])) * u[i];
        bad += !(fabs(a[i] - want) <= 1e-6 * fabs(x[i] * u[i]) + 1e-30);
    }
    CHECKF(bad == 0, "silu %s n %d: %d off", sl_path_name(path), n, bad);
    /* soft-capping: cap * tanh(x / cap) within 1e-6 of cap */
    memcpy(a, x, sizeof(float) * (size_t)n);
    for (int i = 0; i < n; i++)
        a[i] *= 10;
    memcpy(b, a, sizeof(float) * (size_t)n);
    sl_softcap(a, n, 30.0f);
    bad = 0;
    for (int i = 0; i < n; i++)
        bad += !(fabs(a[i] - 30.0 * tanh(b[i] / 30.0)) <= 30.0 * 1e-6);
    CHECKF(bad == 0, "softcap %s n %d: %d off", sl_path_name(path), n, bad);
}

/* RMSNorm: both paths sum squares in double, so the scale agrees to a float
 * rounding: 2 ulps of each output. */
static void check_rmsnorm(int n, sl_path path, float scale)
{
    float x[N_MAX] = {0}, w[N_MAX] = {0}, y[N_MAX] = {0};
    fill(x, n, scale);
    for (int i = 0; i < n; i++)
        w[i] = 1.0f + rnd();
    for (int with_w = 0; with_w < 2; with_w++) {
        sl_rmsnorm(y, x, with_w ? w : NULL, n, 1e-6f);
        double ss = 0;
        for (int i = 0; i < n; i++)
            ss += (double)x[i] * x[i];
        double inv = 1.0 / sqrt(ss / n + 1e-6);
        int bad = 0;
        for (int i = 0; i < n; i++) {
            double want = x[i] * inv * (with_w ? w[i] : 1.0);
            bad += !(fabs(y[i] - want) <= 0x1p-22 * fabs(want) + 1e-37);
        }
        CHECKF(bad == 0, "rmsnorm %s n %d scale %g w %d: %d off", sl_path_name(path), n, scale,
               with_w, bad);
    }
    /* in place, as the forward pass calls it */
    memcpy(y, x, sizeof(float) * (size_t)n);
    float y2[N_MAX] = {0};
    sl_rmsnorm(y2, x, w, n, 1e-6f);
    sl_rmsnorm(y, y, w, n, 1e-6f);
    CHECK(memcmp(y, y2, sizeof(float) * (size_t)n) == 0);
}

/* argmax: first index of the largest, NaNs passed over, as the loop. */
static void check_argmax(sl_path path)
{
    float x[N_MAX];
    for (int trial = 0; trial < 40; trial++) {
        int n = 1 + (int)((rnd() + 1) * 499);
        for (int i = 0; i < n; i++)
            x[i] = rnd();
        if (trial % 4 == 1 && n > 3) /* a tie: the first one wins */
            x[n - 1] = x[n / 2] = 2.0f;
        if (trial % 4 == 2 && n > 3)
            x[n / 3] = NAN;
        if (trial % 8 == 3)
            x[0] = NAN;
        if (trial % 8 == 7)
            for (int i = 0; i < n; i++)
                x[i] = -INFINITY;
        int64_t want = 0;
        for (int i = 1; i < n; i++)
            if (x[i] > x[want])
                want = i;
        CHECKF(sl_argmax_f32(x, n) == want, "argmax %s n %d trial %d: %lld, want %lld",
               sl_path_name(path), n, trial, (long long)sl_argmax_f32(x, n), (long long)want);
    }
}

/* A vocabulary's worth of logits (the one-pass kernel keeps four chains of
 * 16 lanes and a tail): the largest value tied in other lanes and chains,
 * before and after the first, and in the tail; NaNs between. */
static void check_argmax_long(sl_path path)
{
    const int n = 262144 + 37;
    float *x = malloc(sizeof(float) * (size_t)n);
    static const int places[][3] = {{70001, 5, 262170}, {262150, 262160, 262179},
                                    {200, 17, 64 + 33}, {131072 + 48, 131072 + 16, 131072 + 32}};
    for (int trial = 0; trial < 8; trial++) {
        for (int i = 0; i < n; i++)
            x[i] = rnd();
        const int *p = places[trial % 4];
        float top = trial < 4 ? 3.0f : INFINITY;
        for (int k = 0; k < 3; k++)
            x[p[k]] = top;
        x[1000 + trial] = NAN;
        int64_t want = 0;
        for (int i = 1; i < n; i++)
            if (x[i] > x[want])
                want = i;
        CHECKF(sl_argmax_f32(x, n) == want, "argmax %s long trial %d: %lld, want %lld",
               sl_path_name(path), trial, (long long)sl_argmax_f32(x, n), (long long)want);
    }
    free(x);
}

/* RoPE on every path gives the scalar code's bits (the products and sums
 * each rounded, no fused multiply-add), NeoX and interleaved pairs, whole
 * and partial rotations (rot_dim below head_dim; half of it 16, 64, 128 and
 * 12, the vector tail), and the scalar code agrees with the rotation in
 * double to a few roundings. */
static void check_rope(sl_path path)
{
    static const int dims[][2] = {{32, 32}, {128, 128}, {256, 256}, {64, 24}};
    enum { HEADS = 3 };
    for (size_t k = 0; k < sizeof dims / sizeof dims[0]; k++) {
        int hd = dims[k][0], rd = dims[k][1], half = rd / 2;
        float x[HEADS * 256], want[HEADS * 256], got[HEADS * 256], cs[128], sn[128];
        fill(x, HEADS * hd, 3.0f);
        for (int i = 0; i < half; i++) {
            double a = 17.0 * pow(10000.0, -2.0 * i / rd);
            cs[i] = (float)cos(a);
            sn[i] = (float)sin(a);
        }
        for (int neox = 0; neox < 2; neox++) {
            memcpy(want, x, sizeof(float) * HEADS * (size_t)hd);
            memcpy(got, x, sizeof(float) * HEADS * (size_t)hd);
            sl_path_force(SL_PATH_SCALAR);
            sl_rope_apply(want, HEADS, hd, rd, cs, sn, neox);
            sl_path_force(path);
            sl_rope_apply(got, HEADS, hd, rd, cs, sn, neox);
            CHECKF(memcmp(got, want, sizeof(float) * HEADS * (size_t)hd) == 0,
                   "rope %s head_dim %d rot_dim %d neox %d: differs from scalar",
                   sl_path_name(path), hd, rd, neox);
            int bad = 0;
            for (int h = 0; h < HEADS; h++)
                for (int i = 0; i < hd; i++) {
                    int j = i < rd ? (neox ? i % half : i / 2) : -1;
                    int pa = neox ? j : 2 * j, pb = neox ? j + half : 2 * j + 1;
                    const float *v = x + h * hd;
                    double e = j < 0 ? v[i]
                               : i == pa ? (double)v[pa] * cs[j] - (double)v[pb] * sn[j]
                                         : (double)v[pa] * sn[j] + (double)v[pb] * cs[j];
                    bad += !(fabs(want[h * hd + i] - e) <= 1e-6 * (fabs(v[pa < 0 ? i : pa]) + fabs(v[pb < 0 ? i : pb])) + 1e-30);
                }
            CHECKF(bad == 0, "rope scalar head_dim %d rot_dim %d neox %d: %d off", hd, rd, neox, bad);
        }
    }
}

int main(void)
{
    static const int ns[] = {1, 7, 16, 17, 33, 255, 1000};
    for (int path = 0; path <= (int)sl_path_best(); path++) {
        CHECK(sl_path_force((sl_path)path) == 0);
        check_argmax((sl_path)path);
        check_argmax_long((sl_path)path);
        check_rope((sl_path)path);
        CHECK(sl_path_force((sl_path)path) == 0);
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            check_elementwise(ns[k], (sl_path)path);
            check_rmsnorm(ns[k], (sl_path)path, 1.0f);
            check_rmsnorm(ns[k], (sl_path)path, 1e-3f);
        }
    }
    return test_finish("test_ops");
}
