"""Cross-check of `mambac train` against transformers (issue 11): the same initial weights, the same token stream cut
into the same blocks in the same order, the same optimizer, schedule and clipping; then both trained models are
scored with one evaluation (transformers' forward on the validation blocks), so the comparison is of the training
alone. Runs where torch runs (CUDA when present; the pure-PyTorch Mamba path, float32).

    python3 tools/oracle/crosscheck_train.py --init models/work/init --train train.bin --valid valid.bin \
        --mambac-model out/mambac --batch 8 --length 256 --steps 1000 --lr 3e-3 --warmup 30 \
        --scheduler cosine --out crosscheck.json

The token files are `mambac data` files (header: magic MCTOKENS, see include/mambac.h): read here without mambac.
mambac's run must use --no-shuffle --packing with the same --batch-size, --max-length, --max-steps, --lr,
--warmup-steps, --lr-scheduler, --max-grad-norm 1 and --weight-decay 0, so its batch k holds blocks k*B .. k*B+B-1.
"""
import argparse
import json
import math
import struct
import time

import numpy as np
import torch
import transformers
from transformers import MambaForCausalLM, get_scheduler


def read_tokens(path):
    with open(path, "rb") as f:
        head = f.read(84)
        assert head[:8] == b"MCTOKENS", path
        version, header_bytes, token_bytes, eos = struct.unpack("<IIIi", head[8:24])
        n_tokens, n_docs, n_vocab = struct.unpack("<QQQ", head[24:48])
        f.seek(header_bytes)
        dtype = np.uint16 if token_bytes == 2 else np.uint32
        ids = np.frombuffer(f.read(n_tokens * token_bytes), dtype=dtype).astype(np.int64)
    assert len(ids) == n_tokens
    return ids


def blocks(ids, length):
    """The stream cut into length-token blocks as mambac packs it: the last one may be shorter."""
    return [torch.from_numpy(ids[i:i + length].copy()) for i in range(0, len(ids), length)]


def batches(blks, batch, steps):
    """mambac's batches without shuffling: each epoch walks the blocks in order, batch at a time, its last batch
    short; rows are right-padded with 0 and their labels with -100 (the collator's rule)."""
    out = []
    while len(out) < steps:
        for i in range(0, len(blks), batch):
            rows = blks[i:i + batch]
            T = max(len(r) for r in rows)
            x = torch.zeros(len(rows), T, dtype=torch.long)
            y = torch.full((len(rows), T), -100, dtype=torch.long)
            for j, r in enumerate(rows):
                x[j, :len(r)] = r
                y[j, :len(r)] = r
            out.append((x, y))
            if len(out) == steps:
                break
    return out


@torch.no_grad()
def evaluate(model, valid, batch, device):
    """Mean next-token NLL over the whole validation blocks (each from an empty state)."""
    model.eval()
    total, count = 0.0, 0
    whole = torch.stack([b for b in valid if len(b) == len(valid[0])])
    for i in range(0, len(whole), batch):
        x = whole[i:i + batch].to(device)
        logits = model(input_ids=x).logits.float()
        lp = torch.log_softmax(logits[:, :-1], dim=-1)
        nll = -lp.gather(-1, x[:, 1:, None]).squeeze(-1)
        total += float(nll.sum())
        count += nll.numel()
    model.train()
    return total / count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--init", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--valid", required=True)
    ap.add_argument("--mambac-model", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--scheduler", default="linear")
    ap.add_argument("--total-steps", type=int, default=0,
                    help="the schedule's length when the run stops early (mambac's --max-steps); default --steps")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    train = blocks(read_tokens(a.train), a.length)
    valid = blocks(read_tokens(a.valid), a.length)
    model = MambaForCausalLM.from_pretrained(a.init, dtype=torch.float32).to(dev)
    model.train()
    # The Trainer's groups: no decay anywhere at weight_decay 0, so one group.
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    sched = get_scheduler(a.scheduler, opt, num_warmup_steps=a.warmup,
                          num_training_steps=a.total_steps if a.total_steps > 0 else a.steps)
    t0 = time.time()
    losses = []
    for x, y in batches(train, a.batch, a.steps):
        x, y = x.to(dev), y.to(dev)
        loss = model(input_ids=x, labels=y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(float(loss))
    secs = time.time() - t0
    v_torch = evaluate(model, valid, 16, dev)
    theirs = MambaForCausalLM.from_pretrained(a.mambac_model, dtype=torch.float32).to(dev)
    v_mambac = evaluate(theirs, valid, 16, dev)
    out = {"transformers": transformers.__version__, "torch": torch.__version__, "device": dev,
           "steps": a.steps, "schedule_steps": a.total_steps if a.total_steps > 0 else a.steps, "batch": a.batch, "length": a.length, "lr": a.lr, "warmup": a.warmup,
           "scheduler": a.scheduler, "train_seconds_transformers": secs,
           "loss_first_last_transformers": [losses[0], losses[-1]],
           "valid_loss_transformers": v_torch, "valid_loss_mambac": v_mambac,
           "relative_difference": (v_mambac - v_torch) / v_torch,
           "valid_ppl_transformers": math.exp(v_torch), "valid_ppl_mambac": math.exp(v_mambac)}
    print(json.dumps(out, indent=1))
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
