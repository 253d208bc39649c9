#!/usr/bin/env python3
"""Reference oracle for mambac: builds small random Mamba-1 models with Hugging Face
transformers and records what `MambaForCausalLM` computes for them.

Writes (relative to --root, default tests/fixtures):
  models/<name>/       config.json, generation_config.json, *.safetensors (+ index when sharded)
  expect/<name>.json   forward logits (.npy beside it), greedy / batched greedy generations,
                       text generation with the real GPT-NeoX tokenizer (tiny-neox only)
  expect/sampler.json  logits-processor cases (repetition penalty, temperature, top-k, top-p, min-p)

Everything runs on the CPU in float32 with deterministic algorithms and one thread.
See tools/oracle/README.md for how to rerun it on the device machine.
"""

import argparse
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch

import transformers
import safetensors
from transformers import GenerationConfig, MambaConfig, MambaForCausalLM

SEED = 1234
SCRIPT = "tools/oracle/make_fixtures.py"

# ---------------------------------------------------------------------------------------------
# Model zoo. Everything that is not listed keeps the MambaConfig default.
# ---------------------------------------------------------------------------------------------
MODELS = [
    dict(name="tiny-neox", dtype="bfloat16",
         cfg=dict(vocab_size=50280, hidden_size=16, num_hidden_layers=2, state_size=8, conv_kernel=4,
                  tie_word_embeddings=True)),
    dict(name="f32-tied", dtype="float32",
         cfg=dict(vocab_size=320, hidden_size=64, num_hidden_layers=3, state_size=16, conv_kernel=4,
                  time_step_rank="auto", residual_in_fp32=True, use_conv_bias=True, use_bias=False,
                  tie_word_embeddings=True, eos_token_id=5, pad_token_id=3, bos_token_id=0)),
    dict(name="untied-bias", dtype="float32",
         cfg=dict(vocab_size=264, hidden_size=48, num_hidden_layers=2, state_size=8, conv_kernel=3,
                  time_step_rank=7, use_bias=True, use_conv_bias=False, residual_in_fp32=False,
                  tie_word_embeddings=False)),
    dict(name="f16-inter", dtype="float16",
         cfg=dict(vocab_size=256, hidden_size=40, num_hidden_layers=2, state_size=6, conv_kernel=2,
                  intermediate_size=72, tie_word_embeddings=True, layer_norm_epsilon=1e-3)),
    dict(name="sharded-bf16", dtype="bfloat16", max_shard_size="30KB",
         cfg=dict(vocab_size=200, hidden_size=32, num_hidden_layers=4, state_size=4, conv_kernel=4,
                  expand=3)),
    dict(name="k1-rank1", dtype="float32",
         cfg=dict(vocab_size=136, hidden_size=24, num_hidden_layers=1, state_size=1, conv_kernel=1,
                  time_step_rank=1, tie_word_embeddings=False)),
]

MIN_MARGIN = 2e-3  # smallest accepted top-1 / top-2 logit gap along a recorded greedy path

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MODEL_FILES_KEEP = ("config.json", "generation_config.json", "model.safetensors.index.json")


def log(*a):
    print(*a, flush=True)


def f32list(t):
    """Tensor -> list of Python floats (exact f32 values); -inf -> None (JSON null)."""
    out = []
    for v in t.detach().to(torch.float32).reshape(-1).tolist():
        if v == -math.inf:
            out.append(None)
        elif math.isnan(v) or v == math.inf:
            raise ValueError("unexpected NaN/+inf in processed scores")
        else:
            out.append(v)
    return out


# ---------------------------------------------------------------------------------------------
# 1. Building and perturbing a random model
# ---------------------------------------------------------------------------------------------
def perturb_(model, cfg, gen):
    """Give every parameter a non-trivial value. Asserts that each parameter was handled."""
    E = model.config.intermediate_size
    N = model.config.state_size
    R = model.config.time_step_rank
    H = model.config.hidden_size

    def randn(*shape, std=1.0, mean=0.0):
        return torch.randn(*shape, generator=gen) * std + mean

    seen = set()
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied lm_head is listed once (as the embedding)
            shape = tuple(p.shape)
            if name.endswith("embeddings.weight") or name == "lm_head.weight":
                v = randn(*shape, std=0.5)
            elif name.endswith("norm.weight") or name.endswith("norm_f.weight"):
                v = randn(*shape, std=0.2, mean=1.0)
            elif name.endswith("in_proj.weight"):
                v = randn(*shape, std=1.0 / math.sqrt(H))
            elif name.endswith("in_proj.bias") or name.endswith("out_proj.bias"):
                v = randn(*shape, std=0.2)
            elif name.endswith("conv1d.weight"):
                v = randn(*shape, std=0.6)
            elif name.endswith("conv1d.bias"):
                v = randn(*shape, std=0.3)
            elif name.endswith("x_proj.weight"):
                v = randn(*shape, std=1.0 / math.sqrt(E))
            elif name.endswith("dt_proj.weight"):
                v = randn(*shape, std=0.5 / math.sqrt(R))
            elif name.endswith("dt_proj.bias"):
                # inverse softplus of dt drawn log-uniformly in [1e-3, 2]; then a few channels beyond the softplus
                # threshold (20) so the identity branch is taken, one at ~90, and one very negative channel.
                dt = torch.exp(torch.rand(shape, generator=gen) * (math.log(2.0) - math.log(1e-3)) + math.log(1e-3))
                v = dt + torch.log(-torch.expm1(-dt))
                nbig = max(1, E // 16)
                idx = torch.randperm(E, generator=gen)
                v[idx[:nbig]] = 21.0 + 6.0 * torch.rand(nbig, generator=gen)
                # ~90: log1p(expf(v)) overflows to inf in f32 (exp(v) > FLT_MAX); only the threshold rule gives v
                v[idx[nbig]] = 89.0 + 4.0 * torch.rand(1, generator=gen)
                v[idx[nbig + 1]] = -9.0 - torch.rand(1, generator=gen)
            elif name.endswith("A_log"):
                v = torch.log(torch.arange(1, N + 1, dtype=torch.float32)).expand(E, N) + randn(E, N, std=0.3)
            elif name.endswith("mixer.D"):
                v = randn(*shape, std=0.5, mean=1.0)
            elif name.endswith("out_proj.weight"):
                v = randn(*shape, std=0.7 / math.sqrt(E))
            else:
                raise RuntimeError(f"no perturbation rule for parameter {name}")
            assert tuple(v.shape) == shape, (name, v.shape, shape)
            p.copy_(v.to(p.dtype))
            seen.add(name)
    return seen


def build_and_save(spec, index, models_dir):
    name = spec["name"]
    cfg = MambaConfig(**spec["cfg"])
    torch.manual_seed(SEED + index)
    model = MambaForCausalLM(cfg)
    gen = torch.Generator().manual_seed(SEED * 100 + index)
    perturb_(model, cfg, gen)
    model = model.to(DTYPES[spec["dtype"]]).eval()
    out = os.path.join(models_dir, name)
    if os.path.isdir(out):
        shutil.rmtree(out)
    kw = {}
    if "max_shard_size" in spec:
        kw["max_shard_size"] = spec["max_shard_size"]
    model.save_pretrained(out, **kw)
    for f in sorted(os.listdir(out)):
        if not (f in MODEL_FILES_KEEP or f.endswith(".safetensors")):
            p = os.path.join(out, f)
            log(f"  removing non-model file {p}")
            if os.path.isdir(p):
                shutil.rmtree(p)
            else:
                os.remove(p)
    files = sorted(os.listdir(out))
    log(f"  saved {name}: {files}")
    if "max_shard_size" in spec:
        shards = [f for f in files if f.endswith(".safetensors")]
        assert len(shards) >= 3 and "model.safetensors.index.json" in files, files
    return out


def load_ref(path):
    m = MambaForCausalLM.from_pretrained(path, dtype=torch.float32)
    m.eval()
    for p in m.parameters():
        assert p.dtype == torch.float32
    return m


# ---------------------------------------------------------------------------------------------
# 2. Reference outputs
# ---------------------------------------------------------------------------------------------
def greedy_one(model, prompt, n):
    ids = torch.tensor([prompt], dtype=torch.long)
    # explicit all-ones mask: with pad != eos and the pad id inside the prompt HF would otherwise *infer* a
    # mask (ids != pad) and hide those tokens; mambac's single-prompt generate takes no mask.
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             output_logits=True, return_dict_in_generate=True)
    return out.sequences[0].tolist(), min_margin(out.logits)


def min_margin(step_logits):
    """Smallest top-1 minus top-2 logit gap over the generated steps (how safe an argmax is)."""
    m = math.inf
    for lg in step_logits:
        top2 = torch.topk(lg[0].float(), 2).values
        m = min(m, (top2[0] - top2[1]).item())
    return m


def greedy_batch_padded(model, prompts, n):
    """Left-pad, generate with a mask, strip pads. Returns the stripped rows."""
    pad = model.generation_config.pad_token_id
    eos = model.generation_config.eos_token_id
    eos_set = set(eos if isinstance(eos, list) else [eos])
    Lmax = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), Lmax), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), Lmax), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, Lmax - len(p):] = torch.tensor(p)
        mask[i, Lmax - len(p):] = 1
    with torch.no_grad():
        out = model.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False)
    rows = []
    for i, p in enumerate(prompts):
        row = out[i, Lmax - len(p):].tolist()
        assert row[:len(p)] == p
        new = row[len(p):]
        for j, t in enumerate(new):
            if t in eos_set:
                assert all(x == pad for x in new[j + 1:]), (new, pad)
                new = new[:j + 1]
                break
        rows.append(p + new)
    return rows


def find_eos_prompts(model, V, eos, rng, n_new, want=2, tries=6, batch=256):
    """Search random short prompts whose greedy continuation hits EOS after >= 2 new tokens."""
    found = []
    for t in range(tries):
        L = 1 + (t % 4)
        cand = rng.integers(0, V, size=(batch, L))
        ids = torch.tensor(cand, dtype=torch.long)
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new, do_sample=False)
        for i in range(batch):
            new = out[i, L:].tolist()
            if eos in new and 2 <= new.index(eos) < n_new - 1:
                found.append(cand[i].tolist())
                if len(found) >= want:
                    return found
    return found


def reference_outputs(spec, model_dir, expect_dir, tokenizer_path):
    name = spec["name"]
    model = load_ref(model_dir)
    cfg = model.config
    V, K = cfg.vocab_size, cfg.conv_kernel
    eos = model.generation_config.eos_token_id
    rng = np.random.default_rng(SEED + sum(map(ord, name)))
    n_params = sum(p.numel() for p in model.parameters())

    res = {"model": f"models/{name}", "n_params": int(n_params),
           "config": {"vocab_size": V, "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
                      "state_size": cfg.state_size, "time_step_rank": cfg.time_step_rank, "conv_kernel": K,
                      "num_hidden_layers": cfg.num_hidden_layers, "use_bias": cfg.use_bias,
                      "use_conv_bias": cfg.use_conv_bias, "residual_in_fp32": cfg.residual_in_fp32,
                      "tie_word_embeddings": cfg.tie_word_embeddings,
                      "layer_norm_epsilon": cfg.layer_norm_epsilon, "stored_dtype": spec["dtype"],
                      "eos_token_id": eos, "pad_token_id": model.generation_config.pad_token_id,
                      "bos_token_id": model.generation_config.bos_token_id}}

    # --- forward logits -------------------------------------------------------------------
    Ls = []
    for L in [1, 2, K - 1, K, K + 1, 17, 64]:
        if L >= 1 and L not in Ls:
            Ls.append(L)
    if name == "tiny-neox":  # V = 50280: 201 KB of logits per token, keep it small
        shapes = [(1, 1), (1, K + 1), (3, 1)]
    else:
        shapes = [(1, L) for L in Ls] + [(3, L) for L in (1, K + 1, 17)]
    res["forward"] = []
    for i, (B, L) in enumerate(shapes):
        ids = rng.integers(0, V, size=(B, L))
        if name == "tiny-neox":  # padded-vocab rows (never produced by the tokenizer)
            ids.flat[0] = 50277 + i % 3
            if ids.size > 1:
                ids.flat[-1] = 50279
        with torch.no_grad():
            logits = model(torch.tensor(ids, dtype=torch.long)).logits
        assert logits.dtype == torch.float32 and tuple(logits.shape) == (B, L, V)
        fn = f"{name}.fwd{i}.npy"
        np.save(os.path.join(expect_dir, fn), np.ascontiguousarray(logits.numpy().astype("<f4")))
        res["forward"].append({"ids": ids.tolist(), "logits": fn})
        log(f"  fwd{i} B={B} L={L} logits range [{logits.min().item():.3f}, {logits.max().item():.3f}] "
            f"std {logits.std().item():.3f}")

    # --- greedy ---------------------------------------------------------------------------
    n = 12
    plens = []
    for L in [1, 3, K, 9, 20]:
        if L not in plens:
            plens.append(L)
    if len(plens) < 5:
        plens.insert(2, K + 1)
    res["greedy"] = []
    hit_eos = 0
    for L in plens:
        for attempt in range(20):  # avoid near-ties in the argmax (C float order may flip them)
            prompt = rng.integers(0, V, size=L).tolist()
            row, marg = greedy_one(model, prompt, n)
            if marg >= MIN_MARGIN:
                break
            log(f"  greedy prompt len {L}: margin {marg:.2e} too small, redrawing")
        res["greedy"].append({"prompt": prompt, "max_new_tokens": n, "output": row, "min_top2_margin": marg})
        hit_eos += len(row) < L + n
    eos_prompts = []
    for prompt in find_eos_prompts(model, V, eos, rng, n, want=4):
        row, marg = greedy_one(model, prompt, n)
        assert len(row) < len(prompt) + n and row[-1] == eos, row
        if marg < MIN_MARGIN or len(eos_prompts) == 2:
            continue
        eos_prompts.append(prompt)
        res["greedy"].append({"prompt": prompt, "max_new_tokens": n, "output": row, "min_top2_margin": marg})
        hit_eos += 1
    full = sum(len(g["output"]) == len(g["prompt"]) + n for g in res["greedy"])
    log(f"  greedy: {len(res['greedy'])} prompts, {hit_eos} stop at EOS, {full} run full length")
    assert full >= 3

    # --- batched greedy (left padding + attention mask), only where padding is exact ------------------
    res["batched_greedy"] = []
    if not cfg.use_bias:
        nb = 10
        sets = [[3, 7, 12], [K, 1, 9]]
        if eos_prompts:
            sets.append([5, len(eos_prompts[0]), 2])
        for si, lens in enumerate(sets):
            for attempt in range(8):
                prompts = [rng.integers(0, V, size=L).tolist() for L in lens]
                if si == 2 and eos_prompts:
                    prompts[1] = eos_prompts[0]
                rows = greedy_batch_padded(model, prompts, nb)
                alone_m = [greedy_one(model, p, nb) for p in prompts]
                alone = [a for a, _ in alone_m]
                marg = min(m for _, m in alone_m)
                if rows == alone and marg >= MIN_MARGIN:
                    break
                log(f"  WARNING batched != alone (set {si}, attempt {attempt}): {rows} vs {alone}")
            else:
                raise AssertionError("batched greedy never matched single-prompt greedy")
            res["batched_greedy"].append({"prompts": prompts, "max_new_tokens": nb, "outputs": rows,
                                          "min_top2_margin": marg})
        log(f"  batched greedy: {len(res['batched_greedy'])} batches")

    # --- text generation with the real tokenizer (tiny-neox) --------------------------------------
    if name == "tiny-neox":
        from transformers import PreTrainedTokenizerFast
        if not tokenizer_path or not os.path.exists(tokenizer_path):
            raise SystemExit(f"tokenizer.json not found at {tokenizer_path!r} (see tools/oracle/README.md)")
        tok = PreTrainedTokenizerFast(tokenizer_file=tokenizer_path)
        res["text_greedy"] = []
        for text in ["Hey how are you doing?", "Grüße aus Zürich — naïve café, 東京 🚀", "Hello my name is"]:
            enc = tok(text, return_tensors="pt")
            ids = enc["input_ids"]
            row, marg = greedy_one(model, ids[0].tolist(), 10)
            res["text_greedy"].append({
                "prompt_text": text, "prompt_ids": ids[0].tolist(), "max_new_tokens": 10,
                "output_ids": row,
                "output_text": tok.batch_decode([row], skip_special_tokens=False)[0],
                "min_top2_margin": marg})
            log(f"  text: {res['text_greedy'][-1]['output_text']!r} (margin {marg:.2e})")
    return res


# ---------------------------------------------------------------------------------------------
# 3. Logits processors
# ---------------------------------------------------------------------------------------------
def sampler_cases(rng):
    cases = []

    def add(desc, scores, prev, do_sample, temperature=1.0, top_k=0, top_p=1.0, min_p=None, rp=1.0):
        s = np.asarray(scores, dtype=np.float32)
        cases.append(dict(desc=desc, scores=s, prev_ids=[int(x) for x in prev],
                          settings=dict(do_sample=do_sample, temperature=float(temperature), top_k=int(top_k),
                                        top_p=float(top_p), min_p=None if min_p is None else float(min_p),
                                        repetition_penalty=float(rp))))

    def rnd(V, scale=3.0):
        return (rng.standard_normal(V) * scale).astype(np.float32)

    def with_ties(V, nt, at_rank):
        s = rnd(V)
        order = np.argsort(-s)
        v = s[order[at_rank]]
        for j in range(1, nt):
            s[order[at_rank + j]] = v  # ties right at the rank threshold
        return s

    def very_neg(s, k=3):
        s = s.copy()
        idx = rng.choice(len(s), size=k, replace=False)
        s[idx] = np.array([-1e4, -60.0, -3.0e38][:k], dtype=np.float32)
        return s

    # temperature only
    for t in (0.5, 0.7, 1.3, 2.0):
        add(f"temperature {t}", very_neg(rnd(int(rng.integers(50, 300))), 2), [], True, temperature=t)
    # top-k (with ties at the threshold)
    add("top_k 5 with 3-way tie at rank 4", with_ties(120, 3, 4), [], True, top_k=5)
    add("top_k 2 with three equal maxima", with_ties(64, 3, 0), [], True, top_k=2)
    add("top_k 1", rnd(80), [], True, top_k=1)
    add("top_k 50 (HF default value, explicit)", very_neg(rnd(200)), [], True, top_k=50)
    add("top_k larger than V", rnd(60), [], True, top_k=100)
    add("top_k 10 temperature 0.8", with_ties(150, 2, 9), [], True, temperature=0.8, top_k=10)
    # top-p boundary cases: probabilities 0.5, 0.25, 0.125, 0.125
    base = np.log(np.array([0.5, 0.25, 0.125, 0.125]))
    for p in (0.5, 0.75, 0.76, 0.9):
        add(f"top_p {p} on (.5,.25,.125,.125)", base, [], True, top_p=p)
    perm = np.array([2, 0, 3, 1])
    for p in (0.5, 0.76):
        add(f"top_p {p} on permuted (.125,.5,.125,.25)", base[perm], [], True, top_p=p)
    emb = np.full(64, -1e4, dtype=np.float32)
    pos = rng.choice(64, size=4, replace=False)
    emb[pos] = base
    for p in (0.75, 0.9):
        add(f"top_p {p}, 4 live entries among 64 (-1e4 elsewhere)", emb, [], True, top_p=p)
    for p in (0.3, 0.9, 0.95):
        add(f"top_p {p} random", rnd(int(rng.integers(50, 300))), [], True, top_p=p)
    add("top_p 0.0 (keeps min_tokens_to_keep=1)", rnd(70), [], True, top_p=0.0)
    ties = rnd(100)
    ties[10:14] = ties.max() + 1.0
    add("top_p 0.6 with 4 tied maxima", ties, [], True, top_p=0.6)
    # min-p
    half = np.log(np.array([0.5, 0.25, 0.125, 0.0625, 0.0625]))
    for m in (0.5, 0.51, 0.1):
        add(f"min_p {m} on (.5,.25,.125,.0625,.0625)", half, [], True, min_p=m)
    add("min_p 0.05 random", rnd(180), [], True, min_p=0.05)
    add("min_p 0.2 temperature 1.5", rnd(90), [], True, temperature=1.5, min_p=0.2)
    add("min_p 0.0 (enabled, no-op)", rnd(55), [], True, min_p=0.0)
    # repetition penalty, positive / negative / zero scores, repeated ids
    s = rnd(100)
    s[7], s[8], s[9] = 0.0, 3.0, -2.0
    prev = [7, 8, 9, 9, 8, 42, 42, 42, 0, 99]
    for r in (2.0, 1.3, 0.7):
        add(f"repetition_penalty {r} (sampling, no filters)", s, prev, True, rp=r)
    add("repetition_penalty 1.5, no previous ids", rnd(60), [], True, rp=1.5)
    # greedy: only the repetition penalty applies (other fields given but ignored by HF)
    add("greedy + repetition_penalty 1.2", s, prev, False, temperature=0.5, top_k=5, top_p=0.5, min_p=0.3, rp=1.2)
    g = rnd(75)
    top = int(np.argmax(g))
    g2 = g.copy()
    g2[top] = 4.0
    g2[(top + 1) % 75] = 3.0
    add("greedy + repetition_penalty 2.0 changes the argmax", g2, [top, top], False, rp=2.0)
    add("greedy, nothing active", rnd(50), [1, 2, 3], False)
    # combinations of everything
    for i, (t, k, p, m, r) in enumerate([(0.7, 40, 0.9, 0.05, 1.1), (1.2, 20, 0.8, None, 1.3),
                                         (0.9, 0, 0.95, 0.1, 1.05), (0.5, 8, 0.99, 0.02, 2.0),
                                         (1.0, 30, 1.0, 0.15, 1.2), (2.0, 100, 0.5, 0.01, 0.9)]):
        V = int(rng.integers(50, 300))
        sc = very_neg(with_ties(V, 2, max(0, (k or 10) - 1) if (k or 10) - 1 < V - 2 else 0), 3)
        prev = rng.integers(0, V, size=int(rng.integers(3, 20))).tolist()
        prev += prev[:3]  # repeats
        add(f"combination {i}", sc, prev, True, temperature=t, top_k=k, top_p=p, min_p=m, rp=r)
    return cases


def run_sampler(model, cases):
    out = []
    for c in cases:
        st = c["settings"]
        gc, _ = model._prepare_generation_config(
            None, do_sample=st["do_sample"], temperature=st["temperature"], top_k=st["top_k"], top_p=st["top_p"],
            min_p=st["min_p"], repetition_penalty=st["repetition_penalty"])
        model._prepare_special_tokens(gc, kwargs_has_attention_mask=True, device="cpu")
        prev = torch.tensor([c["prev_ids"]], dtype=torch.long).reshape(1, -1)
        procs = model._get_logits_processor(generation_config=gc, input_ids_seq_length=prev.shape[1], device="cpu")
        scores = torch.tensor(c["scores"][None, :], dtype=torch.float32)
        processed = procs(prev, scores.clone())
        probs = torch.softmax(processed, dim=-1)
        e = {"desc": c["desc"], "scores": f32list(scores[0]), "prev_ids": c["prev_ids"], "settings": st,
             "hf_processors": [type(p).__name__ for p in procs],
             "processed": f32list(processed[0]), "probs": f32list(probs[0]),
             "kept": [i for i, v in enumerate(processed[0].tolist()) if v != -math.inf]}
        if not st["do_sample"]:
            e["argmax"] = int(torch.argmax(processed[0]).item())
        assert all(v is not None for v in e["probs"])
        out.append(e)
    return out


# ---------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="tests/fixtures", help="fixtures root (models/ and expect/ go below)")
    ap.add_argument("--tokenizer", default=".dev/tokenizer.json", help="GPT-NeoX-20B tokenizer.json")
    ap.add_argument("--only", default="", help="comma-separated model names (default: all)")
    ap.add_argument("--no-sampler", action="store_true")
    args = ap.parse_args()

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    t0 = time.time()

    models_dir = os.path.join(args.root, "models")
    expect_dir = os.path.join(args.root, "expect")
    os.makedirs(models_dir, exist_ok=True)
    os.makedirs(expect_dir, exist_ok=True)
    meta = {"script": SCRIPT, "args": " ".join(sys.argv[1:]), "seed": SEED, "torch": torch.__version__,
            "transformers": transformers.__version__, "safetensors": safetensors.__version__,
            "numpy": np.__version__, "python": sys.version.split()[0], "device": "cpu",
            "notes": "reference = MambaForCausalLM.from_pretrained(dir, dtype=torch.float32) on the stored weights "
                     "(bf16/f16 files upcast), eval mode, CPU, 1 thread, deterministic algorithms. "
                     "greedy: model.generate(ids, attention_mask=ones, max_new_tokens=n, do_sample=False), full row. "
                     "batched_greedy: left-padded with pad_token_id + attention_mask, rows stripped of left pads "
                     "and of pads after EOS; each equals the single-prompt run."}
    try:
        import tokenizers
        meta["tokenizers"] = tokenizers.__version__
    except ImportError:
        pass
    import importlib.util
    # the CPU reference path is HF's pure-PyTorch fallback; record whether kernel packages were even present
    meta["kernel_packages_present"] = {k: importlib.util.find_spec(k) is not None
                                       for k in ("mamba_ssm", "causal_conv1d", "kernels")}

    only = set(filter(None, args.only.split(",")))
    for i, spec in enumerate(MODELS):
        if only and spec["name"] not in only:
            continue
        log(f"[{time.time() - t0:6.1f}s] model {spec['name']}")
        d = build_and_save(spec, i, models_dir)
        res = reference_outputs(spec, d, expect_dir, args.tokenizer)
        doc = {"meta": meta, **res}
        with open(os.path.join(expect_dir, spec["name"] + ".json"), "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False, indent=1)
            f.write("\n")

    if not args.no_sampler:
        log(f"[{time.time() - t0:6.1f}s] sampler")
        model = MambaForCausalLM(MambaConfig(vocab_size=64, hidden_size=8, num_hidden_layers=1, state_size=2))
        model.eval()
        cases = run_sampler(model, sampler_cases(np.random.default_rng(SEED)))
        smeta = dict(meta)
        smeta["notes"] = (
            "processors built as generate does: gc = model._prepare_generation_config(None, do_sample=..., "
            "temperature=..., top_k=..., top_p=..., min_p=..., repetition_penalty=...) (all six always passed "
            "explicitly as keyword arguments, so HF's default top_k=50 never applies); "
            "model._prepare_special_tokens(gc); procs = model._get_logits_processor(gc, input_ids_seq_length="
            "len(prev_ids)); processed = procs(prev_ids[None], scores[None]) in float32. Field meaning: top_k 0 = off "
            "(passed as 0, HF skips TopK when top_k == 0); top_p 1.0 = off (HF skips when top_p >= 1); min_p null = "
            "off (passed as None; 0.0 installs a no-op MinP); repetition_penalty 1.0 = off; temperature 1.0 = off. "
            "With do_sample false only the repetition penalty is applied (the other fields are given to HF and ignored "
            "by it). processed: -inf encoded as null. probs = torch.softmax(processed) in float32. kept = ids not -inf. "
            "hf_processors = the processor classes HF built, in order. The model is a throw-away "
            "MambaConfig(vocab_size=64, hidden_size=8, num_hidden_layers=1, state_size=2): the processors do not "
            "depend on it (eos 0 is unused because min_length is 0).")
        with open(os.path.join(expect_dir, "sampler.json"), "w", encoding="utf-8") as f:
            json.dump({"meta": smeta, "cases": cases}, f, ensure_ascii=False, indent=1)
            f.write("\n")
        log(f"  {len(cases)} sampler cases")
    log(f"[{time.time() - t0:6.1f}s] done")


if __name__ == "__main__":
    main()
