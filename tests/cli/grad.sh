#!/bin/sh
# mambac grad on f32-tied: the loss it writes equals transformers' (the oracle's grad-f32-tied case, same ids) to
# the printed digits, the file holds every trainable tensor, LoRA writes PEFT's keys; bad input gives one message.
. "$(dirname "$0")/helpers"

F32="$MODELS/f32-tied"
[ -d "$F32" ] || skip "f32-tied fixture absent"
IDS1=312,0,154,258,300,170,78,39,287,29
IDS2=12,279,234,16,3,280,67,161,144,84

run 0 grad -m "$F32" --ids $IDS1 --ids $IDS2 --out "$TMP/g.safetensors"
[ ! -s "$OUT" ] || fail "grad printed to stdout"
# transformers (tests/fixtures/expect/train/index.json, grad-f32-tied): loss 13.65507229016514
err_has "stats: loss 13.65507"
err_has "32 tensors written"
[ -s "$TMP/g.safetensors" ] || fail "no gradient file"
grep -q "backbone.layers.2.mixer.A_log" "$TMP/g.safetensors" || fail "no A_log gradient in the file"
grep -q '"loss"' "$TMP/g.safetensors" || fail "no loss tensor in the file"

run 0 grad -m "$F32" --ids $IDS1 --lora-r 4 --lora-targets in_proj,out_proj --out "$TMP/l.safetensors" -q
[ ! -s "$ERR" ] || fail "--quiet wrote to stderr"
grep -q "base_model.model.backbone.layers.0.mixer.out_proj.lora_B.weight" "$TMP/l.safetensors" || fail "no PEFT key"
if grep -q "x_proj.lora_A" "$TMP/l.safetensors"; then fail "x_proj adapted though not a target"; fi

# bad input
run 2 grad -m "$F32" --ids $IDS1
err_has "--out"
run 1 grad -m "$F32" --ids 1,2,3 --ids 1,2 --out "$TMP/x.safetensors"
err_has "same length"
run 1 grad -m "$F32" --ids 1,2,999 --out "$TMP/x.safetensors"
err_has "999"
run 2 grad -m "$F32" --ids 1,2,3 --lora-targets in_proj,dt_proj --out "$TMP/x.safetensors"
err_has "dt_proj"
run 1 grad -m "$F32" --ids 5 --out "$TMP/x.safetensors"
err_has "no next-token target"
run 1 grad -m "$F32" --ids 1,2,3 --out "$TMP/no/such/dir/x.safetensors"
[ "$(wc -l <"$ERR")" -eq 1 ] || fail "more than one error line"
exit 0
