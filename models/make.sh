#!/bin/sh
# Rebuilds models/austen from nothing but Debian packages and a built mambac (the recipe of models/README.md):
#   sh models/make.sh WORKDIR        (about 40 minutes on 2 cores; WORKDIR gets the corpus, token files, checkpoints)
# Deterministic for the same package versions and thread count: the corpus's and token files' SHA-256 are printed.
set -eu
[ "$#" -eq 1 ] || { echo "usage: $0 WORKDIR" >&2; exit 2; }
w=$1
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${MAMBAC:-$root/build/mambac}
mkdir -p "$w"
# 1. Jane Austen's six novels (public domain), from Debian's r-cran-janeaustenr, shuffled in ~32 KB pieces.
AUSTEN_ONLY=1 sh "$root/tools/oracle/make_corpus.sh" "$w/austen.txt"
# 2. A fixed split: the last ~5% (cut at a piece boundary) is the validation text.
python3 - "$w" <<'PY'
import sys
w = sys.argv[1]
data = open(w + "/austen.txt", encoding="utf-8").read()
cut = data.rfind("\n\n", 0, int(len(data) * 0.95)) + 2
open(w + "/train.txt", "w", encoding="utf-8").write(data[:cut])
open(w + "/valid.txt", "w", encoding="utf-8").write(data[cut:])
PY
# 3. The tokenizer (byte-level BPE as tokenizers' BpeTrainer, 8192 tokens) and the token files.
"$bin" tokenizer train --vocab-size 8192 -o "$w/tokenizer.json" "$w/train.txt"
"$bin" data -o "$w/train.bin" --tokenizer "$w/tokenizer.json" --eos "$w/train.txt"
"$bin" data -o "$w/valid.bin" --tokenizer "$w/tokenizer.json" --eos "$w/valid.txt"
sha256sum "$w/train.txt" "$w/valid.txt" "$w/tokenizer.json" "$w/train.bin" "$w/valid.bin"
# 4. The model: 6 layers of width 256 (4.7 M parameters), transformers' initialisation, seed 0.
"$bin" init --config "$root/models/austen.config.json" --seed 0 -o "$w/init"
cp "$w/tokenizer.json" "$w/init/"
# 5. Training: 4000 steps of 8 x 256 tokens (8.2 M tokens, 8.7 epochs), AdamW, cosine schedule with 100 warmup
#    steps, peak lr 3e-3, clipping at 1, blocks in file order.
"$bin" train -m "$w/init" --data "$w/train.bin" --max-length 256 --batch-size 8 --max-steps 4000 --lr 3e-3 \
    --warmup-steps 100 --lr-scheduler cosine --no-shuffle --seed 0 --save-steps 500 --save-total-limit 2 \
    --logging-steps 50 --output-dir "$w/run" -t 2
# 6. Shipped as bf16 matrices (f32 vectors), with the tokenizer.
"$bin" quantize -m "$w/run" --dtype bf16 -o "$w/austen"
"$bin" perplexity -m "$w/austen" -f "$w/valid.txt"
