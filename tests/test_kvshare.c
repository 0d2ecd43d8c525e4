/* KV-sharing sources and the cuts a pipeline may make. */
#include "model/kvshare.h"
#include "tests/test.h"

/* 12 layers, 5 and 11 global, the rest sliding (Gemma's 5:1 pattern). */
static void test_sources(void)
{
    bool swa[12];
    for (int i = 0; i < 12; i++) swa[i] = (i % 6) != 5;
    /* n_own = 6: layer 4 sliding, layer 5 global */
    int src[12];
    sl_err err = {0};
    CHECK(kvshare_sources(12, 6, swa, src, &err) == 0);
    for (int i = 0; i < 6; i++) CHECK(src[i] == -1);
    for (int i = 6; i < 12; i++) CHECKF(src[i] == (swa[i] ? 4 : 5), "layer %d src %d", i, src[i]);

    CHECK(kvshare_sources(12, 0, swa, src, &err) == 0);
    for (int i = 0; i < 12; i++) CHECK(src[i] == -1);

    CHECK(kvshare_sources(12, 11, swa, src, &err) == -1);
    CHECK_ERR_HAS(err, "at least 2");
    /* n_own = 5: layer 3 sliding is fine for sliding sharers, but layer 4
     * is sliding too, so a global sharer would read a sliding cache. */
    CHECK(kvshare_sources(12, 7, swa, src, &err) == -1);
    CHECK_ERR_HAS(err, "global");
}

static void test_cuts(void)
{
    bool swa[12];
    for (int i = 0; i < 12; i++) swa[i] = (i % 6) != 5;
    int src[12];
    sl_err err = {0};
    CHECK(kvshare_sources(12, 6, swa, src, &err) == 0);
    /* Cuts at or before layer 4 keep 4..11 together; cuts after it split a group. */
    for (int cut = 1; cut <= 4; cut++) CHECKF(kvshare_check_cut(12, src, cut, &err) == 0, "%d", cut);
    for (int cut = 5; cut < 12; cut++) {
        err.msg[0] = 0;
        CHECKF(kvshare_check_cut(12, src, cut, &err) == -1, "cut %d", cut);
        CHECK_ERR_HAS(err, "reuses the KV cache of layer");
    }
    CHECK(kvshare_check_cut(12, src, 5, &err) == -1);
    CHECK_ERR_HAS(err, "layer 6 reuses the KV cache of layer 4");
    CHECK(kvshare_check_cut(12, src, 0, &err) == -1);
    CHECK(kvshare_check_cut(12, src, 12, &err) == -1);
}

int main(void)
{
    test_sources();
    test_cuts();
    return test_finish("test_kvshare");
}
