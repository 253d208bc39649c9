"""Logits of fixture models with LoRA adapters applied by PEFT (unmerged, eval mode), for tests/test_lora.c.

Adapters: the PEFT-written ones of train_fixtures.py (lora-*-adapter) and the ones mambac wrote with
`mambac finetune` (mambac-*-adapter), so the test shows both directions: mambac reads PEFT's files, and PEFT reads
mambac's files and computes what mambac computes. Computed in float64 (KeepFloat64, as train_fixtures.py), stored
float32 .npy [B, T, V] plus expect/train/lora_logits.json.

    python3 tools/oracle/lora_logits.py [--root tests/fixtures]
"""
import argparse
import json
import os
import sys

import numpy as np
import peft
import torch
import transformers
from peft import PeftModel
from transformers import MambaForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_fixtures import KeepFloat64, allow_lora_out_proj  # noqa: E402

ADAPTERS = [  # (adapter folder under expect/train, base model under models)
    ("lora-f32-tied-adapter", "f32-tied"),
    ("lora-rslora-f32-tied-adapter", "f32-tied"),
    ("lora-bias-all-untied-bias-adapter", "untied-bias"),
    ("mambac-f32-tied-adapter", "f32-tied"),
    ("mambac-bias-all-untied-bias-adapter", "untied-bias"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="tests/fixtures")
    args = ap.parse_args()
    out = {"meta": {"script": "tools/oracle/lora_logits.py", "torch": torch.__version__,
                    "transformers": transformers.__version__, "peft": peft.__version__,
                    "mode": "PeftModel.from_pretrained (unmerged), eval, float64 via KeepFloat64; stored float32"},
           "cases": []}
    gen = torch.Generator().manual_seed(7)
    for adapter, model in ADAPTERS:
        base = MambaForCausalLM.from_pretrained(os.path.join(args.root, "models", model), dtype=torch.float32)
        V = base.config.vocab_size
        ids = torch.randint(0, V, (2, 8), generator=gen)
        with allow_lora_out_proj():
            pm = PeftModel.from_pretrained(base, os.path.join(args.root, "expect", "train", adapter))
        pm.eval()
        pm.double()
        with torch.no_grad(), KeepFloat64():
            logits = pm(input_ids=ids).logits
        assert logits.dtype == torch.float64
        name = adapter.replace("-adapter", "") + ".logits.npy"
        np.save(os.path.join(args.root, "expect", "train", name), logits.float().numpy())
        out["cases"].append({"adapter": f"expect/train/{adapter}", "model": f"models/{model}",
                             "input_ids": ids.tolist(), "logits": f"expect/train/{name}"})
        print(adapter, "max |logit|", float(logits.abs().max()))
    with open(os.path.join(args.root, "expect", "train", "lora_logits.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
