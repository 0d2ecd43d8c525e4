#!/bin/sh
# Build the training corpus and the sentencepiece tokenizer of the tiny Gemma 3 models.
#
#   tools/train_tiny/make_corpus.sh [OUT_DIR]        (default: build/train_tiny)
#
# Writes OUT_DIR/corpus.txt (the licence texts, concatenated), OUT_DIR/docs/* (one file per
# licence, in corpus order), OUT_DIR/tokenizer.model and .vocab, and checks that the tokenizer
# round-trips the corpus byte for byte.
#
# The texts are the licences every Debian system ships in /usr/share/common-licenses, so the
# models can be remade (and their verbatim continuations checked) on any Debian machine.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-build/train_tiny}
src=/usr/share/common-licenses
py=/usr/bin/python3

# Superseded versions that are near-copies of a newer licence in the corpus. Keeping them would
# give many prompts two different "verbatim" continuations and only add text to memorise.
skip="GFDL-1.2 GPL-1"

mkdir -p "$out/docs"
rm -f "$out/docs/"* "$out/corpus.txt"

# List the directory in byte order (LC_ALL=C) so the corpus order is the same everywhere,
# dereference symlinks (GPL -> GPL-3, ...), and keep only the first file with given contents.
seen=""
n=0
for real in $(for name in $(LC_ALL=C ls "$src"); do readlink -f "$src/$name"; done | LC_ALL=C sort -u); do
    name=$(basename "$real")
    [ -f "$real" ] || continue
    case " $skip " in *" $name "*) echo "skip $name (superseded near-copy)"; continue ;; esac
    sum=$(sha256sum < "$real" | cut -c1-64)
    case " $seen " in *" $sum "*) echo "skip $name (same text as an earlier file)"; continue ;; esac
    seen="$seen $sum"
    n=$((n + 1))
    # The number prefix keeps the corpus order when train.py lists the docs again.
    cp "$real" "$out/docs/$(printf '%02d' $n)-$name"
done
cat "$out/docs/"* > "$out/corpus.txt"
echo "corpus: $n documents, $(wc -c < "$out/corpus.txt") bytes -> $out/corpus.txt"

# Tokenizer: byte-fallback BPE with Gemma's conventions.
#  - ids 0..3 are <pad> <eos> <bos> <unk> as in Gemma; the chat markers follow at 4 and 5
#    (106/107 in real Gemma, which has a 256K vocabulary);
#  - "\n" is a user-defined piece (id 6): spm_train sees one line per sentence, so without it a
#    newline could only be byte-encoded; Gemma has "\n" as a piece too;
#  - identity normalisation, no dummy prefix and no whitespace squeezing, so decoding gives back
#    the text exactly (indentation included) and whitespace-only pieces ("▁▁▁▁") are allowed;
#  - digits are split one per piece, as in Gemma.
# The literal newline inside --user_defined_symbols is intended.
spm_train \
    --input="$out/corpus.txt" \
    --model_prefix="$out/tokenizer" \
    --model_type=bpe \
    --vocab_size=1536 \
    --byte_fallback=true \
    --character_coverage=1.0 \
    --split_digits=true \
    --add_dummy_prefix=false \
    --remove_extra_whitespaces=false \
    --normalization_rule_name=identity \
    --allow_whitespace_only_pieces=true \
    --max_sentence_length=16384 \
    --pad_id=0 --pad_piece='<pad>' \
    --eos_id=1 --eos_piece='<eos>' \
    --bos_id=2 --bos_piece='<bos>' \
    --unk_id=3 --unk_piece='<unk>' \
    --user_defined_symbols='<start_of_turn>,<end_of_turn>,
' \
    --num_threads=2 \
    --random_seed=1234 \
    --minloglevel=1
echo "tokenizer: $out/tokenizer.model"

"$py" "$here/check_tokenizer.py" --model "$out/tokenizer.model" "$out/docs/"*
