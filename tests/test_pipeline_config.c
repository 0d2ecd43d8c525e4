/* Pipeline configs: every rejection names file, line and field; valid configs
 * fill the structs; the shipped examples parse and tile the tiny model's 6
 * layers; write → load gives back the same config. */
#include "pipeline/config.h"
#include "tests/test.h"

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp_dir[] = "/tmp/sluice-test-config-XXXXXX";
static void round_trip(const pl_config *c, const char *file);

static int parse(pl_config *c, const char *text, sl_err *err)
{
    return pl_config_parse(c, text, strlen(text), "pipe.yaml", err);
}

/* Parsing must fail with a message that starts with `where` ("pipe.yaml:7:")
 * and contains `frag`. */
#define BAD(text, where, frag) do { pl_config c_; sl_err e_ = {{0}}; \
    int rc_ = parse(&c_, (text), &e_); \
    CHECKF(rc_ == -1, "parse accepted: %s", (text)); \
    CHECKF(strncmp(e_.msg, (where), strlen(where)) == 0, "\"%s\" does not start with \"%s\"", e_.msg, (where)); \
    CHECK_ERR_HAS(e_, (frag)); } while (0)

#define GOOD(c, text) do { sl_err e_ = {{0}}; \
    CHECKF(parse((c), (text), &e_) == 0, "parse failed: %s", e_.msg); } while (0)

/* A valid pipeline to splice fields into: line 1 model, lines 2-8 stages. */
#define HEAD_ "model: m.gguf\n"
#define STAGES_ "stages:\n  - kind: embed\n  - kind: layers\n    layers: [0, 6]\n  - kind: head\n  - kind: sample\n"

static void test_unknown_keys(void)
{
    pl_config c;
    sl_err e = {{0}};
    const char *text = "model: m.gguf\nstages:\n  - kind: embed\n  - kind: layers\n"
                       "    layers: [0, 6]\n  - kind: head\nstagse: []\n";
    CHECK(parse(&c, text, &e) == -1);
    CHECKF(strcmp(e.msg, "pipe.yaml:7: unknown key 'stagse' (expected model, nodes, stages, "
                         "sampling, limits, speculative, insecure, failure)") == 0, "%s", e.msg);
    BAD("model: m.gguf\nstages:\n  - kind: embed\n  - kind: layers\n    layer: [0, 6]\n",
        "pipe.yaml:5:", "stages[1]: unknown key 'layer' (expected kind, node, layers, numa, threads)");
    BAD(HEAD_ STAGES_ "sampling:\n  temp: 1\n", "pipe.yaml:9:", "sampling: unknown key 'temp'");
    BAD(HEAD_ STAGES_ "limits: {ctx: 5}\n", "pipe.yaml:8:", "limits: unknown key 'ctx'");
    BAD(HEAD_ "nodes:\n  - name: a\n    adress: tcp://h:1\n" STAGES_, "pipe.yaml:4:",
        "nodes[0]: unknown key 'adress' (expected name, address, spawn, public_key, key, cores)");
    BAD("? [a, b]\n: 1\n" HEAD_ STAGES_, "pipe.yaml:1:", "keys must be plain words");
}

static void test_duplicates_and_required(void)
{
    BAD(HEAD_ STAGES_ "model: n.gguf\n", "pipe.yaml:8:", "duplicate key 'model' (first at line 1)");
    BAD(HEAD_ "stages:\n  - kind: embed\n    kind: head\n", "pipe.yaml:4:",
        "stages[0]: duplicate key 'kind' (first at line 3)");
    BAD(STAGES_, "pipe.yaml:1:", "missing required key 'model'");
    BAD(HEAD_ "limits: {context: 64}\n", "pipe.yaml:1:", "missing required key 'stages'");
    BAD(HEAD_ "stages: []\n", "pipe.yaml:2:", "stages: must list at least one stage");
    BAD(HEAD_ "stages:\n  - node: local\n", "pipe.yaml:3:", "stages[0]: missing 'kind'");
    BAD(HEAD_ "nodes:\n  - address: ipc:///tmp/x\n" STAGES_, "pipe.yaml:3:", "nodes[0]: missing 'name'");
    BAD(HEAD_ "nodes: []\n" STAGES_, "pipe.yaml:2:", "nodes: must list at least one node");
    BAD("model: \"\"\n" STAGES_, "pipe.yaml:1:", "model: must not be empty");
    BAD("model:\n" STAGES_, "pipe.yaml:1:", "model: must not be empty");
    BAD("model: \"a\\0b\"\n" STAGES_, "pipe.yaml:1:", "model: contains a NUL byte");
}

static void test_types(void)
{
    BAD(HEAD_ "stages: embed\n", "pipe.yaml:2:", "stages: expected a sequence, got a scalar");
    BAD(HEAD_ "stages: {kind: embed}\n", "pipe.yaml:2:", "stages: expected a sequence, got a mapping");
    BAD(HEAD_ "stages:\n  - embed\n", "pipe.yaml:3:", "stages[0]: expected a mapping, got a scalar");
    BAD("model: [a, b]\n" STAGES_, "pipe.yaml:1:", "model: expected a scalar, got a sequence");
    BAD(HEAD_ "nodes: {name: a}\n" STAGES_, "pipe.yaml:2:", "nodes: expected a sequence, got a mapping");
    BAD(HEAD_ STAGES_ "sampling: [1, 2]\n", "pipe.yaml:8:", "sampling: expected a mapping, got a sequence");
    BAD(HEAD_ STAGES_ "limits: 5\n", "pipe.yaml:8:", "limits: expected a mapping, got a scalar");
    BAD(HEAD_ STAGES_ "sampling:\n", "pipe.yaml:8:", "sampling: expected a mapping, got an empty value");
    BAD(HEAD_ "stages:\n  - kind: [embed]\n", "pipe.yaml:3:", "stages[0].kind: expected a scalar, got a sequence");
    BAD("- model\n- stages\n", "pipe.yaml:1:", "expected a mapping with model and stages, got a sequence");
    BAD("", "pipe.yaml:1:", "empty config");
    BAD("# only a comment\n", "pipe.yaml:1:", "empty config");
}

static void test_kinds_nodes_layers(void)
{
    BAD(HEAD_ "stages:\n  - kind: embed\n  - kind: layer\n    layers: [0, 6]\n", "pipe.yaml:4:",
        "stages[1].kind: unknown stage kind 'layer' (expected embed, layers, head, sample)");
    BAD(HEAD_ "nodes:\n  - name: local\n  - name: hostb\n    address: tcp://10.0.0.2:7100\n"
        "stages:\n  - kind: embed\n  - kind: layers\n    layers: [0, 6]\n    node: hostc\n",
        "pipe.yaml:10:", "stages[1].node: node 'hostc' does not exist (nodes: local, hostb)");
    /* Without a nodes list the only node is "local". */
    BAD(HEAD_ "stages:\n  - kind: embed\n    node: p1\n", "pipe.yaml:4:", "node 'p1' does not exist (nodes: local)");
    /* A long node list is cut short in the message, not overflowed. */
    char many[8192] = HEAD_ "nodes:\n";
    for (int i = 0; i < PL_MAX_NODES; i++) {
        char line[96];
        snprintf(line, sizeof line, "  - name: node%02d_abcdefghijklmnopqrstuvwxyz\n", i);
        strcat(many, line);
    }
    strcat(many, "stages:\n  - kind: embed\n    node: nodeXX\n");
    BAD(many, "pipe.yaml:69:", "node 'nodeXX' does not exist (nodes: node00_abcdefghijklmnopqrstuvwxyz, ");
    BAD(many, "pipe.yaml:69:", ", ...)");
    BAD(HEAD_ "stages:\n  - kind: embed\n    layers: [0, 6]\n", "pipe.yaml:4:",
        "stages[0].layers: only a layers stage has layers (this is a 'embed' stage)");
    BAD(HEAD_ "stages:\n  - kind: embed\n  - kind: layers\n", "pipe.yaml:4:", "stages[1]: a layers stage needs");
    BAD(HEAD_ "stages:\n  - kind: embed\n  - kind: layers\n    layers: [0]\n", "pipe.yaml:5:",
        "stages[1].layers: expected [l0, l1] (two numbers), got 1 items");
    BAD(HEAD_ "stages:\n  - kind: embed\n  - kind: layers\n    layers: [3, 3]\n", "pipe.yaml:5:",
        "stages[1].layers: l0 must be < l1");
    BAD(HEAD_ "stages:\n  - kind: embed\n  - kind: layers\n    layers: [4, 2]\n", "pipe.yaml:5:", "l0 must be < l1");
    BAD(HEAD_ "stages:\n  - kind: embed\n  - kind: layers\n    layers: all\n", "pipe.yaml:5:",
        "stages[1].layers: expected [l0, l1] or auto, got 'all'");
    BAD(HEAD_ "stages:\n  - kind: embed\n  - kind: layers\n    layers: {from: 0}\n", "pipe.yaml:5:",
        "stages[1].layers: expected [l0, l1] or auto, got a mapping");
    BAD(HEAD_ "stages:\n  - kind: embed\n  - kind: layers\n    layers: [a, 3]\n", "pipe.yaml:5:",
        "stages[1].layers[0]: expected an integer, got 'a'");
    BAD(HEAD_ "stages:\n  - kind: embed\n  - kind: layers\n    layers: [-1, 3]\n", "pipe.yaml:5:",
        "stages[1].layers[0]: -1 is out of range");
}

static void test_node_fields(void)
{
    BAD(HEAD_ "nodes:\n  - name: host b\n" STAGES_, "pipe.yaml:3:",
        "nodes[0].name: node name 'host b' may hold only letters");
    BAD(HEAD_ "nodes:\n  - name: a\n  - name: b\n  - name: a\n" STAGES_, "pipe.yaml:5:",
        "nodes[2].name: duplicate node name 'a' (first at line 3)");
    BAD(HEAD_ "nodes:\n  - name: a\n    address: http://h:1\n" STAGES_, "pipe.yaml:4:",
        "nodes[0].address: address 'http://h:1' must start with inproc://, ipc:// or tcp://");
    BAD(HEAD_ "nodes:\n  - name: a\n    address: tcp://hostb\n" STAGES_, "pipe.yaml:4:", "needs host:port");
    BAD(HEAD_ "nodes:\n  - name: a\n    address: tcp://:7100\n" STAGES_, "pipe.yaml:4:", "needs host:port");
    BAD(HEAD_ "nodes:\n  - name: a\n    address: tcp://h:0\n" STAGES_, "pipe.yaml:4:", "tcp port '0' must be");
    BAD(HEAD_ "nodes:\n  - name: a\n    address: tcp://h:65536\n" STAGES_, "pipe.yaml:4:", "tcp port '65536'");
    BAD(HEAD_ "nodes:\n  - name: a\n    address: tcp://h:71x\n" STAGES_, "pipe.yaml:4:", "tcp port '71x'");
    BAD(HEAD_ "nodes:\n  - name: a\n    address: ipc://\n" STAGES_, "pipe.yaml:4:", "names no endpoint");
    BAD(HEAD_ "nodes:\n  - name: a\n    address: \"ipc:///tmp/a b\"\n" STAGES_, "pipe.yaml:4:", "spaces");
    BAD(HEAD_ "nodes:\n  - name: a\n    spawn: true\n" STAGES_, "pipe.yaml:4:",
        "nodes[0].spawn: spawn needs an ipc:// or tcp:// address (node 'a' has none)");
    BAD(HEAD_ "nodes:\n  - name: a\n    address: inproc://a\n    spawn: yes\n" STAGES_, "pipe.yaml:5:",
        "spawn needs an ipc:// or tcp:// address");
    BAD(HEAD_ "nodes:\n  - name: a\n    address: ipc:///tmp/a\n    spawn: maybe\n" STAGES_, "pipe.yaml:5:",
        "nodes[0].spawn: expected true, false, yes or no, got 'maybe'");
    /* nodes[0] is the coordinator's own process */
    BAD(HEAD_ "nodes:\n  - name: a\n    address: ipc:///tmp/a\n    spawn: true\n" STAGES_, "pipe.yaml:5:",
        "nodes[0].spawn: nodes[0] ('a') is this process, the coordinator; it cannot be spawned");
    pl_config c;
    GOOD(&c, HEAD_ "nodes:\n  - name: a\n    address: ipc:///tmp/a\n    spawn: false\n"
             "  - name: b\n    address: ipc:///tmp/b\n    spawn: true\n" STAGES_);
    CHECK(!c.nodes[0].spawn && c.nodes[1].spawn);
}

static void test_numbers(void)
{
#define STAGE_FIELD(f) HEAD_ "stages:\n  - kind: embed\n    " f "\n"
    BAD(STAGE_FIELD("threads: 4x"), "pipe.yaml:4:", "stages[0].threads: expected an integer, got '4x'");
    BAD(STAGE_FIELD("threads: 0"), "pipe.yaml:4:", "stages[0].threads: 0 is out of range (1..1024)");
    BAD(STAGE_FIELD("threads: 1025"), "pipe.yaml:4:", "1025 is out of range (1..1024)");
    BAD(STAGE_FIELD("threads: \"4\""), "pipe.yaml:4:", "expected an integer, got the quoted string '4'");
    BAD(STAGE_FIELD("threads: 4.0"), "pipe.yaml:4:", "expected an integer");
    BAD(STAGE_FIELD("threads: 99999999999999999999999"), "pipe.yaml:4:", "out of range");
    BAD(STAGE_FIELD("numa: -1"), "pipe.yaml:4:", "stages[0].numa: -1 is out of range (must be >= 0)");
    BAD(STAGE_FIELD("numa: 0x1"), "pipe.yaml:4:", "stages[0].numa: expected an integer");
#define SAMPLING(f) HEAD_ STAGES_ "sampling:\n  " f "\n"
    BAD(SAMPLING("temperature: -0.5"), "pipe.yaml:9:", "sampling.temperature: -0.5 is out of range (must be >= 0)");
    BAD(SAMPLING("temperature: .inf"), "pipe.yaml:9:", "sampling.temperature: expected a number, got '.inf'");
    BAD(SAMPLING("temperature: nan"), "pipe.yaml:9:", "expected a number");
    BAD(SAMPLING("temperature: 0x1p3"), "pipe.yaml:9:", "expected a number");
    BAD(SAMPLING("temperature: 1e39"), "pipe.yaml:9:", "1e39 is too large");
    BAD(SAMPLING("temperature: 0.5x"), "pipe.yaml:9:", "sampling.temperature: expected a number, got '0.5x'");
    BAD(SAMPLING("temperature: 1.5.2"), "pipe.yaml:9:", "expected a number, got '1.5.2'");
    BAD(SAMPLING("top_k: -1"), "pipe.yaml:9:", "sampling.top_k: -1 is out of range");
    BAD(SAMPLING("top_p: 0"), "pipe.yaml:9:", "sampling.top_p: 0 is out of range (must be in (0, 1])");
    BAD(SAMPLING("top_p: 1.01"), "pipe.yaml:9:", "sampling.top_p: 1.01 is out of range");
    BAD(SAMPLING("min_p: 1"), "pipe.yaml:9:", "sampling.min_p: 1 is out of range (must be in [0, 1))");
    BAD(SAMPLING("min_p: -0.1"), "pipe.yaml:9:", "sampling.min_p");
    BAD(SAMPLING("repeat_penalty: 0"), "pipe.yaml:9:", "sampling.repeat_penalty: 0 is out of range (must be > 0)");
    BAD(SAMPLING("repeat_last_n: -5"), "pipe.yaml:9:", "sampling.repeat_last_n: -5 is out of range");
    BAD(SAMPLING("seed: -1"), "pipe.yaml:9:", "sampling.seed: expected an unsigned integer, got '-1'");
    BAD(SAMPLING("seed: 18446744073709551616"), "pipe.yaml:9:", "sampling.seed: 18446744073709551616 does not fit");
#define LIMITS(f) HEAD_ STAGES_ "limits:\n  " f "\n"
    BAD(LIMITS("max_sequences: 0"), "pipe.yaml:9:", "limits.max_sequences: 0 is out of range (1..4096)");
    BAD(LIMITS("max_sequences: 4097"), "pipe.yaml:9:", "limits.max_sequences: 4097");
    BAD(LIMITS("context: 15"), "pipe.yaml:9:", "limits.context: 15 is out of range (16..1048576)");
    BAD(LIMITS("context: 1048577"), "pipe.yaml:9:", "limits.context: 1048577");
    BAD(LIMITS("max_batch_tokens: 65537"), "pipe.yaml:9:", "limits.max_batch_tokens: 65537 is out of range (1..65536)");
    BAD(LIMITS("max_batch_tokens: 0"), "pipe.yaml:9:", "limits.max_batch_tokens: 0");
    BAD(LIMITS("max_frame_bytes: 1023"), "pipe.yaml:9:", "limits.max_frame_bytes: 1023 is out of range (1024..1073741824)");
    BAD(LIMITS("max_message_bytes: 1073741825"), "pipe.yaml:9:", "limits.max_message_bytes: 1073741825 is out of range");
    BAD(LIMITS("max_requests: 0"), "pipe.yaml:9:", "limits.max_requests: 0 is out of range (1..1048576)");
    BAD(LIMITS("max_request: 3"), "pipe.yaml:9:", "limits: unknown key 'max_request'");
    BAD(LIMITS("ple: layers"), "pipe.yaml:9:", "limits.ple: 'layers' is not one of local, embed");

    pl_config c;
    GOOD(&c, SAMPLING("seed: 18446744073709551615"));
    CHECK(c.sampling.seed == UINT64_MAX);
    GOOD(&c, LIMITS("context: 16"));
    CHECK(c.limits.context == 16);
    /* the message and request limits: defaults, then each one set */
    CHECK(c.limits.max_frame_bytes == 256 << 20 && c.limits.max_message_bytes == 512 << 20 &&
          c.limits.max_requests == 4096);
    GOOD(&c, HEAD_ STAGES_ "limits: {max_frame_bytes: 4096, max_message_bytes: 8192, max_requests: 3}\n");
    CHECK(c.limits.max_frame_bytes == 4096 && c.limits.max_message_bytes == 8192 &&
          c.limits.max_requests == 3);
    GOOD(&c, LIMITS("ple: embed"));
    CHECK(c.limits.ple == PLE_AT_EMBED);
    GOOD(&c, LIMITS("ple: local"));
    CHECK(c.limits.ple == PLE_AT_LAYERS);
    CHECK(c.limits.prefix_cache && !c.limits.prefix_full);
    /* an absolute model path: a relative one is rewritten when written elsewhere */
    GOOD(&c, "model: /m.gguf\n" STAGES_ "limits:\n  prefix_cache: full\n");
    CHECK(c.limits.prefix_cache && c.limits.prefix_full);
    round_trip(&c, "prefix-full.yaml");
    sl_stage_spec spec;
    pl_config_stage_spec(&c, 1, &spec);
    CHECK(spec.kv_full);
    GOOD(&c, LIMITS("prefix_cache: false"));
    CHECK(!c.limits.prefix_cache && !c.limits.prefix_full);
    pl_config_stage_spec(&c, 1, &spec);
    CHECK(!spec.kv_full);
    BAD(LIMITS("prefix_cache: maybe"), "pipe.yaml:9:", "limits.prefix_cache: expected true, false or full, got 'maybe'");
    GOOD(&c, LIMITS("context: 1048576"));
    CHECK(c.limits.context == 1 << 20);
    GOOD(&c, SAMPLING("top_p: 1"));
    CHECK(c.sampling.top_p == 1.0f);
    GOOD(&c, SAMPLING("temperature: +0.25e1"));
    CHECK(c.sampling.temperature == 2.5f);
    GOOD(&c, HEAD_ "stages:\n  - kind: embed\n    threads: 1024\n  - kind: layers\n    layers: [0, 6]\n"
         "  - kind: head\n  - kind: sample\n");
    CHECK(c.stages[0].threads == 1024);
}

static void test_order(void)
{
    BAD(HEAD_ "stages:\n  - kind: layers\n    layers: [0, 6]\n  - kind: head\n", "pipe.yaml:3:",
        "stages[0]: a pipeline starts with embed, not 'layers'");
    BAD(HEAD_ "stages:\n  - kind: embed\n  - kind: head\n  - kind: sample\n", "pipe.yaml:4:",
        "stages[1]: 'head' cannot follow 'embed' (expected layers)");
    BAD(HEAD_ "stages:\n  - kind: embed\n  - kind: embed\n", "pipe.yaml:4:",
        "stages[1]: a second 'embed' stage (the first is stages[0])");
    BAD(HEAD_ "stages:\n  - kind: embed\n  - kind: layers\n    layers: auto\n"
        "  - kind: head\n  - kind: sample\n  - kind: sample\n", "pipe.yaml:8:",
        "stages[4]: a second 'sample' stage (the first is stages[3])");
    BAD(HEAD_ "stages:\n  - kind: embed\n  - kind: layers\n    layers: [0, 6]\n  - kind: head\n",
        "pipe.yaml:6:", "stages: the pipeline ends with 'head' (stages[2]) but still needs sample");
    BAD(HEAD_ "stages:\n  - kind: embed\n", "pipe.yaml:3:", "ends with 'embed' (stages[0]) but still needs layers, head and sample");
    BAD(HEAD_ STAGES_ "  - kind: layers\n    layers: [0, 6]\n", "pipe.yaml:8:",
        "stages[4]: 'layers' cannot follow 'sample' (expected nothing: sample is the last stage)");
    /* the driver tokenizes: a config naming a tokenize stage is told so */
    BAD(HEAD_ "stages:\n  - kind: embed\n  - kind: tokenize\n", "pipe.yaml:4:",
        "stages[1].kind: 'tokenize' is not a stage: the driver tokenizes prompts (remove it)");
    BAD(HEAD_ "stages:\n  - kind: tokenize\n  - kind: embed\n", "pipe.yaml:3:",
        "stages[0].kind: 'tokenize' is not a stage: the driver tokenizes prompts (remove it)");
    /* head and sample share a node, whichever one it is */
#define NODES2_ "nodes:\n  - name: a\n  - name: b\n    address: ipc:///tmp/b\n"
    BAD(HEAD_ NODES2_ "stages:\n  - kind: embed\n  - kind: layers\n    layers: [0, 6]\n  - kind: head\n"
        "  - kind: sample\n    node: b\n", "pipe.yaml:11:",
        "stages[3].node: sample runs on node 'b' but head (stages[2]) on node 'a'; they must share a node");
    BAD(HEAD_ NODES2_ "stages:\n  - kind: embed\n  - kind: layers\n    layers: [0, 6]\n    node: b\n"
        "  - kind: head\n    node: b\n  - kind: sample\n", "pipe.yaml:13:",
        "sample runs on node 'a' but head (stages[2]) on node 'b'");
    pl_config c;
    GOOD(&c, HEAD_ NODES2_ "stages:\n  - kind: embed\n  - kind: layers\n    layers: [0, 6]\n"
             "  - kind: head\n    node: b\n  - kind: sample\n    node: b\n");
    CHECK(c.stages[2].node == 1 && c.stages[3].node == 1);
#undef NODES2_
}

static void test_yaml_level(void)
{
    BAD(HEAD_ "stages:\n\t- kind: embed\n", "pipe.yaml:3:", "YAML syntax error");
    BAD(HEAD_ "stages: [a, b\n", "pipe.yaml:", "YAML syntax error");
    BAD("model: &m m.gguf\ndraft: *m\n" STAGES_, "pipe.yaml:1:", "anchors (&m) are not supported");
    BAD(HEAD_ "draft: *m\n" STAGES_, "pipe.yaml:2:", "aliases (*m) are not supported");
    BAD(HEAD_ STAGES_ "---\n" HEAD_ STAGES_, "pipe.yaml:8:", "found a second one");
    BAD("a: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
        "pipe.yaml:1:", "nested more than");
    BAD("model: \"\xff\xfe\"\n", "pipe.yaml:1:", "YAML error");

    /* A billion-laughs bomb is refused at its first anchor. */
    char bomb[4096] = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n";
    for (int i = 1; i < 10; i++) {
        char line[128];
        snprintf(line, sizeof line, "a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]\n",
                 i, i, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1);
        strcat(bomb, line);
    }
    BAD(bomb, "pipe.yaml:1:", "anchors (&a0) are not supported");

    pl_config c;
    sl_err e = {{0}};
    size_t big = (1u << 20) + 1;
    char *text = malloc(big);
    memset(text, '#', big);
    CHECK(pl_config_parse(&c, text, big, "big.yaml", &e) == -1);
    CHECK_ERR_HAS(e, "big.yaml: config is too large");
    free(text);
    CHECK(pl_config_parse(&c, HEAD_ STAGES_, strlen(HEAD_ STAGES_), NULL, &e) == 0);
    CHECK(pl_config_parse(&c, "stages: []\n", 11, NULL, &e) == -1);
    CHECK_ERR_HAS(e, "<config>:1:");
}

static void test_valid(void)
{
    const char *text =
        "model: models/tiny-gemma3.gguf\n"
        "# the draft is set up at the end\n"
        "nodes:\n"
        "  - name: local\n"
        "  - name: p1\n"
        "    address: ipc:///tmp/sluice-p1\n"
        "    spawn: true\n"
        "  - name: host-b.2_x\n"
        "    address: tcp://10.0.0.2:7100\n"
        "    spawn: no\n"
        "stages:\n"
        "  - kind: embed\n"
        "    node: local\n"
        "  - kind: layers\n"
        "    layers: [0, 3]\n"
        "    node: p1\n"
        "    numa: 1\n"
        "    threads: 2\n"
        "  - kind: layers\n"
        "    layers: auto\n"
        "    node: host-b.2_x\n"
        "  - kind: head\n"
        "    node: host-b.2_x\n"
        "  - kind: sample\n"
        "    node: host-b.2_x\n"
        "sampling: {temperature: 0.7, top_k: 40, top_p: 0.95, min_p: 0.05, repeat_penalty: 1.1,"
        " repeat_last_n: 32, seed: 7}\n"
        "limits: {max_sequences: 16, context: 4096, max_batch_tokens: 128}\n"
        "speculative:\n"
        "  draft: /abs/draft.gguf\n"
        "  k: auto\n"
        "  k_max: 6\n"
        "  placement: {node: p1, threads: 1}\n";
    pl_config c;
    sl_err e = {{0}};
    CHECKF(pl_config_parse(&c, text, strlen(text), "conf/pipe.yaml", &e) == 0, "%s", e.msg);
    /* the draft stage goes first, on its placement's node and thread */
    CHECK(c.spec.on && c.spec.auto_k && c.spec.k == 6 && !c.spec.prompt_lookup);
    CHECK(c.spec.placed && c.spec.pipelined && c.spec.line == 29);
    CHECK(c.stages[0].kind == PL_STAGE_DRAFT && c.stages[0].node == 1 && c.stages[0].threads == 1);
    memmove(c.stages, c.stages + 1, (size_t)(--c.n_stages) * sizeof c.stages[0]);
    CHECK(strcmp(c.path, "conf/pipe.yaml") == 0);
    CHECK(strcmp(c.model, "conf/models/tiny-gemma3.gguf") == 0);
    CHECK(strcmp(c.draft, "/abs/draft.gguf") == 0);
    CHECK(c.n_nodes == 3);
    CHECK(strcmp(c.nodes[0].name, "local") == 0 && c.nodes[0].address[0] == '\0' && !c.nodes[0].spawn);
    CHECK(strcmp(c.nodes[1].name, "p1") == 0 && strcmp(c.nodes[1].address, "ipc:///tmp/sluice-p1") == 0);
    CHECK(c.nodes[1].spawn && c.nodes[1].line == 5);
    CHECK(strcmp(c.nodes[2].address, "tcp://10.0.0.2:7100") == 0 && !c.nodes[2].spawn);
    CHECK(c.n_stages == 5);
    static const pl_stage_kind kinds[] = {PL_STAGE_EMBED, PL_STAGE_LAYERS, PL_STAGE_LAYERS,
                                          PL_STAGE_HEAD, PL_STAGE_SAMPLE};
    static const int nodes[] = {0, 1, 2, 2, 2};
    static const int lines[] = {12, 14, 19, 22, 24};
    for (int i = 0; i < 5; i++) {
        CHECKF(c.stages[i].kind == kinds[i], "stage %d", i);
        CHECKF(c.stages[i].node == nodes[i], "stage %d node %d", i, c.stages[i].node);
        CHECKF(c.stages[i].line == lines[i], "stage %d line %d", i, c.stages[i].line);
    }
    CHECK(c.stages[1].l0 == 0 && c.stages[1].l1 == 3 && !c.stages[1].layers_auto);
    CHECK(c.stages[1].numa == 1 && c.stages[1].threads == 2);
    CHECK(c.stages[2].layers_auto);
    CHECK(c.stages[0].numa == -1 && c.stages[0].threads == 0);
    CHECK(c.sampling.temperature == 0.7f && c.sampling.top_k == 40 && c.sampling.top_p == 0.95f);
    CHECK(c.sampling.min_p == 0.05f && c.sampling.repeat_penalty == 1.1f);
    CHECK(c.sampling.repeat_last_n == 32 && c.sampling.seed == 7);
    CHECK(c.limits.max_sequences == 16 && c.limits.context == 4096 && c.limits.max_batch_tokens == 128);

    /* Leaving things out: one node "local", defaults for sampling and limits. */
    GOOD(&c, HEAD_ STAGES_);
    CHECK(strcmp(c.model, "m.gguf") == 0 && c.draft[0] == '\0');
    CHECK(c.n_nodes == 1 && strcmp(c.nodes[0].name, "local") == 0 && c.nodes[0].address[0] == '\0');
    CHECK(c.n_stages == 4 && c.stages[1].node == 0);
    sl_sampling d;
    sl_sampling_defaults(&d);
    CHECK(memcmp(&c.sampling, &d, sizeof d) == 0);
    CHECK(c.limits.max_sequences == 8 && c.limits.context == 2048 && c.limits.max_batch_tokens == 512);
    /* One sampling field given: the rest keep their defaults. */
    GOOD(&c, HEAD_ STAGES_ "sampling: {top_k: 5}\n");
    CHECK(c.sampling.top_k == 5 && c.sampling.seed == d.seed && c.sampling.top_p == d.top_p);
    /* A config at the root of the tree resolves against "/". */
    CHECK(pl_config_parse(&c, HEAD_ STAGES_, strlen(HEAD_ STAGES_), "/pipe.yaml", &e) == 0);
    CHECK(strcmp(c.model, "/m.gguf") == 0);
}

static void parse_ok(pl_config *c, const char *text)
{
    sl_err e = {{0}};
    CHECKF(parse(c, text, &e) == 0, "%s", e.msg);
}

#define LAYERS_CFG(ranges) HEAD_ "stages:\n  - kind: embed\n" ranges "  - kind: head\n  - kind: sample\n"
#define L(r) "  - kind: layers\n    layers: " r "\n"

static void bad_layers(const pl_config *c, int n_layer, const char *where, const char *frag, int line)
{
    sl_err e = {{0}};
    CHECKF(pl_config_check_layers(c, n_layer, &e) == -1, "accepted (test line %d)", line);
    CHECKF(strncmp(e.msg, where, strlen(where)) == 0, "\"%s\" lacks \"%s\" (test line %d)", e.msg, where, line);
    CHECKF(strstr(e.msg, frag) != NULL, "\"%s\" lacks \"%s\" (test line %d)", e.msg, frag, line);
}

static void test_check_layers(void)
{
    pl_config c;
    sl_err e = {{0}};
    parse_ok(&c, LAYERS_CFG(L("[0, 2]") L("[2, 4]") L("[4, 6]")));
    CHECKF(pl_config_check_layers(&c, 6, &e) == 0, "%s", e.msg);
    bad_layers(&c, 7, "pipe.yaml:8:", "layers [6, 7) are not covered by any stage", __LINE__);
    bad_layers(&c, 5, "pipe.yaml:8:", "stages[3].layers: [4, 6) is past the model's 5 layers", __LINE__);
    bad_layers(&c, 0, "pipe.yaml", "no layers", __LINE__);

    parse_ok(&c, LAYERS_CFG(L("[0, 4]") L("[3, 5]") L("[5, 6]")));
    bad_layers(&c, 6, "pipe.yaml:6:", "stages[2].layers: [3, 5) overlaps stages[1].layers [0, 4)", __LINE__);
    parse_ok(&c, LAYERS_CFG(L("[0, 4]")));
    bad_layers(&c, 6, "pipe.yaml:4:", "layers [4, 6) are not covered by any stage", __LINE__);
    parse_ok(&c, LAYERS_CFG(L("[0, 2]") L("[3, 6]")));
    bad_layers(&c, 6, "pipe.yaml:6:", "layers [2, 3) are not covered by any stage", __LINE__);
    parse_ok(&c, LAYERS_CFG(L("[1, 6]")));
    bad_layers(&c, 6, "pipe.yaml:4:", "layers [0, 1) are not covered", __LINE__);
    parse_ok(&c, LAYERS_CFG(L("[0, 3]") L("[3, 5]") L("[5, 9]")));
    bad_layers(&c, 6, "pipe.yaml:8:", "stages[3].layers: [5, 9) is past the model's 6 layers", __LINE__);
    /* Ranges set by hand (a scheduler's plan) get the same scrutiny. */
    parse_ok(&c, LAYERS_CFG(L("[0, 6]")));
    c.stages[1].l0 = 4;
    c.stages[1].l1 = 4;
    bad_layers(&c, 6, "pipe.yaml:4:", "stages[1].layers: l0 must be < l1", __LINE__);

    /* `auto` stages: no tiling, but explicit ranges are still checked. */
    parse_ok(&c, LAYERS_CFG(L("auto") L("[4, 6]")));
    CHECKF(pl_config_check_layers(&c, 6, &e) == 0, "%s", e.msg);
    CHECKF(pl_config_check_layers(&c, 26, &e) == 0, "%s", e.msg);
    bad_layers(&c, 5, "pipe.yaml:6:", "stages[2].layers: [4, 6) is past the model's 5 layers", __LINE__);
    parse_ok(&c, LAYERS_CFG(L("auto")));
    CHECKF(pl_config_check_layers(&c, 6, &e) == 0, "%s", e.msg);
    parse_ok(&c, LAYERS_CFG(L("[0, 4]") L("auto") L("[2, 6]")));
    bad_layers(&c, 6, "pipe.yaml:8:", "stages[3].layers: [2, 6) overlaps stages[1].layers [0, 4)", __LINE__);
}

static void test_default_and_names(void)
{
    pl_config c;
    sl_err e = {{0}};
    pl_config_default(&c, "models/x.gguf", 6);
    CHECK(strcmp(c.model, "models/x.gguf") == 0);
    CHECK(c.n_nodes == 1 && strcmp(c.nodes[0].name, "local") == 0);
    CHECK(c.n_stages == 4);
    CHECK(c.stages[0].kind == PL_STAGE_EMBED && c.stages[1].kind == PL_STAGE_LAYERS);
    CHECK(c.stages[2].kind == PL_STAGE_HEAD && c.stages[3].kind == PL_STAGE_SAMPLE);
    CHECK(c.stages[1].l0 == 0 && c.stages[1].l1 == 6 && !c.stages[1].layers_auto);
    for (int i = 0; i < 4; i++)
        CHECK(c.stages[i].node == 0 && c.stages[i].numa == -1 && c.stages[i].threads == 0);
    CHECKF(pl_config_check_layers(&c, 6, &e) == 0, "%s", e.msg);
    CHECK(pl_config_check_layers(&c, 7, &e) == -1);
    CHECKF(strcmp(e.msg, "<config>: layers [6, 7) are not covered by any stage") == 0, "%s", e.msg);
    CHECK(c.limits.max_sequences == 8 && c.limits.context == 2048 && c.limits.max_batch_tokens == 512);

    CHECK(strcmp(pl_stage_kind_name((pl_stage_kind)0), "unknown") == 0); /* was tokenize */
    CHECK(strcmp(pl_stage_kind_name(PL_STAGE_EMBED), "embed") == 0);
    CHECK(strcmp(pl_stage_kind_name(PL_STAGE_LAYERS), "layers") == 0);
    CHECK(strcmp(pl_stage_kind_name(PL_STAGE_HEAD), "head") == 0);
    CHECK(strcmp(pl_stage_kind_name(PL_STAGE_SAMPLE), "sample") == 0);
    CHECK(strcmp(pl_stage_kind_name(PL_STAGE_DRAFT), "draft") == 0);
    CHECK(strcmp(pl_stage_kind_name(PL_STAGE_KIND_COUNT_), "unknown") == 0);
}

/* Everything but where things were declared. */
static int same_config(const pl_config *a, const pl_config *b)
{
    int same = strcmp(a->model, b->model) == 0 && strcmp(a->draft, b->draft) == 0 &&
               a->n_nodes == b->n_nodes && a->n_stages == b->n_stages &&
               memcmp(&a->sampling, &b->sampling, sizeof a->sampling) == 0 &&
               memcmp(&a->limits, &b->limits, sizeof a->limits) == 0 && a->spec.on == b->spec.on &&
               a->failure.retries == b->failure.retries && a->failure.rejoin_timeout_s == b->failure.rejoin_timeout_s &&
               a->spec.prompt_lookup == b->spec.prompt_lookup && a->spec.k == b->spec.k &&
               a->spec.auto_k == b->spec.auto_k && a->spec.pipelined == b->spec.pipelined &&
               a->spec.placed == b->spec.placed;
    for (int i = 0; same && i < a->n_nodes; i++)
        same = strcmp(a->nodes[i].name, b->nodes[i].name) == 0 &&
               strcmp(a->nodes[i].address, b->nodes[i].address) == 0 && a->nodes[i].spawn == b->nodes[i].spawn &&
               strcmp(a->nodes[i].public_key, b->nodes[i].public_key) == 0 &&
               strcmp(a->nodes[i].key, b->nodes[i].key) == 0 &&
               memcmp(&a->nodes[i].cores, &b->nodes[i].cores, sizeof a->nodes[i].cores) == 0;
    same = same && a->insecure == b->insecure;
    for (int i = 0; same && i < a->n_stages; i++) {
        const pl_stage *s = &a->stages[i], *t = &b->stages[i];
        same = s->kind == t->kind && s->node == t->node && s->l0 == t->l0 && s->l1 == t->l1 &&
               s->layers_auto == t->layers_auto && s->numa == t->numa && s->threads == t->threads;
    }
    return same;
}

static void round_trip(const pl_config *c, const char *file)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp_dir, file);
    pl_config back;
    sl_err e = {{0}};
    CHECKF(pl_config_write(c, path, &e) == 0, "%s", e.msg);
    CHECKF(pl_config_load(&back, path, &e) == 0, "%s: %s", file, e.msg);
    CHECKF(same_config(c, &back), "%s does not read back as written", file);
    CHECK(strcmp(back.path, path) == 0);
}

/* Absolute, so the examples' model paths stay the same when written elsewhere. */
static const char *src_dir(void)
{
    static char dir[PATH_MAX];
    const char *src = getenv("SLUICE_SRC");
    if (!realpath(src ? src : ".", dir))
        snprintf(dir, sizeof dir, "%s", src ? src : ".");
    return dir;
}

static void test_examples_and_round_trip(void)
{
    static const char *const examples[] = {"one-process.yaml", "two-process.yaml", "two-host.yaml",
                                           "speculative.yaml", "speculative-procs.yaml", "three-host.yaml"};
    pl_config c;
    sl_err e = {{0}};
    for (int i = 0; i < 6; i++) {
        char path[PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/configs/%s", src_dir(), examples[i]);
        CHECKF(pl_config_load(&c, path, &e) == 0, "%s", e.msg);
        CHECKF(pl_config_check_layers(&c, 6, &e) == 0, "%s", e.msg);
        CHECK(pl_config_check_layers(&c, 7, &e) == -1);
        CHECK(strstr(c.model, "/configs/../models/tiny-gemma3.gguf") != NULL);
        round_trip(&c, examples[i]);
    }
    snprintf(e.msg, sizeof e.msg, "%s", "");
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/configs/two-process.yaml", src_dir());
    CHECK(pl_config_load(&c, path, &e) == 0);
    CHECK(c.n_nodes == 2 && c.nodes[1].spawn && strncmp(c.nodes[1].address, "ipc://", 6) == 0);
    CHECK(c.stages[3].node == 1 && c.stages[4].node == 1);
    snprintf(path, sizeof path, "%s/configs/two-host.yaml", src_dir());
    CHECK(pl_config_load(&c, path, &e) == 0);
    CHECK(c.n_nodes == 2 && strcmp(c.nodes[1].address, "tcp://10.77.0.2:7100") == 0);
    CHECK(c.failure.retries == 0 && c.failure.rejoin_timeout_s == 0.0f);
    snprintf(path, sizeof path, "%s/configs/three-host.yaml", src_dir());
    CHECK(pl_config_load(&c, path, &e) == 0);
    CHECK(c.n_nodes == 3 && c.failure.retries == 1 && c.failure.rejoin_timeout_s == 15.0f);

    /* Strings the writer must quote to get them back unchanged. */
    const char *odd =
        "model: \"/tmp/a: b #c \\\"q\\\" \\u00e9 - [x]\"\n"
        "nodes:\n  - name: \"null\"\n  - name: \"-x\"\n    address: tcp://[::1]:7100\n  - name: \"123\"\n"
        "    address: ipc:///tmp/a#b\n    spawn: true\n"
        "stages:\n  - kind: embed\n    node: \"123\"\n    numa: 3\n  - kind: layers\n"
        "    layers: auto\n    node: -x\n    threads: 7\n  - kind: layers\n    layers: [2, 6]\n"
        "  - kind: head\n  - kind: sample\n    node: \"null\"\n"
        "sampling: {temperature: 0.1, top_k: 3, top_p: 0.9, min_p: 0.000123, repeat_penalty: 1.3,"
        " repeat_last_n: 0, seed: 18446744073709551615}\n"
        "limits: {max_sequences: 4096, context: 16, max_batch_tokens: 65536, ple: embed}\n"
        "speculative: {draft: \"/tmp/ null\", k: 0, placement: {node: \"null\", numa: 1}, pipelined: false}\n";
    CHECKF(parse(&c, odd, &e) == 0, "%s", e.msg);
    CHECK(strcmp(c.nodes[0].name, "null") == 0 && c.stages[5].node == 0 && c.stages[1].node == 2);
    CHECK(strcmp(c.draft, "/tmp/ null") == 0 && c.spec.k == 0 && !c.spec.pipelined && c.spec.placed);
    CHECK(c.stages[0].kind == PL_STAGE_DRAFT && c.stages[0].numa == 1);
    round_trip(&c, "odd.yaml");

    /* A relative model path written elsewhere still names the same file. */
    pl_config_default(&c, "models/x.gguf", 6);
    char out[512], cwd[PATH_MAX], want[PATH_MAX + 32];
    snprintf(out, sizeof out, "%s/default.yaml", tmp_dir);
    CHECK(pl_config_write(&c, out, &e) == 0);
    pl_config back;
    CHECKF(pl_config_load(&back, out, &e) == 0, "%s", e.msg);
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    snprintf(want, sizeof want, "%s/models/x.gguf", cwd);
    CHECKF(strcmp(back.model, want) == 0, "%s", back.model);
    snprintf(back.model, sizeof back.model, "%s", c.model);
    CHECK(same_config(&c, &back));
}

static void test_speculative(void)
{
    pl_config c;
    sl_err e = {{0}};
    BAD(HEAD_ STAGES_ "speculative: {k: 4}\n", "pipe.yaml:8:",
        "speculative: missing 'draft' (a draft model file, or prompt-lookup)");
    BAD(HEAD_ STAGES_ "speculative: {draft: d.gguf, k: 33}\n", "pipe.yaml:8:", "speculative.k:");
    BAD(HEAD_ STAGES_ "speculative: {draft: d.gguf, k: many}\n", "pipe.yaml:8:", "speculative.k:");
    BAD(HEAD_ STAGES_ "speculative: {draft: d.gguf, k: 3, k_max: 5}\n", "pipe.yaml:8:",
        "speculative.k_max: k_max applies only with 'k: auto'");
    BAD(HEAD_ STAGES_ "speculative: {draft: prompt-lookup, pipelined: true}\n", "pipe.yaml:8:",
        "speculative.pipelined: prompt lookup drafts for free");
    BAD(HEAD_ STAGES_ "speculative: {draft: d.gguf, placement: {node: nowhere}}\n", "pipe.yaml:8:",
        "speculative.placement.node: node 'nowhere' does not exist");
    BAD(HEAD_ STAGES_ "speculative: {draft: d.gguf, drfat: 1}\n", "pipe.yaml:8:",
        "speculative: unknown key 'drfat'");
    BAD(HEAD_ "stages:\n  - kind: draft\n  - kind: embed\n", "pipe.yaml:3:",
        "stages[0].kind: a draft stage is not listed in stages: configure it under 'speculative:'");

    /* defaults: k 4, in line with the first stage, not pipelined */
    GOOD(&c, HEAD_ STAGES_ "speculative: {draft: d.gguf}\n");
    CHECK(c.spec.on && c.spec.k == 4 && !c.spec.auto_k && !c.spec.placed && !c.spec.pipelined);
    CHECK(c.n_stages == 5 && c.stages[0].kind == PL_STAGE_DRAFT && c.stages[1].kind == PL_STAGE_EMBED);
    CHECK(strcmp(c.draft, "d.gguf") == 0);
    GOOD(&c, "model: /abs/m.gguf\n" STAGES_ "speculative: {draft: prompt-lookup, k: auto}\n");
    CHECK(c.spec.prompt_lookup && c.spec.auto_k && c.spec.k == 8 && c.draft[0] == '\0');
    round_trip(&c, "lookup.yaml");

    /* what `sluice run --draft` does */
    pl_config_default(&c, "m.gguf", 6);
    CHECK(pl_config_add_speculative(&c, "d.gguf", 5, false, 2, &e) == 0);
    CHECK(c.n_stages == 5 && c.stages[0].kind == PL_STAGE_DRAFT && c.stages[0].threads == 2);
    CHECK(c.spec.pipelined && c.spec.k == 5 && strcmp(c.draft, "d.gguf") == 0);
    CHECK(pl_config_add_speculative(&c, "d.gguf", 5, false, 2, &e) == -1);
    pl_config_default(&c, "m.gguf", 6);
    CHECK(pl_config_add_speculative(&c, "d.gguf", 40, false, 0, &e) == -1);
    CHECKF(strstr(e.msg, "speculative k = 40 outside 0..32") != NULL, "%s", e.msg);
}

/* Parses text, then expects pl_config_check_security to fail with a message
 * starting with where and holding frag (frag NULL: to pass). */
static void check_sec(const char *text, const char *where, const char *frag)
{
    pl_config c;
    sl_err e = {{0}};
    CHECKF(parse(&c, text, &e) == 0, "parse failed: %s", e.msg);
    int rc = pl_config_check_security(&c, &e);
    if (!frag) {
        CHECKF(rc == 0, "%s", e.msg);
        return;
    }
    CHECKF(rc == -1, "accepted: %s", text);
    CHECKF(strncmp(e.msg, where, strlen(where)) == 0, "\"%s\" does not start with \"%s\"", e.msg, where);
    CHECK_ERR_HAS(e, frag);
}

#define PUB_ "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
#define TWO_HOSTS_(n0_extra, n1_extra) HEAD_ "nodes:\n  - name: local\n    address: tcp://10.0.0.1:7100\n" \
    n0_extra "  - name: hostb\n    address: tcp://10.0.0.2:7100\n" n1_extra \
    "stages:\n  - kind: embed\n  - kind: layers\n    layers: [0, 6]\n    node: hostb\n" \
    "  - kind: head\n    node: hostb\n  - kind: sample\n    node: hostb\n"

static void test_security_fields(void)
{
    /* no keys and no `insecure`: a clear error naming the node and the way out */
    check_sec(TWO_HOSTS_("", ""), "pipe.yaml:3: nodes[0]:", "node 'local' (the coordinator) needs its CURVE "
              "secret key");
    check_sec(TWO_HOSTS_("", ""), "pipe.yaml:3:", "insecure: true");
    check_sec(TWO_HOSTS_("    key: k/local.key\n", ""), "pipe.yaml:6: nodes[1]:",
              "node 'hostb' (tcp://10.0.0.2:7100) needs `public_key:`");
    check_sec(TWO_HOSTS_("    key: k/local.key\n", "    public_key: k/hostb.pub\n"), "", NULL);
    check_sec(TWO_HOSTS_("    key: k/local.key\n", "    public_key: \"" PUB_ "\"\n"), "", NULL);
    check_sec(TWO_HOSTS_("    key: k/local.key\n", "    public_key: k/hostb.pub\n    key: k/hostb.key\n"),
              "pipe.yaml:6: nodes[1]:", "gets its own with `sluice worker --key`");
    check_sec(TWO_HOSTS_("", "") "insecure: true\n", "", NULL);
    check_sec(TWO_HOSTS_("    key: k/local.key\n", "") "insecure: true\n", "pipe.yaml:3: nodes[0].key:",
              "says `insecure: true` but names keys");
    check_sec(TWO_HOSTS_("", "    public_key: k/hostb.pub\n") "insecure: yes\n", "pipe.yaml:5: nodes[1].public_key:",
              "insecure");
    /* ipc:// only: no keys needed */
    check_sec(HEAD_ "nodes:\n  - name: local\n  - name: p1\n    address: ipc:///tmp/x/p1\n    spawn: true\n"
              STAGES_, "", NULL);
    /* a spawned ipc:// node that sends to a tcp:// node is a CURVE client there */
    check_sec(HEAD_ "nodes:\n  - name: local\n    address: tcp://10.0.0.1:7100\n    key: l.key\n"
              "  - name: p1\n    address: ipc:///tmp/x/p1\n    spawn: true\n"
              "stages:\n  - kind: embed\n  - kind: layers\n    layers: [0, 6]\n    node: p1\n"
              "  - kind: head\n  - kind: sample\n", "pipe.yaml:6: nodes[1]:",
              "node 'p1' is spawned and its stage 1 sends to tcp:// node 'local'");
    check_sec(HEAD_ "nodes:\n  - name: local\n    address: tcp://10.0.0.1:7100\n    key: l.key\n"
              "  - name: p1\n    address: ipc:///tmp/x/p1\n    spawn: true\n    key: p1.key\n"
              "stages:\n  - kind: embed\n  - kind: layers\n    layers: [0, 6]\n    node: p1\n"
              "  - kind: head\n  - kind: sample\n", "", NULL);
    /* a spawned tcp:// node needs the secret key the coordinator gives its worker */
    check_sec(HEAD_ "nodes:\n  - name: local\n    key: l.key\n  - name: p1\n    address: tcp://127.0.0.1:7300\n"
              "    spawn: true\n    public_key: p1.pub\n" STAGES_, "pipe.yaml:5: nodes[1]:", "needs its secret `key");

    pl_config c;
    sl_err e = {{0}};
    /* parsed as an absolute file name so every path is absolute and reads back the same */
    const char *keys = TWO_HOSTS_("    key: k/local.key\n", "    public_key: \"" PUB_ "\"\n");
    CHECKF(pl_config_parse(&c, keys, strlen(keys), "/abs/pipe.yaml", &e) == 0, "%s", e.msg);
    CHECK(strcmp(c.nodes[1].public_key, PUB_) == 0 && strcmp(c.nodes[0].key, "/abs/k/local.key") == 0);
    CHECK(pl_config_secure(&c) && !c.insecure);
    round_trip(&c, "keys.yaml");
    keys = TWO_HOSTS_("    key: k/local.key\n", "    public_key: k/hostb.pub\n");
    CHECKF(pl_config_parse(&c, keys, strlen(keys), "/abs/pipe.yaml", &e) == 0, "%s", e.msg);
    round_trip(&c, "keys.yaml");
    const char *insecure = TWO_HOSTS_("", "") "insecure: true\n";
    CHECKF(pl_config_parse(&c, insecure, strlen(insecure), "/abs/pipe.yaml", &e) == 0, "%s", e.msg);
    CHECK(c.insecure && !pl_config_secure(&c));
    round_trip(&c, "insecure.yaml");
    BAD(TWO_HOSTS_("", "") "insecure: maybe\n", "pipe.yaml:16:", "insecure: expected true, false");
    BAD(TWO_HOSTS_("    key: \"\"\n", ""), "pipe.yaml:5:", "nodes[0].key: must not be empty");
    /* key paths resolve against the config's directory, like the model */
    snprintf(e.msg, sizeof e.msg, "%s", "");
    const char *text = TWO_HOSTS_("    key: k/local.key\n", "    public_key: /abs/hostb.pub\n");
    CHECK(pl_config_parse(&c, text, strlen(text), "/etc/sluice/pipe.yaml", &e) == 0);
    CHECKF(strcmp(c.nodes[0].key, "/etc/sluice/k/local.key") == 0, "%s", c.nodes[0].key);
    CHECK(strcmp(c.nodes[1].public_key, "/abs/hostb.pub") == 0);
}

static void write_file(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f)
        return;
    CHECK(fwrite(text, 1, len, f) == len);
    fclose(f);
}

static void test_load_errors(void)
{
    pl_config c;
    sl_err e = {{0}};
    char path[512];
    snprintf(path, sizeof path, "%s/missing.yaml", tmp_dir);
    CHECK(pl_config_load(&c, path, &e) == -1);
    CHECK_ERR_HAS(e, path);
    CHECK(pl_config_load(&c, tmp_dir, &e) == -1);
    CHECK_ERR_HAS(e, "not a regular file");

    snprintf(path, sizeof path, "%s/broken.yaml", tmp_dir);
    const char *text = HEAD_ "stages:\n  - kind: embed\n    threads: many\n";
    write_file(path, text, strlen(text));
    CHECK(pl_config_load(&c, path, &e) == -1);
    char where[600];
    snprintf(where, sizeof where, "%s:4: stages[0].threads: expected an integer, got 'many'", path);
    CHECKF(strcmp(e.msg, where) == 0, "%s", e.msg);

    snprintf(path, sizeof path, "%s/big.yaml", tmp_dir);
    size_t big = (1u << 20) + 10;
    char *blob = malloc(big);
    memset(blob, '\n', big);
    memcpy(blob, HEAD_ STAGES_, strlen(HEAD_ STAGES_));
    write_file(path, blob, big);
    free(blob);
    CHECK(pl_config_load(&c, path, &e) == -1);
    CHECK_ERR_HAS(e, "too large");

    /* Relative paths resolve against the config's own directory. */
    snprintf(path, sizeof path, "%s/rel.yaml", tmp_dir);
    text = "model: ../m.gguf\n" STAGES_ "speculative: {draft: d.gguf}\n";
    write_file(path, text, strlen(text));
    CHECKF(pl_config_load(&c, path, &e) == 0, "%s", e.msg);
    char want[600];
    snprintf(want, sizeof want, "%s/../m.gguf", tmp_dir);
    CHECKF(strcmp(c.model, want) == 0, "%s", c.model);
    snprintf(want, sizeof want, "%s/d.gguf", tmp_dir);
    CHECKF(strcmp(c.draft, want) == 0, "%s", c.draft);
}

static void remove_tmp(void)
{
    static const char *const files[] = {"one-process.yaml", "two-process.yaml", "two-host.yaml", "odd.yaml",
                                        "default.yaml", "broken.yaml", "big.yaml", "rel.yaml", "keys.yaml",
                                        "insecure.yaml"};
    char path[512];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", tmp_dir, files[i]);
        unlink(path);
    }
    rmdir(tmp_dir);
}

/* failure: retries 0 or 1, a rejoin timeout that defaults to 10 s with a
 * retry and to 0 without; a bad value names its field and line. */
static void test_failure(void)
{
#define FAILURE(f) HEAD_ STAGES_ "failure:\n  " f "\n"
    pl_config c;
    GOOD(&c, HEAD_ STAGES_);
    CHECK(c.failure.retries == 0 && c.failure.rejoin_timeout_s == 0.0f);
    GOOD(&c, FAILURE("retries: 1"));
    CHECK(c.failure.retries == 1 && c.failure.rejoin_timeout_s == PL_REJOIN_DEFAULT_S);
    GOOD(&c, FAILURE("retries: 1\n  rejoin_timeout: 2.5"));
    CHECK(c.failure.retries == 1 && c.failure.rejoin_timeout_s == 2.5f);
    GOOD(&c, FAILURE("rejoin_timeout: 4"));
    CHECK(c.failure.retries == 0 && c.failure.rejoin_timeout_s == 4.0f);
    BAD(FAILURE("retries: 2"), "pipe.yaml:9:", "failure.retries: 2 is out of range (0..1)");
    BAD(FAILURE("retries: -1"), "pipe.yaml:9:", "failure.retries: -1 is out of range (0..1)");
    BAD(FAILURE("rejoin_timeout: -1"), "pipe.yaml:9:", "failure.rejoin_timeout: -1 is out of range");
    BAD(FAILURE("retry: 1"), "pipe.yaml:9:", "failure: unknown key 'retry' (expected retries, rejoin_timeout)");
    BAD(HEAD_ STAGES_ "failure: 1\n", "pipe.yaml:8:", "failure: expected a mapping, got a scalar");
    /* written and read back */
    GOOD(&c, FAILURE("retries: 1\n  rejoin_timeout: 7"));
    char path[512];
    snprintf(path, sizeof path, "%s/failure.yaml", tmp_dir);
    pl_config back;
    sl_err e = {{0}};
    CHECKF(pl_config_write(&c, path, &e) == 0, "%s", e.msg);
    CHECKF(pl_config_load(&back, path, &e) == 0, "%s", e.msg);
    CHECK(back.failure.retries == 1 && back.failure.rejoin_timeout_s == 7.0f);
    unlink(path);
#undef FAILURE
}

/* Two processes on this host (the coordinator and a spawned worker) with
 * their `cores:` lines spliced in. */
#define TWO_PROCS_(n0_cores, n1_cores, threads) HEAD_ "nodes:\n  - name: local\n    address: ipc:///tmp/c0\n" \
    n0_cores "  - name: p1\n    address: ipc:///tmp/c1\n    spawn: true\n" n1_cores \
    "stages:\n  - kind: embed\n  - kind: layers\n    layers: [0, 3]\n  - kind: layers\n    node: p1\n" \
    "    layers: [3, 6]\n" threads "  - kind: head\n    node: p1\n  - kind: sample\n    node: p1\n"

static void test_cores(void)
{
    pl_config c;
    GOOD(&c, TWO_PROCS_("    cores: [0]\n", "    cores: [1, '2-3', 7]\n", ""));
    CHECK(sl_cpuset_count(&c.nodes[0].cores) == 1 && sl_cpuset_has(&c.nodes[0].cores, 0));
    char list[64];
    CHECKF(strcmp(sl_cpuset_format(&c.nodes[1].cores, list, sizeof list), "1-3,7") == 0, "%s", list);
    snprintf(c.model, sizeof c.model, "/abs/m.gguf"); /* a relative one is written absolute */
    round_trip(&c, "cores.yaml");
    GOOD(&c, TWO_PROCS_("", "", ""));
    CHECK(sl_cpuset_count(&c.nodes[0].cores) == 0 && sl_cpuset_count(&c.nodes[1].cores) == 0);

    /* bad lists: the field, and what is wrong with the item */
    BAD(TWO_PROCS_("    cores: 3\n", "", ""), "pipe.yaml:5:", "nodes[0].cores: expected a sequence");
    BAD(TWO_PROCS_("    cores: []\n", "", ""), "pipe.yaml:5:", "nodes[0].cores: lists no CPU");
    BAD(TWO_PROCS_("    cores: [0, two]\n", "", ""), "pipe.yaml:5:",
        "nodes[0].cores[1]: 'two' is not a CPU number (0..1023) or a range A-B");
    BAD(TWO_PROCS_("    cores: [1024]\n", "", ""), "pipe.yaml:5:", "nodes[0].cores[0]: '1024' is not a CPU number");
    BAD(TWO_PROCS_("    cores: [-1]\n", "", ""), "pipe.yaml:5:", "nodes[0].cores[0]: '-1' is not a CPU number");
    BAD(TWO_PROCS_("    cores: ['3-1']\n", "", ""), "pipe.yaml:5:", "nodes[0].cores[0]: range '3-1' runs backwards");
    BAD(TWO_PROCS_("    cores: ['1-2-3']\n", "", ""), "pipe.yaml:5:", "'1-2-3' is not a CPU number");
    BAD(TWO_PROCS_("    cores: [0, '0-1']\n", "", ""), "pipe.yaml:5:", "nodes[0].cores[1]: CPU 0 is listed twice");
    BAD(TWO_PROCS_("    cores: [[0]]\n", "", ""), "pipe.yaml:5:", "nodes[0].cores[0]: expected a scalar");

    /* oversubscription the config states: shared CPUs, more threads than cores */
    BAD(TWO_PROCS_("    cores: ['0-1']\n", "    cores: [1, 2]\n", ""), "pipe.yaml:6:",
        "nodes[1].cores: nodes 'local' and 'p1' both run on this host and share CPU 1 (local has 0-1)");
    BAD(TWO_PROCS_("", "    cores: [2]\n", "    threads: 4\n"), "pipe.yaml:5:",
        "nodes[1].cores: node 'p1' has 1 core(s) (2) but its stages ask for 4 threads (layers 4)");
    GOOD(&c, TWO_PROCS_("", "    cores: ['2-5']\n", "    threads: 4\n"));
    /* a worker on another host may use the same CPU numbers */
    GOOD(&c, HEAD_ "insecure: true\nnodes:\n  - name: local\n    cores: [0]\n  - name: hostb\n"
             "    address: tcp://10.0.0.2:7100\n    cores: [0]\n" STAGES_);
}

int main(void)
{
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_unknown_keys();
    test_duplicates_and_required();
    test_types();
    test_kinds_nodes_layers();
    test_node_fields();
    test_numbers();
    test_order();
    test_security_fields();
    test_yaml_level();
    test_valid();
    test_check_layers();
    test_default_and_names();
    test_examples_and_round_trip();
    test_load_errors();
    test_speculative();
    test_failure();
    test_cores();
    remove_tmp();
    return test_finish("test_pipeline_config");
}
