/* Declarative pipeline configs (YAML via libyaml).
 *
 *   model: models/tiny-gemma3.gguf       # required
 *   nodes:                               # optional; default one node "local"
 *     - name: local                      # nodes[0] is always this process, the coordinator:
 *       address: tcp://10.0.0.1:7100     # its stages run on threads; its address (needed when
 *                                        # a stage on another node sends to it) is where
 *                                        # remote stages reach it; it cannot be spawned
 *     - name: p1
 *       address: ipc:///tmp/sluice-p1    # a worker process on this host ...
 *       spawn: true                      # ... that the coordinator launches itself
 *       cores: [1, '2-3']                # optional: the CPUs its process may use (numbers
 *                                        # or 'A-B' ranges); the processes of this host
 *                                        # (nodes[0], spawned and ipc:// nodes) must not
 *                                        # share one. Without it, the coordinator splits
 *                                        # its own CPUs among the processes it runs here
 *       key: keys/coord.key              # this process's CURVE secret key (tcp:// configs)
 *     - name: hostb
 *       address: tcp://10.0.0.2:7100     # a `sluice worker --listen` on another host
 *       public_key: keys/hostb.pub       # its CURVE public key: a file, or the 40 Z85
 *                                        # characters inline
 *   stages:                              # in pipeline order
 *     - kind: embed                      # embed | layers | head | sample
 *       node: local                      # default: the first node
 *     - kind: layers
 *       layers: [0, 3]                   # [l0, l1), or: auto
 *       node: p1
 *       numa: 0                          # optional NUMA node to bind to
 *       threads: 2                       # optional thread count (worker pool)
 *     - kind: head
 *     - kind: sample
 *   sampling: {temperature: 0, top_k: 0, top_p: 1, min_p: 0, repeat_penalty: 1, seed: 42}
 *   limits: {max_sequences: 8, context: 2048, max_batch_tokens: 512, kv_type: f32}
 *     # max_sequences: KV slots per layers stage; a row naming a slot past it is refused
 *     # context: positions per slot; a row at a position past it is refused
 *     # max_batch_tokens: rows a batch may carry; a bigger batch is refused
 *     # max_frame_bytes: 268435456, max_message_bytes: 536870912: the largest payload
 *     #   frame and whole message a stage's socket accepts (larger ones are refused
 *     #   on receipt, before they are trusted)
 *     # max_requests: 4096: requests one client may have in flight (submit refuses more)
 *     # Every refusal is an error naming the limit, counted as refused in the stage's
 *     # metrics (`sluice status`, --metrics-port).
 *     # ple: local|embed (models with per-layer embeddings; see below)
 *   speculative:                         # optional: speculative decoding
 *     draft: models/tiny-gemma3-draft.gguf   # a draft model sharing the vocabulary, or
 *                                        # prompt-lookup (n-gram match in the text so far)
 *     k: 4                               # tokens drafted a step, or auto (k_max at most)
 *     k_max: 8                           # with k: auto
 *     placement: {node: local, numa: 0, threads: 1}  # optional: where the draft runs;
 *                                        # given, it gets its own thread and drafts the
 *                                        # next block while the target verifies
 *     pipelined: true                    # default: true when placement is given
 *
 * The draft stage runs first, before embed: it extends each
 * request's wanted row with k drafted rows; sample accepts them.
 *
 *   insecure: false                      # true: plain TCP, no keys (a warning says so)
 *
 *   failure:                             # optional: what a dead worker does to requests
 *     retries: 1                         # 0 (default): requests on a stage that died fail
 *                                        # with an error naming the stage and node; 1: each
 *                                        # may be replayed once (prompt plus the tokens
 *                                        # already streamed, to rebuild the KV cache) once
 *                                        # the worker re-joins
 *     rejoin_timeout: 10                 # seconds to wait for a dead worker to come back
 *                                        # (restarted at its address) before the requests
 *                                        # waiting on it fail; default 10 with retries, else 0
 *
 * Every tcp:// socket of a pipeline is authenticated and encrypted with
 * ZeroMQ's CURVE: nodes[0] names its secret `key`, every other tcp:// node
 * its `public_key` (a spawned tcp:// node also its secret `key`, which the
 * coordinator hands to the worker it starts). A tcp:// config without them
 * is an error unless it says `insecure: true`. ipc:// needs no keys: its
 * sockets live in a directory only the user can enter.
 *
 * limits.ple (models with per-layer embeddings, Gemma 4): where each token's
 * per-layer inputs are gathered from the per-layer table. `local` (the
 * default: as fast in bench/ple.sh, fewer bytes per boundary) has every layers stage gather its
 * own layers' slices from its own mapping of the table, so only the token id
 * and the main embedding row cross a boundary; `embed` has the embed stage
 * gather all layers' once and send them down (each layers stage drops the
 * slices it used), n_layer x n_embd_per_layer more floats per token. Given
 * its own thread (a `threads:` unlike the next stage's, so it is not chained
 * with it), the embed stage then gathers the next micro-batch's rows while
 * the layers stages run the previous one.
 *
 * A node's address is its control socket (a worker's --listen address); the
 * stage i that a node receives on binds port+1+i (tcp) or path-si (ipc).
 * head and sample must share a node: logits over the full vocabulary never
 * cross the network.
 *
 * Every error names the file, line and field: "pipe.yaml:12: stages[1].layers:
 * range [3, 9) is past the model's 6 layers". */
#ifndef SLUICE_PIPELINE_CONFIG_H
#define SLUICE_PIPELINE_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "model/ple.h"
#include "msg/assign.h"
#include "stages/sampler.h"
#include "util/cpus.h"
#include "util/err.h"

#define PL_MAX_NODES 64
#define PL_MAX_STAGES 128
#define PL_NAME_MAX 64
#define PL_ADDR_MAX 256
#define PL_PATH_MAX 1024

typedef struct pl_node {
    char name[PL_NAME_MAX];
    char address[PL_ADDR_MAX]; /* empty: in this process */
    bool spawn;                /* the coordinator launches `sluice worker` for it */
    char public_key[PL_PATH_MAX]; /* CURVE public key: 40 Z85 characters, or a file; "" none */
    char key[PL_PATH_MAX];     /* CURVE secret key file (nodes[0], spawned nodes); "" none */
    sl_cpuset cores;           /* `cores:`: the CPUs its process may use; empty: not stated */
    int line;                  /* where it was declared, for messages */
} pl_node;

typedef struct pl_stage {
    pl_stage_kind kind;
    int node;                  /* index into nodes */
    int l0, l1;                /* layers stages: [l0, l1) */
    bool layers_auto;          /* `layers: auto`: the scheduler fills l0/l1 */
    int numa;                  /* -1: no binding */
    int threads;               /* 0: default */
    int line;
} pl_stage;

typedef struct pl_limits {
    int max_sequences;         /* default 8 */
    int context;               /* default 2048 */
    int max_batch_tokens;      /* default 512 */
    int kv_type;               /* sl_type of the KV cache: f32 (default), f16, bf16, q8_0 */
    int max_frame_bytes;       /* default 256 MiB: a payload frame past it is refused */
    int max_message_bytes;     /* default 512 MiB: a whole message past it is refused */
    int max_requests;          /* default 4096: requests in flight per client (submit) */
    int ple;                   /* ple_mode (model/ple.h): PLE_AT_LAYERS (default) or PLE_AT_EMBED */
    bool prefix_cache;         /* default true: a finished request's slot keeps its KV for a new
                                * request with the same first tokens (see pipeline.c) */
    bool prefix_full;          /* prefix_cache: full: sliding-window layers keep every position
                                * (no ring), so any prefix of a slot is reusable */
} pl_limits;

#define PL_REJOIN_DEFAULT_S 10.0f

typedef struct pl_failure {
    int retries;               /* 0 or 1: replays of a request after its stage died */
    float rejoin_timeout_s;    /* wait this long for a dead worker to re-join */
} pl_failure;

typedef struct pl_spec {
    bool on;
    bool prompt_lookup;        /* draft by n-gram lookup, no draft model */
    int k;                     /* tokens drafted a step (the most, with auto_k) */
    bool auto_k;
    bool pipelined;            /* draft ahead while the target verifies */
    bool placed;               /* placement given: the draft stage has its own thread */
    bool mtp;                  /* the draft is a Gemma 4 assistant: an mtp stage, last */
    int line;
} pl_spec;

typedef struct pl_config {
    char path[PL_PATH_MAX];    /* the config file, for messages */
    char model[PL_PATH_MAX];   /* resolved relative to the config's directory */
    char draft[PL_PATH_MAX];   /* speculative.draft model; empty: none (or prompt lookup) */
    pl_spec spec;              /* with spec.on, stages[0] is the draft stage (spec.mtp: the
                                * last stage is the mtp stage) */
    int n_nodes;
    pl_node nodes[PL_MAX_NODES];
    int n_stages;
    pl_stage stages[PL_MAX_STAGES];
    sl_sampling sampling;
    pl_limits limits;
    pl_failure failure;
    bool insecure;             /* plain TCP allowed: no CURVE */
} pl_config;

/* The defaults of every limit (a config without `limits:` gets these). */
void pl_limits_default(pl_limits *l);

/* Parses and checks the structure (known keys, types, node references,
 * stage order). Unknown keys are errors (a typo must not be ignored). */
int pl_config_load(pl_config *c, const char *path, sl_err *err);
int pl_config_parse(pl_config *c, const char *text, size_t len, const char *name, sl_err *err);

/* Checks layer ranges against a model of n_layer layers: the layers stages,
 * in order, must cover [0, n_layer) exactly once (no gap, no overlap, none
 * past the end), unless some are `auto`. */
int pl_config_check_layers(const pl_config *c, int n_layer, sl_err *err);

/* Checks the keys a run needs: a config with a tcp:// node names the
 * coordinator's secret key and every tcp:// node's public key, or says
 * `insecure: true` (then it names no keys at all). Messages name the file,
 * line and node. Key files are read later, when the pipeline opens. */
int pl_config_check_security(const pl_config *c, sl_err *err);

/* Whether node's process runs on the coordinator's host: nodes[0], spawned
 * nodes, and ipc:// (or inproc://) nodes. */
bool pl_node_on_this_host(const pl_config *c, int node);

/* True when the config uses tcp:// and is not insecure: CURVE everywhere. */
bool pl_config_secure(const pl_config *c);

/* The one-process pipeline `sluice run -m FILE` uses: embed, one layers
 * stage over all layers, head, sample, all on node "local". */
void pl_config_default(pl_config *c, const char *model, int n_layer);

/* Puts speculative decoding in front of c's stages (what `sluice run
 * --draft` does): draft is a GGUF path or "prompt-lookup"; k tokens a step
 * (the most, with auto_k); threads > 0 gives the draft its own thread of
 * that many pool threads, drafting ahead while the target verifies. */
int pl_config_add_speculative(pl_config *c, const char *draft, int k, bool auto_k, int threads,
                              sl_err *err);

/* Index of the stage speculative decoding added (draft or mtp), -1: none. */
int pl_config_spec_stage(const pl_config *c);

/* Writes c as YAML (for `sluice plan -o`); returns 0 or -1 with err. */
int pl_config_write(const pl_config *c, const char *path, sl_err *err);

/* Stage i of c as the settings its stage is created from (msg/assign.h). */
void pl_config_stage_spec(const pl_config *c, int i, sl_stage_spec *spec);

#endif
