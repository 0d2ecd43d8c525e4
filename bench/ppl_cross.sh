#!/usr/bin/env bash
# Perplexity of llama.cpp's own quantised files, by sluice and by llama.cpp:
# one f16 synthetic model (sluice synth) is quantised with llama.cpp's
# llama-quantize to each type, and `sluice perplexity` and llama-perplexity
# score the same text with the same chunking on each file. The two must
# agree within 0.5% per type; the script prints both, their ratio, and
# exits 1 when a type is off (or a file does not load in sluice).
#
# llama-perplexity runs twice on each file, with micro-batches of CTX tokens
# (-ub CTX) and of REF_UBATCH tokens (default 16, below 32; the chunks stay
# the same); the one that multiplies the file's own blocks ("like") is
# compared, the other printed beside it. Why (ik_llama.cpp's source,
# ggml/src/iqk): from 32 tokens a micro-batch (64 for Q6_K) iqk_mul_mat
# converts every weight type here before its batched kernel
# (is_dequant_better, iqk_convert_repack). Q8_0, Q4_0, Q5_0 and IQ4_NL go to
# Q8_0_R8, Q4_1 and Q5_1 to Q8_1, keeping each block's scales and codes
# (iqk_gemm_legacy_quants.cpp): the same values. The K-quants are re-rounded
# (iqk_gemm_kquants.cpp): Q2_K, Q3_K and IQ4_XS to 8-bit rows with one fp16
# scale a 256 values (Q8_K_R16 on AVX-512), Q4_K and Q5_K to Q8_1 (d*sc and
# dmin*m rounded to fp16 a 32), Q6_K to Q8_0_R8 (the two 16-value scales of
# each 32 folded into one 8-bit grid). Below 32 tokens the kernels take the
# file's blocks, as sluice does: on llama tiny's Q2_K file -ub 31 gives
# -ub 16's bits (63722.6754) and -ub 32 -ub 256's shift (63946.6).
# So "like" is -ub REF_UBATCH when a matrix the file multiplies is Q2_K,
# Q3_K, Q4_K, Q5_K or Q6_K (token_embd counts when it is the output), and
# -ub CTX when its conversions keep the values (f16, Q8_0, the legacy types,
# IQ4_NL) and for files holding IQ4_XS: ik's small-batch IQ4_XS kernel on
# AVX-512 (mul_mat_iqX_k_q8_K_AVX512) adds each pair of products of the
# unsigned codes (kvalue + 128, up to 241) and the 8-bit activations into
# int16 with saturation (maddubs), so that path is not the file's values
# either: gemma3 270m's IQ4_XS file (8 chunks), whose weights dequantised to
# f32 (`sluice quantize --type f32`) score 150880 in ik and 150891 in sluice,
# scores 151232 in sluice (+0.23%), 151447 in ik at -ub 256 (+0.38%) and
# 153439 at -ub 16 (+1.70%).
#
# No switch turns the conversion off: nothing at run time reaches
# is_dequant_better (it keys on the type, the token count and the build's
# instruction set), and the build option GGML_IQK_MUL_MAT=OFF, which would
# leave iqk out altogether, does not compile at this source (ggml.c calls
# iqk_mul_mat_4d, iqk_fused_delta_net, iqk_topk_moe ... whatever the
# option). ik's -rtr (run-time repack) copies Q2_K..Q6_K, IQ4_XS, Q4_0,
# Q5_0, Q8_0 and IQ4_NL blocks into interleaved rows with the same scales
# and codes (iqk_quantize.cpp, repack_*), types is_dequant_better leaves
# alone, so its batched path multiplies the file's values; but it never
# repacks token_embd (gemma's tied output still converts), and its kernels
# quantise activations per 256 values (Q4_K_R4, Q5_K_R4, IQ4_XS_R8: Q8_K32;
# Q6_K_R4: Q8_K) where the plain Q4_K, Q5_K and Q6_K kernels take Q8_2_X4
# (32 values a bf16 scale). llama tiny Q2_K: -rtr 63745.7 at -ub 256 and at
# -ub 16 alike; Q3_K_M: -rtr 66026 against 65765 at -ub 16. It is not used.
#
# What is left between the two is activation rounding: sluice quantises
# activations to 8 bits a 32 values with a float scale; ik's Q2_K, Q3_K
# and IQ4_XS kernels take Q8_K (one scale a 256 values), the others
# Q8_2_X4. On llama tiny (8 chunks) the f32 dequantisation of each file is
# the reference (ik and sluice agree on it within 0.01%):
#   Q2_K   f32 63570; sluice 63562 (-0.01%), ik -ub 16 63723 (+0.24%),
#          -ub 256 63935 (+0.57%), -rtr 63746 (+0.28%)
#   Q3_K_M f32 65685; sluice 65614 (-0.11%), ik -ub 16 65765 (+0.12%),
#          -ub 256 65949 (+0.40%), -rtr 66026 (+0.52%)
# sluice, on the file's own blocks, is the nearer one; the 0.5-0.6% gap of
# these two at -ub 256 was ik's conversion (bench/ik_requant.py writes the
# weights it converts to as a file sluice reads: sluice on Q2_K's gives
# 64003, ik on it 63954 / 63908 at -ub 16 / 256).
#
# Measured (AMD EPYC, Zen 5, family 26; 2 threads, ctx 256; a busy host,
# which moves no perplexity): type, sluice, llama.cpp like (its -ub), ratio,
# llama.cpp other (its -ub), ratio. llama tiny, 8 chunks:
#   f16     68210.35   68213.93 256 0.9999   68213.93  16 0.9999
#   Q8_0    68708.27   68561.89 256 1.0021   68642.58  16 1.0010
#   Q4_0    67594.09   67565.03  16 1.0004   67588.19 256 1.0001
#   Q4_1    67694.53   67588.21  16 1.0016   67669.14 256 1.0004
#   Q5_0    68424.65   68452.49  16 0.9996   68408.24 256 1.0002
#   Q5_1    66601.31   66388.38  16 1.0032   66409.52 256 1.0029
#   Q2_K    63562.46   63722.68  16 0.9975   63934.56 256 0.9942
#   Q3_K_S  57301.09   57452.57  16 0.9974   57575.34 256 0.9952
#   Q3_K_M  65614.14   65765.07  16 0.9977   65949.33 256 0.9949
#   IQ4_NL  74613.94   74644.88  16 0.9996   74703.32 256 0.9988
#   IQ4_XS  75716.82   75716.90 256 1.0000   74675.07  16 1.0140
#   Q3_K_L  63362.66   63555.78  16 0.9970   63613.03 256 0.9961
#   Q4_K_S  65062.12   65107.18  16 0.9993   65067.59 256 0.9999
#   Q4_K_M  65627.67   65684.56  16 0.9991   65447.07 256 1.0028
#   Q5_K_S  66311.44   66299.43  16 1.0002   66287.43 256 1.0004
#   Q5_K_M  67446.12   67319.41  16 1.0019   67331.49 256 1.0017
#   Q6_K    68406.47   68453.83  16 0.9993   68416.26 256 0.9999
# (the legacy types' files hold a Q6_K output, hence -ub 16). IQ4_NL and
# IQ4_XS load since the --custom-q rules give attn_v mainline's type (ik's
# quantizer wrote its own IQ5_K, type 140, where two or more query heads
# share a KV head; llama tiny has two, so mainline keeps IQ4_NL/IQ4_XS).
# IQ4_XS at -ub 256 is sluice's number to 1e-6, at -ub 16 +1.4% (the
# saturating small-batch kernel below).
# gemma3 270m, 2 chunks:
#   f16    289702.76  289701.34 256 1.0000  289701.34  16 1.0000
#   Q8_0   290596.73  291113.70 256 0.9982  290484.57  16 1.0004
#   Q4_0   288021.22  288477.78 256 0.9984  288529.96  16 0.9982
#   Q4_1   276001.74  275698.05 256 1.0011  275222.81  16 1.0028
#   Q5_0   298078.26  297824.04 256 1.0009  298302.37  16 0.9992
#   Q5_1   287298.85  287575.50 256 0.9990  287050.86  16 1.0009
#   Q4_K_M 298473.91  297740.36  16 1.0025  297442.54 256 1.0035
#   Q2_K   267383.14  266522.76  16 1.0032  267063.96 256 1.0012
#   Q3_K_S 257446.84  257742.68  16 0.9989  256736.68 256 1.0028
#   Q3_K_M 288302.45  287217.54  16 1.0038  287805.50 256 1.0017
#   Q3_K_L 279595.01  280004.84  16 0.9985  279465.58 256 1.0005
#   Q4_K_S 286373.83  286289.15  16 1.0003  286734.91 256 0.9987
#   Q5_K_S 284017.76  282843.54  16 1.0042  283262.92 256 1.0027
#   Q5_K_M 295913.16  293900.19  16 1.0068  294413.97 256 1.0051
#   Q6_K   293331.15  293902.34  16 0.9981  294557.93 256 0.9958
#   IQ4_NL 269975.94  270031.91  16 0.9998  270382.70 256 0.9985
# and IQ4_XS (8 chunks): 151232.01 151447.01 256 0.9986 153439.01 16 0.9856.
# Q5_K_M is the one type past 0.5% at 2 chunks; at 8 chunks it is within:
#   Q5_K_M 160606.07  160092.90  16 1.0032  160463.35 256 1.0009
# and at 2 chunks the file's f32 dequantisation scores 294896.33 in sluice
# and 294892.68 in ik (both -ub): sluice +0.35%, ik -0.34% / -0.16%, on
# opposite sides; sluice with float activations (SLUICE_ACT=f32) gives the
# f32 file's 294896.33 exactly, so the weights are read right and the gap is
# the two tools' 8-bit activations over 512 scored tokens.
# (Q4_K_M here is mainline's mix: Q5_0 for the 640-wide rows, attn_v Q8_0
# or Q5_0.)
#
# usage: bench/ppl_cross.sh LLAMA_CPP_BUILD_DIR [TYPE...]
#
# ik_llama.cpp's quantizer writes its own mix: for rows that are not whole
# 256-element blocks it falls back from Q5_K to its Q6_0 (type 133, which
# sluice does not read; mainline llama.cpp uses Q5_1), where four or more
# query heads share a KV head it puts attn_v one K-type up (mainline does
# not), and in IQ4_NL and IQ4_XS it writes attn_v as its IQ5_K from two
# (mainline: Q5_K from four, else the mix's own type). When the quantizer takes --custom-q, the script gives it mainline's
# attn_v type per layer (bench/gguf_types.py --attn-v) and, after a first
# pass, Q5_1 for each tensor it wrote as Q6_0, so the file has mainline's
# types. Each file's types are then set beside those `sluice quantize`
# writes for the same type from the same f16 file ("same", or the tensors
# that differ), with the two files' sizes.
#
# On gemma3 270m (640 wide) Q2_K and Q3_K_S differ only in attn_v: Q2_K's
# Q3_K for attn_output and ffn_down is Q3_K_S's base, and every 640-wide
# Q2_K or Q3_K tensor falls back to IQ4_NL. For a mix with real Q2_K
# tensors, run it on a model whose rows are whole blocks: ARCH=llama
# SIZE=tiny (512 wide, d_ff 1536).
#
# LLAMA_CPP_BUILD_DIR is a llama.cpp (or ik_llama.cpp) CMake build directory
# holding llama-quantize and llama-perplexity (in bin/ or at its top). It is
# not part of this project: build it yourself, outside this tree.
# TYPEs are llama-quantize type names (default: every type sluice reads).
#
# environment:
#   ARCH, SIZE  the synth model (default gemma3 270m: 640 wide, so the
#               K-quants' fallbacks for rows not a multiple of 256 occur)
#   TEXT        text to score (default: this tree's README.md, repeated)
#   CTX         chunk length (default 256), CHUNKS chunks (default 8)
#   THREADS     threads for both (default 2)
#   REF_UBATCH  llama-perplexity's small micro-batch, below 32 (default 16)
#   QUANT_ARGS  extra llama-quantize arguments (default none)
#   WORK        scratch directory (default a temporary one, removed); the
#               f16 file and llama-perplexity's numbers on it (for the
#               default text) stay there, so runs in pieces make them once
#   SLUICE      the sluice binary (default build/sluice of this tree)
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}
die() {
  echo "ppl_cross: $*" >&2
  exit 1
}

[[ $# -ge 1 ]] || usage
[[ $1 == -h || $1 == --help ]] && usage
root=$(cd "$(dirname "$0")/.." && pwd)
lcpp=$1
shift
ARCH=${ARCH:-gemma3}
SIZE=${SIZE:-270m}
CTX=${CTX:-256}
CHUNKS=${CHUNKS:-8}
THREADS=${THREADS:-2}
REF_UBATCH=${REF_UBATCH:-16}
[[ $REF_UBATCH =~ ^[0-9]+$ && $REF_UBATCH -ge 1 && $REF_UBATCH -lt 32 ]] ||
  die "REF_UBATCH=$REF_UBATCH: give 1 to 31 (from 32 tokens llama.cpp's batched path converts)"
SLUICE=${SLUICE:-$root/build/sluice}
types=("$@")
[[ ${#types[@]} -gt 0 ]] ||
  types=(Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 IQ4_NL IQ4_XS Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K)

tool() {
  local t
  for t in "$lcpp/bin/$1" "$lcpp/$1"; do [[ -x $t ]] && { echo "$t"; return; }; done
  die "no $1 in $lcpp or $lcpp/bin"
}
quantize=$(tool llama-quantize)
perplexity=$(tool llama-perplexity)
[[ -x $SLUICE ]] || die "$SLUICE: no sluice binary (build it, or set SLUICE)"
QUANT_ARGS=${QUANT_ARGS:-}
# ik_llama.cpp's quantizer takes --custom-q (its mix differs from mainline's);
# (llama-quantize --help exits 1)
custom_q=0
{ "$quantize" --help 2>&1 || true; } | grep -q -- --custom-q && custom_q=1
types_of() { /usr/bin/python3 "$root/bench/gguf_types.py" "$@"; }

if [[ -n ${WORK:-} ]]; then
  mkdir -p "$WORK"
  work=$(cd "$WORK" && pwd)
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
text=${TEXT:+$(realpath "$TEXT")}
if [[ -z $text ]]; then
  text=$work/text.txt
  for _ in 1 2 3 4 5 6; do cat "$root/README.md"; done > "$text"
fi

f16=$work/$ARCH-$SIZE-f16.gguf
[[ -f $f16 ]] || "$SLUICE" synth --arch "$ARCH" --size "$SIZE" --type f16 -o "$f16" 2>/dev/null ||
  die "sluice synth --arch $ARCH --size $SIZE failed"

# final perplexity from each tool's output: the number after the "=" of its
# "Final estimate: PPL [over N chunks for n_ctx=C] = X +/- E" line
final_ppl() {
  awk '/^Final estimate/ { for (i = 1; i < NF; i++) if ($i == "=") v = $(i + 1) } END { print v }'
}
sluice_ppl() {
  OMP_NUM_THREADS=$THREADS "$SLUICE" perplexity -m "$1" -f "$text" -c "$CTX" --chunks "$CHUNKS" \
    -t "$THREADS" 2>&1 | final_ppl
}
# llama_ppl FILE UBATCH
llama_ppl() {
  "$perplexity" -m "$1" -f "$text" -c "$CTX" --chunks "$CHUNKS" -t "$THREADS" -b "$CTX" -ub "$2" 2>&1 | final_ppl
}
# llama_f16_ppl UBATCH: llama_ppl on the f16 file, kept in WORK (when given)
# for the next run with the same text, chunking and threads
llama_f16_ppl() {
  local keep=$work/f16-llama-c$CTX-n$CHUNKS-t$THREADS-ub$1.ppl v
  if [[ -n ${WORK:-} && -z ${TEXT:-} && -s $keep ]]; then
    cat "$keep"
    return
  fi
  v=$(llama_ppl "$f16" "$1")
  [[ -n ${WORK:-} && -z ${TEXT:-} && -n $v ]] && echo "$v" > "$keep"
  echo "$v"
}

# quantize_llama TYPE OUT RULES: llama-quantize f16 -> OUT (RULES: --custom-q's)
quantize_llama() {
  local extra=()
  [[ -n $3 ]] && extra=(--custom-q "$3")
  # shellcheck disable=SC2086
  "$quantize" $QUANT_ARGS "${extra[@]}" "$f16" "$2" "$1" "$THREADS" > "$work/quantize.log" 2>&1 && return
  echo "ppl_cross: llama-quantize $1 failed:" >&2
  tail -3 "$work/quantize.log" >&2
  return 1
}
# sluice_mix TYPE FILE: how the file `sluice quantize --type TYPE` writes from
# the same f16 compares: "same" or the differing tensors, and its size / FILE's
mix_lines=()
sluice_mix() {
  local out=$work/sluice-$1.gguf diff
  if ! "$SLUICE" quantize "$f16" "$out" --type "$1" > "$work/squant.log" 2>&1; then
    mix_lines+=("$(printf "%-8s sluice quantize failed: %s" "$1" "$(tail -1 "$work/squant.log")")")
    return
  fi
  diff=$(join <(types_of "$2" | awk '{ print $1, $2 }' | sort) <(types_of "$out" | awk '{ print $1, $2 }' | sort) |
    awk '$2 != $3 { printf "%s %s/%s ", $1, $2, $3 }')
  mix_lines+=("$(printf "%-8s %12d %12d %7s  %s" "$1" "$(stat -c %s "$out")" "$(stat -c %s "$2")" \
    "$(ratio "$(stat -c %s "$out")" "$(stat -c %s "$2")")" "${diff:-same}")")
  rm -f "$out"
}

# like_ub FILE: the micro-batch whose llama-perplexity number multiplies the
# file's own blocks (see the header): REF_UBATCH when a matrix it multiplies
# is Q2_K, Q3_K, Q4_K, Q5_K or Q6_K (which ik_llama.cpp's batched path
# re-rounds), CTX otherwise and whenever the file holds IQ4_XS (whose
# small-batch kernel saturates); token_embd counts only when it is the
# output matrix (no output.weight)
like_ub() {
  types_of "$1" | awk -v ctx="$CTX" -v ref="$REF_UBATCH" '
    $1 ~ /\.weight$/ { type[$1] = $2 }
    END {
      if ("output.weight" in type) delete type["token_embd.weight"]
      for (n in type) {
        if (type[n] == "iq4_xs") xs = 1
        if (type[n] ~ /^q[2-6]_K$/) k = 1
      }
      print (k && !xs) ? ref : ctx
    }'
}

# llama.cpp's tools leave a llama.log in their working directory
cd "$work"
printf "%s %s, ctx %d, %d chunks, %d threads; llama.cpp at -ub %d and -ub %d (\"like\": the one compared)\n" \
  "$ARCH" "$SIZE" "$CTX" "$CHUNKS" "$THREADS" "$CTX" "$REF_UBATCH"
printf "%-8s %12s %12s %5s %7s %12s %5s %7s  %s\n" type sluice "llama like" ub ratio "llama other" ub ratio \
  "types in the file"
off=0
# ratio S L: S / L to 4 places
ratio() { awk -v s="$1" -v l="$2" 'BEGIN { printf "%.4f", s / l }'; }
for t in f16 "${types[@]}"; do
  file=$f16
  if [[ $t != f16 ]]; then
    file=$work/$ARCH-$SIZE-$t.gguf
    rules=""
    [[ $custom_q == 1 ]] && rules=$(types_of --attn-v "$t" "$f16" | paste -sd, -)
    quantize_llama "$t" "$file" "$rules" || { off=1; continue; }
    if [[ $custom_q == 1 ]]; then
      q6=$(types_of "$file" | awk '$2 == "q6_0" { gsub(/\./, "\\.", $1); printf "^%s$=q5_1\n", $1 }' | paste -sd, -)
      if [[ -n $q6 ]]; then
        quantize_llama "$t" "$file" "${rules:+$rules,}$q6" || { off=1; continue; }
      fi
    fi
  fi
  kinds=$(types_of "$file" | awk '$1 ~ /\.weight$/ { n[$2]++ } END { for (k in n) printf "%s:%d ", k, n[k] }')
  lub=$(like_ub "$file")
  oub=$CTX
  [[ $lub == "$CTX" ]] && oub=$REF_UBATCH
  s=$(sluice_ppl "$file" || true)
  if [[ $t == f16 ]]; then
    l=$(llama_f16_ppl "$lub" || true)
    o=$(llama_f16_ppl "$oub" || true)
  else
    l=$(llama_ppl "$file" "$lub" || true)
    o=$(llama_ppl "$file" "$oub" || true)
  fi
  r=-
  ro=-
  [[ -n $s && -n $l ]] && r=$(ratio "$s" "$l")
  [[ -n $s && -n $o ]] && ro=$(ratio "$s" "$o")
  flag=""
  if [[ -z $s || -z $l ]]; then
    flag="  FAILED"
  else
    flag=$(awk -v r="$r" 'BEGIN { print (r > 1.005 || r < 0.995) ? "  OFF" : "" }')
  fi
  [[ -n $flag ]] && off=1
  printf "%-8s %12s %12s %5s %7s %12s %5s %7s  %s%s\n" "$t" "${s:-failed}" "${l:-failed}" "$lub" "$r" \
    "${o:-failed}" "$oub" "$ro" "$kinds" "$flag"
  [[ $t == f16 ]] || { sluice_mix "$t" "$file"; rm -f "$file"; }
done
echo
echo "sluice quantize from the same f16, against llama.cpp's file (types: llama.cpp/sluice)"
printf "%-8s %12s %12s %7s  %s\n" type "sluice bytes" "llama bytes" ratio "per-tensor types"
printf "%s\n" "${mix_lines[@]}"
exit $off
