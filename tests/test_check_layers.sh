#!/usr/bin/env bash
# scripts/check-layers.sh on small made-up trees: every allowed include
# passes; each kind of upward include fails, naming the file and include.
set -u
check=${SLUICE_SRC:-$(dirname "$0")/..}/scripts/check-layers.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

tree() { # tree NAME: a clean tree using every allowed direction
    local t=$tmp/$1
    mkdir -p "$t"/{util,kernels,model,msg,stages,pipeline,cli,scheduler,proto}
    echo '#include "util/err.h"' >"$t/kernels/a.c"
    printf '#include "kernels/a.h"\n#include "proto/sentencepiece_model.pb-c.h"\n' >"$t/model/a.c"
    printf '#include "model/a.h"\n#include "proto/sluice.pb-c.h"\n#include <zmq.h>\n' >"$t/msg/a.c"
    printf '#include "msg/msg.h"\n#include "model/kv.h"\n#include "kernels/ops.h"\n' >"$t/stages/a.c"
    printf '#include "stages/stage.h"\n#include "scheduler/plan.h"\n#include "util/err.h"\n' >"$t/pipeline/a.c"
    printf '#include "pipeline/a.h"\n#include "scheduler/plan.h"\n' >"$t/cli/a.c"
    printf '#include "model/a.h"\n#include "kernels/a.h"\n#include "scheduler/b.h"\n' >"$t/scheduler/a.c"
    echo '#include "util/b.h"' >"$t/util/a.c"
    echo "$t"
}

expect_ok() {
    local t=$1 out
    if ! out=$(bash "$check" "$t" 2>&1); then
        echo "FAIL: a clean tree was refused: $out"
        fails=$((fails + 1))
    fi
}

# expect_bad NAME FILE LINE-TEXT: FILE (in a clean tree) gains LINE-TEXT
expect_bad() {
    local t file=$2 text=$3 out
    t=$(tree "$1")
    echo "$text" >>"$t/$file"
    if out=$(bash "$check" "$t" 2>&1); then
        echo "FAIL: $1: $file with '$text' passed"
        fails=$((fails + 1))
    elif ! grep -qF "$file:" <<<"$out" || ! grep -qF "${text#*include }" <<<"$out"; then
        echo "FAIL: $1: the message does not name $file and its include: $out"
        fails=$((fails + 1))
    fi
}

expect_ok "$(tree clean)"
expect_bad stages-up stages/a.c '#include "pipeline/config.h"'
expect_bad msg-up msg/a.c '#include "stages/stage.h"'
expect_bad model-up model/a.c '#include "msg/msg.h"'
expect_bad model-wire model/a.c '#include "proto/sluice.pb-c.h"'
expect_bad kernels-up kernels/a.c '#include "model/model.h"'
expect_bad pipeline-up pipeline/a.c '#include "cli/cli.h"'
expect_bad util-up util/a.c '#include "kernels/types.h"'
expect_bad sched-pipeline scheduler/a.c '#include "pipeline/config.h"'
expect_bad sched-msg scheduler/a.c '#include "msg/msg.h"'
expect_bad stages-sched stages/a.c '#include "scheduler/plan.h"'
expect_bad no-folder stages/a.c '#include "stage.h"'
expect_bad unknown-folder pipeline/a.c '#include "tests/test.h"'
expect_bad spaced stages/a.c '  #  include "cli/x.h"'

if ((fails)); then
    echo "test_check_layers: $fails failed"
    exit 1
fi
echo "test_check_layers: all passed"
