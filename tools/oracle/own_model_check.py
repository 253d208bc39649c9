"""Checks mambac's own model (models/austen) with the Hugging Face libraries (issue 11):
- `tokenizers` loads its tokenizer.json and encodes the validation text to the ids `mambac data` wrote;
- `MambaForCausalLM.from_pretrained` loads the model and its logits agree with `mambac forward`'s.

    python3 tools/oracle/own_model_check.py --model models/austen --valid-text valid.txt --valid-bin valid.bin \
        --ids ids.txt --mambac-logits logits.npy --out check.json
"""
import argparse
import json
import sys

import numpy as np
import tokenizers
import torch
import transformers
from transformers import MambaForCausalLM

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from crosscheck_train import read_tokens  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--valid-text", required=True)
    ap.add_argument("--valid-bin", required=True)
    ap.add_argument("--ids", required=True, help="comma-separated ids mambac forward ran")
    ap.add_argument("--mambac-logits", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    tok = tokenizers.Tokenizer.from_file(a.model + "/tokenizer.json")
    text = open(a.valid_text, encoding="utf-8").read()
    theirs = tok.encode(text).ids
    ours = read_tokens(a.valid_bin).tolist()
    eos = tok.token_to_id("<|endoftext|>")
    if ours and ours[-1] == eos and len(ours) == len(theirs) + 1:
        ours = ours[:-1]  # mambac data --eos ends the document with it
    first_diff = next((i for i, (x, y) in enumerate(zip(ours, theirs)) if x != y), None)
    ids = [int(x) for x in open(a.ids).read().split(",")]
    model = MambaForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        ref = model(input_ids=torch.tensor([ids])).logits.numpy()
    got = np.load(a.mambac_logits)
    err = float(np.abs(got - ref).max() / np.abs(ref).max())
    out = {"tokenizers": tokenizers.__version__, "transformers": transformers.__version__,
           "valid_ids_tokenizers": len(theirs), "valid_ids_mambac": len(ours),
           "ids_identical": ours == theirs, "first_difference": first_diff,
           "logits_max_err_over_max": err, "logits_shape": list(ref.shape)}
    print(json.dumps(out, indent=1))
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
