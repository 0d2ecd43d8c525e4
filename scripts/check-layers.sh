#!/usr/bin/env bash
# The layer check: fails (exit 1, one line per offence naming the file, line
# and include) when a source file includes a header of a layer above its own.
#   kernels <- model <- msg <- stages <- pipeline <- cli
# util/ is usable by every layer and includes only util/. scheduler/ is
# usable from pipeline/ and cli/ only, and includes only util/, kernels/,
# model/ and itself. The wire's generated protobuf header (proto/sluice.*)
# sits with msg/, the other generated headers (file formats) with model/.
# Quoted includes must name their folder; system headers (<...>) are free.
#   scripts/check-layers.sh [ROOT]   (default: this repository)
set -u
cd "${1:-$(dirname "$0")/..}" || exit 2

rank_of() {
    case $1 in
    kernels) echo 0 ;; model) echo 1 ;; msg) echo 2 ;; stages) echo 3 ;;
    pipeline) echo 4 ;; cli) echo 5 ;; *) echo -1 ;;
    esac
}

# allowed FROM_DIR INCLUDE_PATH: 0 when FROM_DIR may include it
allowed() {
    local from=$1 path=$2 to=${2%%/*}
    [[ $path == */* ]] || return 1
    case $to in
    util) return 0 ;;
    proto) [[ $path == proto/sluice.* ]] && to=msg || to=model ;;
    esac
    case $from in
    util) return 1 ;;
    scheduler) [[ $to == scheduler || $to == util || $to == kernels || $to == model ]]; return ;;
    esac
    if [[ $to == scheduler ]]; then
        [[ $from == pipeline || $from == cli ]]
        return
    fi
    local rf rt
    rf=$(rank_of "$from")
    rt=$(rank_of "$to")
    ((rt >= 0 && rt <= rf))
}

bad=0
for dir in util kernels model msg stages pipeline cli scheduler; do
    [[ -d $dir ]] || continue
    while IFS= read -r hit; do
        file=${hit%%:*}
        rest=${hit#*:}
        line=${rest%%:*}
        path=$(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' <<<"${rest#*:}")
        if ! allowed "$dir" "$path"; then
            echo "check-layers: $file:$line includes \"$path\": not allowed from $dir/" >&2
            bad=1
        fi
    done < <(grep -Hn '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$dir"/*.c "$dir"/*.cc "$dir"/*.h 2>/dev/null)
done
if ((bad)); then
    echo "check-layers: upward includes found (order: kernels <- model <- msg <- stages <- pipeline <- cli; util for all; scheduler from pipeline and cli only)" >&2
    exit 1
fi
echo "check-layers: ok"
