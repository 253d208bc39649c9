#!/bin/sh
# mambac finetune and train on f32-tied with a small pre-tokenized dataset: outputs (adapter or model, log.jsonl,
# loss.svg, checkpoints), a resumed run ends bit for bit where an uninterrupted one does, a half-written checkpoint
# is ignored, and bad input (data lines, options, another run's checkpoint, a diverging loss) gives one message.
# On the cpu backend, whose sums are deterministic (a GPU's atomic adds are not, so its resumed runs agree to
# rounding only: tests/test_train_cuda.c).
. "$(dirname "$0")/helpers"

F32="$MODELS/f32-tied"
[ -d "$F32" ] || skip "f32-tied fixture absent"
DATA="$TMP/data.jsonl"
# 24 rows of 6..17 ids counting in steps of 3 from a per-row start (vocab 320)
awk 'BEGIN { for (i = 0; i < 24; i++) { n = 6 + (i * 7) % 12; s = (i * 37) % 300; printf "{\"input_ids\": [";
     for (k = 0; k < n; k++) printf "%s%d", (k ? ", " : ""), (s + 3 * k) % 320; print "]}" } }' >"$DATA"

ft() { # ft WANT_RC OUT_DIR [flags]
    want=$1
    out=$2
    shift 2
    run "$want" finetune -m "$F32" --backend cpu --data "$DATA" --batch-size 4 --lr 1e-2 --logging-steps 2 --save-steps 4 \
        --output-dir "$out" "$@"
}

ft 0 "$TMP/a" --epochs 2 --lora-r 4
[ ! -s "$OUT" ] || fail "finetune printed to stdout"
err_has "finetune: 12 steps"
for f in adapter_config.json adapter_model.safetensors log.jsonl loss.svg checkpoint-4/optimizer.safetensors \
         checkpoint-12/trainer_state.json; do
    [ -s "$TMP/a/$f" ] || fail "no $f"
done
[ "$(wc -l <"$TMP/a/log.jsonl")" -eq 6 ] || fail "log.jsonl has $(wc -l <"$TMP/a/log.jsonl") lines, expected 6"
grep -q '"r": 4' "$TMP/a/adapter_config.json" || grep -q '"r":	4' "$TMP/a/adapter_config.json" || fail "r not 4"
grep -q '<polyline' "$TMP/a/loss.svg" || fail "loss.svg has no curve"
# the loss falls over two epochs of the same rows
first=$(head -n 1 "$TMP/a/log.jsonl" | sed 's/.*"loss": \([0-9.e+-]*\).*/\1/')
last=$(tail -n 1 "$TMP/a/log.jsonl" | sed 's/.*"loss": \([0-9.e+-]*\).*/\1/')
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' || fail "loss did not fall: $first -> $last"

# resumed from step 4 (with a half-written checkpoint-8 left behind by a killed save): the same final adapter
mkdir "$TMP/a/checkpoint-8.tmp-99999"
ft 0 "$TMP/b" --epochs 2 --lora-r 4 --resume "$TMP/a/checkpoint-4" -q
cmp -s "$TMP/a/adapter_model.safetensors" "$TMP/b/adapter_model.safetensors" || fail "resumed run differs"
rm -rf "$TMP/a/checkpoint-12" "$TMP/a/checkpoint-8"
ft 0 "$TMP/c" --epochs 2 --lora-r 4 --resume "$TMP/a" -q # the newest complete one: checkpoint-4
cmp -s "$TMP/a/adapter_model.safetensors" "$TMP/c/adapter_model.safetensors" || fail "resume from the folder differs"

# truncated BPTT over packed blocks: three streams, the state carried between steps, resumed mid-pass exactly
tb() {
    run 0 train -m "$F32" --backend cpu --data "$DATA" --packing --tbptt --max-length 8 --batch-size 3 --epochs 2 --lr 1e-2 \
        --save-steps 5 -q "$@"
}
tb --output-dir "$TMP/tb1"
[ -s "$TMP/tb1/checkpoint-5/carry.safetensors" ] || fail "no carried state in the checkpoint"
tb --output-dir "$TMP/tb2" --resume "$TMP/tb1/checkpoint-5"
cmp -s "$TMP/tb1/model.safetensors" "$TMP/tb2/model.safetensors" || fail "resumed --tbptt run differs"
run 1 train -m "$F32" --data "$DATA" --tbptt --output-dir "$TMP/x"
err_has "--packing"

# continuing from a PEFT adapter folder, and full training
ft 0 "$TMP/d" --max-steps 2 --init-adapter "$TMP/a" -q
run 0 train -m "$F32" --data "$DATA" --batch-size 4 --max-steps 3 --output-dir "$TMP/full" -q
[ -s "$TMP/full/model.safetensors" ] && [ -s "$TMP/full/config.json" ] || fail "train wrote no model"
run 0 forward -m "$TMP/full" --ids 1,2,3 --out "$TMP/l.npy" -q

# the adapter applied on load equals the merged model (the head keeps the base embedding: an untied copy)
run 0 merge -m "$F32" --lora "$TMP/a" -o "$TMP/merged"
err_has "merge: "
grep -q '"tie_word_embeddings":[[:space:]]*false' "$TMP/merged/config.json" || fail "merged model is still tied"
run 0 forward -m "$TMP/merged" --ids 5,9,2,7 --out "$TMP/m1.npy" -q
run 0 forward -m "$F32" --lora "$TMP/a" --ids 5,9,2,7 --out "$TMP/m2.npy" -q
cmp -s "$TMP/m1.npy" "$TMP/m2.npy" || fail "merged model and --lora differ"
run 2 merge -m "$F32" -o "$TMP/merged2"
err_has "--lora"
run 1 merge -m "$MODELS/untied-bias" --lora "$TMP/a" -o "$TMP/merged3"
err_has "the model needs"

# bad input
printf '{"input_ids": [1, 2, 3]}\nnot json\n' >"$TMP/bad.jsonl"
run 1 finetune -m "$F32" --data "$TMP/bad.jsonl" --output-dir "$TMP/x"
err_has "bad.jsonl:2"
printf '{"quote": "a"}\n' >"$TMP/q.jsonl"
run 1 finetune -m "$F32" --data "$TMP/q.jsonl" --output-dir "$TMP/x" --text-field author
err_has "q.jsonl:1"
run 1 finetune -m "$F32" --data "$TMP/none.jsonl" --output-dir "$TMP/x"
err_has "none.jsonl"
ft 1 "$TMP/y" --epochs 2 --lora-r 8 --resume "$TMP/a/checkpoint-4"
err_has "another run"
ft 1 "$TMP/z" --max-steps 3 --lr 1e30 --max-grad-norm 0
err_has "at step"
[ "$(wc -l <"$ERR")" -eq 1 ] || fail "more than one error line"
run 2 finetune -m "$F32" --data "$DATA" --output-dir "$TMP/x" --lora-targets conv1d
err_has "conv1d"
# an adapter whose config says another rank than its tensors: both shapes named whole
mkdir "$TMP/r8"
cp "$TMP/a/adapter_model.safetensors" "$TMP/r8/"
sed 's/"r":[[:space:]]*4,/"r": 8,/' "$TMP/a/adapter_config.json" >"$TMP/r8/adapter_config.json"
ft 1 "$TMP/x" --max-steps 1 --init-adapter "$TMP/r8"
err_has "lora_embedding_A is F32 [4, 320], the model needs F32/F16/BF16 [8, 320]"
run 1 forward -m "$F32" --lora "$TMP/r8" --ids 1,2 --out "$TMP/x.npy"
err_has "lora_embedding_A is F32 [4, 320], the model needs F32/F16/BF16 [8, 320]"
# examples with no next-token target (one token each): named, not a NaN loss
printf '{"input_ids": [1]}\n{"input_ids": [2]}\n' >"$TMP/one.jsonl"
run 1 train -m "$F32" --data "$TMP/one.jsonl" --max-steps 1 --output-dir "$TMP/x"
err_has "one.jsonl: no example has a next-token target"
printf '{"input_ids": [1]}\n{"input_ids": [2, 3, 4]}\n' >"$TMP/one.jsonl"
run 1 train -m "$F32" --backend cpu --data "$TMP/one.jsonl" --batch-size 1 --no-shuffle --max-steps 1 --output-dir "$TMP/x"
err_has "the batch of step 1 has no next-token target"
[ "$(wc -l <"$ERR")" -eq 1 ] || fail "more than one error line"
run 2 train -m "$F32" --data "$DATA"
err_has "--output-dir"
run 2 train -m "$F32" --data "$DATA" --output-dir "$TMP/x" --precision fp64
err_has "'fp64' is not f32, tf32 or bf16"
[ "$(wc -l <"$ERR")" -eq 1 ] || fail "more than one error line for --precision"
# --precision is accepted on the cpu, which computes in f32 whatever it says
run 0 train -m "$F32" --backend cpu --data "$DATA" --batch-size 4 --max-steps 1 --precision bf16 --output-dir "$TMP/p" -q
exit 0
