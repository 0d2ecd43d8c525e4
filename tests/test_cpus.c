/* CPU sets and how the processes of one pipeline on one host share the
 * CPUs: list syntax both ways, the cgroup quota's worth, the default thread
 * count never above the affinity mask, and pl_cores_resolve's split (disjoint,
 * the config's own `cores:` first, errors naming node and CPUs). */
#include "pipeline/config.h"
#include "pipeline/cores.h"
#include "tests/test.h"
#include "util/cpus.h"

static sl_cpuset set_of(const char *text)
{
    sl_cpuset s = {0};
    sl_err e;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", text);
    char *rest = NULL;
    for (char *item = strtok_r(buf, ",", &rest); item; item = strtok_r(NULL, ",", &rest))
        CHECKF(sl_cpuset_add_text(&s, item, &e) == 0, "%s", e.msg);
    return s;
}

static const char *fmt(const sl_cpuset *s)
{
    static char buf[4][128];
    static int next;
    next = (next + 1) % 4;
    return sl_cpuset_format(s, buf[next], sizeof buf[next]);
}

static void test_sets(void)
{
    sl_cpuset s = set_of("0,2-4,9,10,1023");
    CHECK(sl_cpuset_count(&s) == 7);
    CHECKF(strcmp(fmt(&s), "0,2-4,9-10,1023") == 0, "%s", fmt(&s));
    sl_cpuset none = {0};
    CHECK(strcmp(fmt(&none), "none") == 0);
    sl_cpuset t = set_of("3-9"), both = sl_cpuset_and(&s, &t);
    CHECKF(strcmp(fmt(&both), "3-4,9") == 0, "%s", fmt(&both));
    sl_err e;
    const char *bad[] = {"", "x", "1-", "-1", "1024", "1-1024", "99999999999999999999", "1 ", "2-1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECKF(sl_cpuset_add_text(&t, bad[i], &e) == -1, "'%s' accepted", bad[i]);
    CHECK_ERR_HAS(e, "range '2-1' runs backwards");
}

static void test_quota_and_default(void)
{
    CHECK(sl_cpus_quota_v2("max 100000\n") == 0);
    CHECK(sl_cpus_quota_v2("150000 100000\n") == 2);
    CHECK(sl_cpus_quota_v2("100000 100000") == 1);
    CHECK(sl_cpus_quota_v2("50000 100000") == 1);
    CHECK(sl_cpus_quota_v2("garbage") == 0);
    CHECK(sl_cpus_quota_v2("-5 100000") == 0);
    CHECK(sl_cpus_quota_v2("5 0") == 0);
    sl_cpuset mine;
    sl_err e;
    CHECKF(sl_cpus_allowed(&mine, &e) == 0, "%s", e.msg);
    int n = sl_cpus_available();
    CHECKF(n >= 1 && n <= sl_cpuset_count(&mine), "%d threads for %d CPUs", n, sl_cpuset_count(&mine));
    /* a narrower mask narrows the default: what a spawned worker sees */
    sl_cpuset one = {0};
    for (int c = 0; c < SL_CPUS_MAX; c++)
        if (sl_cpuset_has(&mine, c)) {
            sl_cpuset_add(&one, c);
            break;
        }
    CHECK(sl_cpus_bind(&one) == 0);
    CHECK(sl_cpus_available() == 1);
    CHECK(sl_cpus_bind(&mine) == 0);
    CHECK(sl_cpus_available() == n);
    /* single-process commands: -t, then the user's OMP_NUM_THREADS, then the CPUs */
    CHECK(sl_cpus_threads(3) == 3);
    setenv("OMP_NUM_THREADS", "5", 1);
    CHECK(sl_cpus_threads(0) == 5);
    setenv("OMP_NUM_THREADS", "lots", 1);
    CHECK(sl_cpus_threads(0) == n);
    unsetenv("OMP_NUM_THREADS");
    CHECK(sl_cpus_threads(0) == n);
}

/* A coordinator and spawned workers p1..pN-1, all on this host, each with
 * a layers stage (head and sample with the last). */
static void procs(pl_config *c, int n)
{
    pl_config_default(c, "m.gguf", 6);
    c->n_nodes = n;
    c->n_stages = 1;
    for (int i = 0; i < n; i++) {
        if (i) {
            snprintf(c->nodes[i].name, sizeof c->nodes[i].name, "p%d", i);
            snprintf(c->nodes[i].address, sizeof c->nodes[i].address, "ipc:///tmp/p%d", i);
            c->nodes[i].spawn = true;
        }
        pl_stage *st = &c->stages[c->n_stages++];
        *st = (pl_stage){.kind = PL_STAGE_LAYERS, .node = i, .l0 = i, .l1 = i + 1, .numa = -1};
    }
    c->stages[n - 1].l1 = 6;
    c->stages[c->n_stages++] = (pl_stage){.kind = PL_STAGE_HEAD, .node = n - 1, .numa = -1};
    c->stages[c->n_stages++] = (pl_stage){.kind = PL_STAGE_SAMPLE, .node = n - 1, .numa = -1};
}

/* The run-time policy: shared unless `cores:` say otherwise. */
static void test_share(void)
{
    pl_config c;
    sl_err e = {{0}};
    char warn[256];
    sl_cpuset four = set_of("0-3");

    procs(&c, 3); /* no cores: every process keeps all four */
    CHECKF(pl_cores_share(&c, &four, warn, sizeof warn, &e) == 0, "%s", e.msg);
    for (int i = 0; i < 3; i++)
        CHECKF(sl_cpuset_count(&c.nodes[i].cores) == 0, "node %d bound to %s", i,
               fmt(&c.nodes[i].cores));
    CHECK(warn[0] == '\0');

    procs(&c, 3); /* the config's own first; the others share the rest */
    c.nodes[0].cores = set_of("3");
    CHECKF(pl_cores_share(&c, &four, warn, sizeof warn, &e) == 0, "%s", e.msg);
    CHECKF(strcmp(fmt(&c.nodes[0].cores), "3") == 0 && strcmp(fmt(&c.nodes[1].cores), "0-2") == 0 &&
           strcmp(fmt(&c.nodes[2].cores), "0-2") == 0, "%s | %s | %s", fmt(&c.nodes[0].cores),
           fmt(&c.nodes[1].cores), fmt(&c.nodes[2].cores));

    sl_cpuset one = set_of("5");
    procs(&c, 3); /* fewer CPUs than processes: shared, no warning */
    CHECK(pl_cores_share(&c, &one, warn, sizeof warn, &e) == 0 && warn[0] == '\0');

    procs(&c, 2); /* more threads than the CPUs: said with the numbers */
    c.stages[2].threads = 5;
    CHECK(pl_cores_share(&c, &four, warn, sizeof warn, &e) == 0);
    CHECKF(strstr(warn, "node 'p1' runs 5 threads in its stages on 4 CPU(s) (0-3)") != NULL, "%s", warn);

    procs(&c, 2);
    c.nodes[1].cores = four;
    CHECK(pl_cores_share(&c, &four, warn, sizeof warn, &e) == -1);
    CHECK_ERR_HAS(e, "take every CPU this process may use (0-3) and leave none for node 'local'");
    procs(&c, 2);
    c.nodes[1].cores = set_of("2-5");
    CHECK(pl_cores_share(&c, &four, warn, sizeof warn, &e) == -1);
    CHECK_ERR_HAS(e, "nodes[1].cores: node 'p1' asks for CPUs 2-5, but this process may use only 0-3");
}

static void test_resolve(void)
{
    pl_config c;
    sl_err e = {{0}};
    char warn[256];
    sl_cpuset four = set_of("0-3");

    procs(&c, 2);
    CHECKF(pl_cores_resolve(&c, &four, warn, sizeof warn, &e) == 0, "%s", e.msg);
    CHECKF(strcmp(fmt(&c.nodes[0].cores), "0-1") == 0 && strcmp(fmt(&c.nodes[1].cores), "2-3") == 0,
           "%s | %s", fmt(&c.nodes[0].cores), fmt(&c.nodes[1].cores));
    CHECK(warn[0] == '\0');

    procs(&c, 3); /* 4 CPUs for 3: one of them gets two, none shares */
    CHECKF(pl_cores_resolve(&c, &four, warn, sizeof warn, &e) == 0, "%s", e.msg);
    CHECKF(strcmp(fmt(&c.nodes[0].cores), "0-1") == 0 && strcmp(fmt(&c.nodes[1].cores), "2") == 0 &&
           strcmp(fmt(&c.nodes[2].cores), "3") == 0, "%s | %s | %s", fmt(&c.nodes[0].cores),
           fmt(&c.nodes[1].cores), fmt(&c.nodes[2].cores));

    procs(&c, 2); /* the config's own first; the rest for the others */
    c.nodes[0].cores = set_of("3");
    CHECKF(pl_cores_resolve(&c, &four, warn, sizeof warn, &e) == 0, "%s", e.msg);
    CHECKF(strcmp(fmt(&c.nodes[0].cores), "3") == 0 && strcmp(fmt(&c.nodes[1].cores), "0-2") == 0,
           "%s | %s", fmt(&c.nodes[0].cores), fmt(&c.nodes[1].cores));

    procs(&c, 2); /* a coordinator with only embed: unbound, the worker keeps every CPU */
    c.stages[1].node = 1;
    CHECK(pl_cores_resolve(&c, &four, warn, sizeof warn, &e) == 0);
    CHECK(sl_cpuset_count(&c.nodes[0].cores) == 0 && sl_cpuset_count(&c.nodes[1].cores) == 0);

    procs(&c, 1); /* one process: left as it is */
    CHECK(pl_cores_resolve(&c, &four, warn, sizeof warn, &e) == 0 && sl_cpuset_count(&c.nodes[0].cores) == 0);

    sl_cpuset one = set_of("5");
    procs(&c, 3); /* fewer CPUs than processes: unbound, with a warning saying so */
    CHECK(pl_cores_resolve(&c, &one, warn, sizeof warn, &e) == 0);
    CHECK(sl_cpuset_count(&c.nodes[0].cores) == 0 && sl_cpuset_count(&c.nodes[2].cores) == 0);
    CHECKF(strstr(warn, "3 processes of this pipeline share 1 CPU(s) (5)") != NULL, "%s", warn);

    procs(&c, 2); /* more threads than the share: said with the numbers */
    c.stages[2].threads = 3;
    CHECK(pl_cores_resolve(&c, &four, warn, sizeof warn, &e) == 0);
    CHECKF(strstr(warn, "node 'p1' runs 3 threads in its stages on 2 CPU(s) (2-3)") != NULL, "%s", warn);
    procs(&c, 1);
    c.stages[1].threads = 5;
    CHECK(pl_cores_resolve(&c, &four, warn, sizeof warn, &e) == 0);
    CHECKF(strstr(warn, "node 'local' runs 5 threads in its stages on 4 CPU(s) (0-3)") != NULL, "%s", warn);

    procs(&c, 2);
    c.nodes[1].cores = set_of("2-5");
    CHECK(pl_cores_resolve(&c, &four, warn, sizeof warn, &e) == -1);
    CHECK_ERR_HAS(e, "nodes[1].cores: node 'p1' asks for CPUs 2-5, but this process may use only 0-3");
    procs(&c, 2);
    c.nodes[1].cores = four;
    CHECK(pl_cores_resolve(&c, &four, warn, sizeof warn, &e) == -1);
    CHECK_ERR_HAS(e, "take every CPU this process may use (0-3) and leave none for node 'local'");
    procs(&c, 2);
    c.nodes[1].spawn = false;
    snprintf(c.nodes[1].address, sizeof c.nodes[1].address, "tcp://10.0.0.2:7100");
    c.nodes[1].cores = set_of("0");
    CHECK(pl_cores_resolve(&c, &four, warn, sizeof warn, &e) == -1);
    CHECK_ERR_HAS(e, "node 'p1' is a worker this coordinator does not start");
    CHECK_ERR_HAS(e, "taskset -c 0");
}

int main(void)
{
    test_sets();
    test_quota_and_default();
    test_resolve();
    test_share();
    return test_finish("test_cpus");
}
