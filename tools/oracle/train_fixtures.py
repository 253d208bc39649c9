#!/usr/bin/env python3
"""Training reference fixtures for mambac: losses, gradients, AdamW steps and LoRA adapters, as computed by
Hugging Face transformers (`MambaForCausalLM`, pure-PyTorch path) and PEFT (`LoraConfig`, `get_peft_model`,
`save_pretrained`), on the small fixture models in tests/fixtures/models/ (made by make_fixtures.py).

Writes (relative to --root, default tests/fixtures) into expect/train/:
  index.json                   every case: model, ids, labels, LoRA config, optimizer settings, files, versions
  grad-<model>[-ignore].safetensors   loss + gradient of every parameter (Hugging Face names) + input_ids, labels
  lora-<variant>.safetensors   loss + gradient of every trainable PEFT tensor (names as PEFT saves them)
  lora-<variant>-adapter/      the adapter those gradients belong to, written by PEFT's save_pretrained
  adam-<variant>.safetensors   per-step loss / learning rate / gradient norm of 3 AdamW steps + final weights

References are computed in float64: the float32 fixture weights (and the float32 adapter values) are converted with
`.double()` and the forward runs under `KeepFloat64`, a torch function mode that turns transformers' float32 up-casts
(`.float()`, `.to(torch.float32)`, meant for half precision) into no-ops on float64 tensors and fails on any other
op that would produce a float32 tensor, so the whole computation is float64. Values are stored as float32 (losses
also as float64). Every case is also rerun in plain float32 (transformers' normal path) and the gap is recorded in
index.json (`f32_check`) as a hint for the C tolerances. Gradients are checked against central finite differences in
float64 inside this script (relative error < 1e-6 asserted).

PEFT 0.21 refuses `out_proj` as a LoRA target on Mamba models; see `allow_lora_out_proj` for why and for what this
script does about it. See tools/oracle/README.md ("Training fixtures") for how to rerun it.
"""

import argparse
import contextlib
import copy
import importlib.util
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

import peft
import safetensors
import transformers
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from safetensors.torch import save_file
from transformers import MambaForCausalLM, Trainer, get_scheduler

SCRIPT = "tools/oracle/train_fixtures.py"
SEED = 4321

TARGETS = ["x_proj", "embeddings", "in_proj", "out_proj"]
FD_STEP = 1e-5          # step of the 5-point central difference (float64; error O(h^4): the random models are
                        # curved enough that the 3-point O(h^2) difference misses 1e-6 on some LoRA entries)
FD_MIN_GRAD = 1e-3      # only entries with |grad| >= this are checked (round-off of the difference stays < 1e-7 rel)
FD_MAX_REL = 1e-6       # asserted bound on |fd - autograd| / |autograd|

# Optimizer settings shared by every adam case (TrainingArguments names in comments).
ADAM = dict(lr=1e-2,            # learning_rate
            betas=(0.9, 0.999),  # adam_beta1, adam_beta2
            eps=1e-8,            # adam_epsilon
            max_grad_norm=1.0,   # max_grad_norm
            scheduler="linear",  # lr_scheduler_type
            warmup_steps=1,      # warmup_steps
            steps=3)             # max_steps


def log(*a):
    print(*a, flush=True)


# ---------------------------------------------------------------------------------------------
# float64 reference
# ---------------------------------------------------------------------------------------------
class KeepFloat64(TorchFunctionMode):
    """Inside this mode a cast of a float64 tensor to float32 returns the tensor unchanged, and any other op that
    yields a float32/float16/bfloat16 tensor raises: the model runs entirely in float64.

    transformers 5.17's Mamba code casts to float32 in several places (`A_log.float()`, `B.float()`,
    `hidden_states.float()`, `D.float()`, `dt_proj.bias.float()`, RMSNorm's `.to(torch.float32)`, the fp32 residual,
    `logits.float()` and the loss's `logits.float()`); those are up-casts for half precision and would otherwise
    round a float64 model to float32 in the middle. Only the cast is skipped; every op still runs as written."""

    CASTS = (torch.Tensor.float, torch.Tensor.to, torch.Tensor.type)
    LOW = (torch.float32, torch.float16, torch.bfloat16)

    def __init__(self):
        super().__init__()
        self.casts_kept = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in self.CASTS and isinstance(out, torch.Tensor) and out.dtype in self.LOW \
                and isinstance(args[0], torch.Tensor) and args[0].dtype == torch.float64:
            self.casts_kept += 1
            return args[0]
        for o in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(o, torch.Tensor) and o.dtype in self.LOW:
                raise RuntimeError(f"KeepFloat64: {getattr(func, '__name__', func)} produced {o.dtype}")
        return out


def model_loss(model, ids, labels, f64):
    """HF's own loss: model(input_ids, labels).loss (shift inside, mean over non-ignored targets)."""
    ctx = KeepFloat64() if f64 else contextlib.nullcontext()
    with ctx:
        loss = model(input_ids=ids, labels=labels).loss
    want = torch.float64 if f64 else torch.float32
    assert loss.dtype == want, loss.dtype
    if f64:
        assert ctx.casts_kept > 0  # the mode did see transformers' up-casts
    return loss


def load_base(root, name):
    """The fixture model as saved (float32), train mode (use_cache off, the pure-PyTorch training path)."""
    # loaded by the path relative to the repo root, so PEFT writes it as base_model_name_or_path
    m = MambaForCausalLM.from_pretrained(os.path.join(root, "models", name), dtype=torch.float32)
    m.train()
    for p in m.parameters():
        assert p.dtype == torch.float32
    return m


def n_targets(labels):
    return int((labels[:, 1:] != -100).sum())


# ---------------------------------------------------------------------------------------------
# PEFT: out_proj on Mamba
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def allow_lora_out_proj():
    """PEFT 0.21 (`peft/tuners/tuners_utils.py`, `_check_lora_target_modules_mamba`, called from
    `BaseTuner._check_target_module_compatiblity` for every matched module during `inject_adapter`) raises
    ValueError for LoRA-like tuners when model_type is a Mamba type and the module name is `out_proj` or `conv1d`.
    The reason (PEFT #2562): transformers' CUDA training path `mamba_inner_fn` reads `out_proj.weight` (and
    `x_proj.weight`, `dt_proj.weight`, `conv1d.weight`) directly, so a LoRA wrapper there is silently bypassed on
    GPUs with mamba_ssm. The pure-PyTorch path (the one used here, no kernels installed) calls `self.out_proj(...)`
    as a module, so PEFT's `lora.Linear.forward` runs and the math is LoRA's. This context lets the name `out_proj`
    through the check (conv1d is still refused) while PEFT builds / loads the adapter; nothing else is patched, so
    the wrapper, its forward, its init and save_pretrained are PEFT's own."""
    from peft.tuners import tuners_utils
    orig = tuners_utils._check_lora_target_modules_mamba

    def check(peft_config, model, target_name):
        if target_name == "out_proj":
            return None
        return orig(peft_config, model, target_name)

    tuners_utils._check_lora_target_modules_mamba = check
    try:
        yield
    finally:
        tuners_utils._check_lora_target_modules_mamba = orig


def set_lora_values_(pm, gen):
    """Deterministic non-zero values for every LoRA tensor, so that no gradient is trivially zero (PEFT's default
    init has lora_B = 0 for Linear and lora_embedding_A = 0 for Embedding). Linear A keeps PEFT's distribution
    U(-1/sqrt(in), 1/sqrt(in)); Linear B ~ N(0, 0.1^2); embedding A ~ N(0, 0.05^2), embedding B ~ N(0, 1) (PEFT's)."""
    done = []
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" not in n:
                continue
            if ".lora_A." in n:
                bound = 1.0 / math.sqrt(p.shape[1])
                v = (torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound
            elif ".lora_B." in n:
                v = torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.1
            elif ".lora_embedding_A." in n:
                v = torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.05
            elif ".lora_embedding_B." in n:
                v = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            else:
                raise RuntimeError(f"no value rule for LoRA tensor {n}")
            p.copy_(v.to(p.dtype))
            done.append(n)
    assert done
    return done


def make_lora(root, model_name, lcfg, seed):
    """Base model (f32) + PEFT LoRA with deterministic values. Returns the float32 PeftModel."""
    base = load_base(root, model_name)
    torch.manual_seed(seed)
    with allow_lora_out_proj():
        pm = get_peft_model(base, LoraConfig(**lcfg))
    set_lora_values_(pm, torch.Generator().manual_seed(seed))
    pm.train()
    return pm


def check_lora_math(pm64, ids):
    """PEFT's adapted modules compute mamba-spec.md 8.3 / 8.4 (float64, unmerged): Linear y = W x + b + s B (A x),
    Embedding out = Emb[id] + s * sum_j Ae[j, id] Be[:, j]; a tied lm_head keeps the base embedding matrix."""
    mods = dict(pm64.named_modules())
    emb = mods["base_model.model.backbone.embeddings"]
    s = emb.scaling["default"]
    Ae, Be = emb.lora_embedding_A["default"], emb.lora_embedding_B["default"]
    with torch.no_grad():
        want = emb.base_layer.weight[ids] + s * (Ae[:, ids].permute(1, 2, 0) @ Be.T)
        assert torch.allclose(emb(ids), want, rtol=1e-12, atol=1e-12)
        gen = torch.Generator().manual_seed(7)
        for n in ("in_proj", "x_proj", "out_proj"):
            lin = mods[f"base_model.model.backbone.layers.0.mixer.{n}"]
            x = torch.randn(2, 5, lin.in_features, generator=gen, dtype=torch.float64)
            W, b = lin.base_layer.weight, lin.base_layer.bias
            A, B = lin.lora_A["default"].weight, lin.lora_B["default"].weight
            want = x @ W.T + (0 if b is None else b) + lin.scaling["default"] * ((x @ A.T) @ B.T)
            assert torch.allclose(lin(x), want, rtol=1e-12, atol=1e-12), n
    if pm64.config.tie_word_embeddings:
        assert pm64.base_model.model.lm_head.weight is emb.base_layer.weight


def saved_names(pm):
    """in-memory trainable parameter name -> the key PEFT writes into adapter_model.safetensors."""
    sd = get_peft_model_state_dict(pm)
    by_ptr = {}
    for k, v in sd.items():
        by_ptr.setdefault((v.data_ptr(), tuple(v.shape)), []).append(k)
    out = {}
    for n, p in pm.named_parameters():
        if not p.requires_grad:
            continue
        keys = by_ptr.get((p.data_ptr(), tuple(p.shape)), [])
        assert len(keys) == 1, (n, keys)
        out[n] = keys[0]
    assert sorted(out.values()) == sorted(sd.keys()), "saved state dict != trainable parameters"
    return out


def save_adapter(pm, out_dir):
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    pm.save_pretrained(out_dir)
    readme = os.path.join(out_dir, "README.md")  # PEFT's model card; readers ignore it
    if os.path.exists(readme):
        os.remove(readme)
    files = sorted(os.listdir(out_dir))
    assert files == ["adapter_config.json", "adapter_model.safetensors"], files
    return files


# ---------------------------------------------------------------------------------------------
# gradients and their finite-difference check
# ---------------------------------------------------------------------------------------------
def grads_of(named, loss):
    for _, p in named:
        p.grad = None
    loss.backward()
    out = {}
    for n, p in named:
        assert p.grad is not None, f"no gradient for {n}"
        out[n] = p.grad.detach().clone()
    return out


def fd_check(named, grads, loss_fn, pick_names, rng, log_prefix):
    """5-point central differences in float64, (8 (f(w+h) - f(w-h)) - (f(w+2h) - f(w-2h))) / 12h, on the largest-|g|
    entry and one random entry (|g| >= FD_MIN_GRAD) of each tensor in pick_names. Asserts the relative error bound."""
    params = dict(named)
    checks = []
    for n in pick_names:
        p, g = params[n], grads[n].reshape(-1)
        cand = torch.nonzero(g.abs() >= FD_MIN_GRAD).reshape(-1).tolist()
        if not cand:
            log(f"{log_prefix}   fd: {n} skipped (max |g| {g.abs().max().item():.2e} < {FD_MIN_GRAD})")
            continue
        idx = [int(g.abs().argmax())]
        r = cand[int(rng.integers(len(cand)))]
        if r != idx[0]:
            idx.append(r)
        for i in idx:
            flat = p.data.view(-1)
            w = flat[i].item()
            f = {}
            with torch.no_grad():
                for k in (-2, -1, 1, 2):
                    flat[i] = w + k * FD_STEP
                    f[k] = loss_fn().item()
                flat[i] = w
            fd = (8 * (f[1] - f[-1]) - (f[2] - f[-2])) / (12 * FD_STEP)
            an = g[i].item()
            rel = abs(fd - an) / abs(an)
            checks.append({"tensor": n, "flat_index": i, "autograd": an, "fd": fd, "rel_err": rel})
            assert rel < FD_MAX_REL, f"finite-difference check failed: {n}[{i}] autograd {an!r} fd {fd!r} rel {rel:.2e}"
    worst = max(c["rel_err"] for c in checks)
    log(f"{log_prefix}   fd: {len(checks)} entries over {len(pick_names)} tensors, worst rel err {worst:.2e}")
    return {"stencil": "5-point central", "step": FD_STEP, "min_abs_grad": FD_MIN_GRAD,
            "max_rel_err_bound": FD_MAX_REL, "n": len(checks), "worst_rel_err": worst,
            "tensors_checked": sorted({c["tensor"] for c in checks})}


def fd_picks_full(names, n_layer):
    """One tensor of every kind, from the first and the last layer, plus the top-level ones."""
    out = []
    for n in names:
        if not n.startswith("backbone.layers."):
            out.append(n)
            continue
        layer = int(n.split(".")[2])
        if layer in (0, n_layer - 1):
            out.append(n)
    return out


def fd_picks_lora(names, n_layer):
    return [n for n in names if "layers." not in n or f"layers.{n_layer - 1}." in n or "layers.0." in n]


def compare(a64, b32):
    """max |b32 - a64| / max |a64| over tensors (worst tensor) and absolute."""
    worst_rel, worst_abs = 0.0, 0.0
    for k, v in a64.items():
        d = (b32[k].double() - v).abs().max().item()
        m = v.abs().max().item()
        worst_abs = max(worst_abs, d)
        if m > 0:
            worst_rel = max(worst_rel, d / m)
    return worst_rel, worst_abs


def tensor_list(d):
    return [{"name": k, "shape": list(v.shape)} for k, v in d.items()]


def write_st(path, tensors):
    out = {}
    for k, v in tensors.items():
        out[k] = v.detach().contiguous().cpu()
    # one metadata key only: safetensors writes the metadata map in a random order, and the files should be
    # byte-identical from run to run
    save_file(out, path, metadata={"format": "pt"})
    return os.path.getsize(path)


def batch(rng, V, B, T, ignore=None):
    ids = torch.tensor(rng.integers(0, V, size=(B, T)), dtype=torch.long)
    labels = ids.clone()
    for b, positions in (ignore or {}).items():
        for t in positions:
            labels[b, t] = -100
    return ids, labels


def io_tensors(ids, labels):
    return {"input_ids": ids.to(torch.int32), "labels": labels.to(torch.int32)}


# ---------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------
def case_full_grad(root, out_dir, name, model_name, ids, labels):
    t0 = time.time()
    m64 = load_base(root, model_name).double()
    named = list(m64.named_parameters())
    loss = model_loss(m64, ids, labels, True)
    g = grads_of(named, loss)
    m32 = load_base(root, model_name)
    named32 = list(m32.named_parameters())
    loss32 = model_loss(m32, ids, labels, False)
    g32 = grads_of(named32, loss32)
    rel, ab = compare(g, g32)
    rng = np.random.default_rng(SEED + sum(map(ord, name)))
    fd = fd_check(named, g, lambda: model_loss(m64, ids, labels, True), fd_picks_full(
        [n for n, _ in named], m64.config.num_hidden_layers), rng, f"  {name}")
    tensors = {"loss": loss.detach().float().reshape(1), "loss_f64": loss.detach().reshape(1)}
    tensors.update(io_tensors(ids, labels))
    tensors.update({k: v.float() for k, v in g.items()})
    fn = f"{name}.safetensors"
    size = write_st(os.path.join(out_dir, fn), tensors)
    log(f"  {name}: loss {loss.item():.12f} ({n_targets(labels)} targets), {len(g)} gradients, "
        f"f32 run: loss diff {abs(loss32.item() - loss.item()):.2e}, grad rel {rel:.2e}  [{size} B, "
        f"{time.time() - t0:.1f}s]")
    cfg = m64.config
    return {
        "name": name, "kind": "grad", "model": f"models/{model_name}", "file": f"expect/train/{fn}",
        "tie_word_embeddings": bool(cfg.tie_word_embeddings),
        "input_ids": ids.tolist(), "labels": labels.tolist(), "n_targets": n_targets(labels),
        "loss": loss.item(),
        "gradients": tensor_list(g),
        "f32_check": {"loss_abs_diff": abs(loss32.item() - loss.item()), "grad_max_rel": rel, "grad_max_abs": ab},
        "fd_check": fd,
    }


def lora_doc(pm, lcfg, adapter_dir):
    c = pm.peft_config["default"]
    mods = dict(pm.named_modules())
    emb = mods["base_model.model.backbone.embeddings"]
    lin = mods["base_model.model.backbone.layers.0.mixer.in_proj"]
    return {"adapter_dir": adapter_dir,
            "config": {k: (sorted(v) if isinstance(v, (set, list)) else v) for k, v in lcfg.items()},
            "r": c.r, "lora_alpha": c.lora_alpha, "use_rslora": c.use_rslora, "bias": c.bias,
            "scaling_linear": lin.scaling["default"], "scaling_embedding": emb.scaling["default"]}


def case_lora_grad(root, out_dir, name, model_name, lcfg, ids, labels, seed):
    t0 = time.time()
    pm32 = make_lora(root, model_name, lcfg, seed)
    adir = f"{name}-adapter"
    save_adapter(pm32, os.path.join(out_dir, adir))
    names = saved_names(pm32)

    pm64 = copy.deepcopy(pm32).double()

    # the adapter as written must load back (through the same out_proj allowance) and give the same loss. Compared
    # in float64: in float32 the loaded (frozen) adapter differs in the last bits, because torch's matmul of a
    # non-contiguous 3-D input takes another kernel when the weight does not require grad.
    with allow_lora_out_proj():
        reload = PeftModel.from_pretrained(load_base(root, model_name), os.path.join(out_dir, adir))
    reload.double().train()
    with torch.no_grad():
        a = model_loss(pm64, ids, labels, True).item()
        b = model_loss(reload, ids, labels, True).item()
    assert abs(a - b) <= 1e-13 * abs(a), (a, b)
    del reload

    check_lora_math(pm64, ids)
    named64 = [(n, p) for n, p in pm64.named_parameters() if p.requires_grad]
    loss = model_loss(pm64, ids, labels, True)
    g = {names[n]: v for n, v in grads_of(named64, loss).items()}
    named32 = [(n, p) for n, p in pm32.named_parameters() if p.requires_grad]
    loss32 = model_loss(pm32, ids, labels, False)
    g32 = {names[n]: v for n, v in grads_of(named32, loss32).items()}
    rel, ab = compare(g, g32)
    # every LoRA gradient is non-trivial
    for k, v in g.items():
        assert v.abs().max().item() > 0, f"zero gradient for {k}"
    rng = np.random.default_rng(SEED + sum(map(ord, name)))
    by_saved = [(names[n], p) for n, p in named64]
    fd = fd_check(by_saved, g, lambda: model_loss(pm64, ids, labels, True),
                  fd_picks_lora([k for k, _ in by_saved], pm64.config.num_hidden_layers), rng, f"  {name}")
    tensors = {"loss": loss.detach().float().reshape(1), "loss_f64": loss.detach().reshape(1)}
    tensors.update(io_tensors(ids, labels))
    tensors.update({k: v.float() for k, v in g.items()})
    fn = f"{name}.safetensors"
    size = write_st(os.path.join(out_dir, fn), tensors)
    log(f"  {name}: loss {loss.item():.12f}, {len(g)} trainable tensors, f32 run: loss diff "
        f"{abs(loss32.item() - loss.item()):.2e}, grad rel {rel:.2e}  [{size} B, {time.time() - t0:.1f}s]")
    return {
        "name": name, "kind": "lora_grad", "model": f"models/{model_name}", "file": f"expect/train/{fn}",
        "lora": lora_doc(pm32, lcfg, f"expect/train/{adir}"),
        "input_ids": ids.tolist(), "labels": labels.tolist(), "n_targets": n_targets(labels),
        "loss": loss.item(),
        "gradients": tensor_list(g),
        "f32_check": {"loss_abs_diff": abs(loss32.item() - loss.item()), "grad_max_rel": rel, "grad_max_abs": ab},
        "fd_check": fd,
    }


def decay_names(model):
    """transformers 5.17 Trainer.get_decay_parameter_names (it uses nothing of the Trainer instance)."""
    return set(Trainer.get_decay_parameter_names(None, model))


def spec_lr(k):
    """mamba-spec.md 9.1: the k-th step (k = 1..S) uses lr * lambda(k-1)."""
    W, S, s = ADAM["warmup_steps"], ADAM["steps"], k - 1
    lam = s / max(1, W) if s < W else max(0.0, (S - s) / max(1, S - W))
    return ADAM["lr"] * lam


def adam_run(model, ids, labels, wd, f64):
    """What Trainer does per step with GA 1 on one device: loss, backward, clip_grad_norm_(model.parameters(),
    max_grad_norm), optimizer.step(), lr_scheduler.step(), zero_grad. Optimizer groups as Trainer.create_optimizer.
    In float64 a shadow copy of the spec's formulas (mamba-spec.md 9.1: clipping, schedule, AdamW) runs beside torch
    and must agree to rounding."""
    dn = decay_names(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if n in dn], "weight_decay": wd},
              {"params": [p for n, p in named if n not in dn], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"], foreach=False)
    sched = get_scheduler(ADAM["scheduler"], opt, num_warmup_steps=ADAM["warmup_steps"],
                          num_training_steps=ADAM["steps"])
    b1, b2 = ADAM["betas"]
    shadow = {n: [torch.zeros_like(p), torch.zeros_like(p)] for n, p in named}
    losses, lrs, norms = [], [], []
    for k in range(1, ADAM["steps"] + 1):
        loss = model_loss(model, ids, labels, f64)
        loss.backward()
        raw = {n: p.grad.detach().clone() for n, p in named}
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), ADAM["max_grad_norm"])
        lr = opt.param_groups[0]["lr"]
        lrs.append(lr)
        assert all(g["lr"] == lr for g in opt.param_groups)
        expect = {}
        if f64:
            assert abs(lr - spec_lr(k)) <= 1e-15, (k, lr, spec_lr(k))
            G = math.sqrt(sum(float((g * g).sum()) for g in raw.values()))
            assert abs(G - gn.item()) <= 1e-12 * G, (G, gn.item())
            c = min(1.0, ADAM["max_grad_norm"] / (G + 1e-6))
            for n, p in named:
                g = raw[n] * c
                assert torch.allclose(p.grad, g, rtol=1e-13, atol=0), n
                m, v = shadow[n]
                w = p.detach() - lr * (wd if n in dn else 0.0) * p.detach()
                m.mul_(b1).add_((1 - b1) * g)
                v.mul_(b2).add_((1 - b2) * g * g)
                expect[n] = w - (lr / (1 - b1 ** k)) * m / (v.sqrt() / math.sqrt(1 - b2 ** k) + ADAM["eps"])
        opt.step()
        sched.step()
        for n, p in named:
            if n in expect:
                d = (p.detach() - expect[n]).abs().max().item()
                assert d <= 1e-14 * max(1.0, p.detach().abs().max().item()), (k, n, d)
        model.zero_grad(set_to_none=True)
        losses.append(loss.item())
        norms.append(gn.item())
    no_decay = [n for n, _ in named if n not in dn]
    final = {n: p.detach().clone() for n, p in named}
    return losses, lrs, norms, no_decay, final


def case_adam(root, out_dir, name, model_name, ids, labels, wd, lora=None):
    """lora = None: full-model training; else (lcfg, seed, adapter_dir) of a lora_grad case (same start)."""
    t0 = time.time()
    if lora is None:
        m32 = load_base(root, model_name)
        rename = {n: n for n, p in m32.named_parameters()}
    else:
        lcfg, seed, adir = lora
        m32 = make_lora(root, model_name, lcfg, seed)
        rename = saved_names(m32)
    m64 = copy.deepcopy(m32).double()
    losses, lrs, norms, no_decay, final = adam_run(m64, ids, labels, wd, True)
    l32, lr32, n32, nd32, f32 = adam_run(m32, ids, labels, wd, False)
    assert lr32 == lrs and nd32 == no_decay
    final = {rename[n]: v for n, v in final.items()}
    f32 = {rename[n]: v for n, v in f32.items()}
    _, wabs = compare(final, f32)
    tensors = {"loss": torch.tensor(losses, dtype=torch.float32), "loss_f64": torch.tensor(losses, dtype=torch.float64),
               "lr": torch.tensor(lrs, dtype=torch.float64), "grad_norm": torch.tensor(norms, dtype=torch.float64)}
    tensors.update(io_tensors(ids, labels))
    tensors.update({k: v.float() for k, v in final.items()})
    fn = f"{name}.safetensors"
    size = write_st(os.path.join(out_dir, fn), tensors)
    log(f"  {name}: losses {[f'{x:.9f}' for x in losses]} lr {lrs} grad norms {[f'{x:.4f}' for x in norms]}; "
        f"{len(final)} tensors, {len(no_decay)} without decay; f32 run: final weights max abs diff {wabs:.2e}, "
        f"losses {max(abs(a - b) for a, b in zip(losses, l32)):.2e}  [{size} B, {time.time() - t0:.1f}s]")
    doc = {
        "name": name, "kind": "adam_lora" if lora else "adam_full", "model": f"models/{model_name}",
        "file": f"expect/train/{fn}",
        "input_ids": ids.tolist(), "labels": labels.tolist(), "n_targets": n_targets(labels),
        "optimizer": {"type": "torch.optim.AdamW", "lr": ADAM["lr"], "betas": list(ADAM["betas"]), "eps": ADAM["eps"],
                      "weight_decay": wd, "amsgrad": False, "maximize": False,
                      "decay_rule": "transformers Trainer.get_decay_parameter_names: decay every trainable parameter "
                                    "except those whose lower-cased full name matches one of the regexes 'bias', "
                                    "'layernorm', 'rmsnorm', '(?:^|\\.)norm(?:$|\\.)', '_norm(?:$|\\.)' (or that "
                                    "sit in an nn.LayerNorm: none in Mamba)",
                      "no_decay": [rename[n] for n in no_decay]},
        "max_grad_norm": ADAM["max_grad_norm"],
        "schedule": {"type": ADAM["scheduler"], "warmup_steps": ADAM["warmup_steps"],
                     "num_training_steps": ADAM["steps"]},
        "steps": ADAM["steps"], "loss_per_step": losses, "lr_per_step": lrs, "grad_norm_per_step": norms,
        "final": tensor_list(final),
        "f32_check": {"loss_max_abs_diff": max(abs(a - b) for a, b in zip(losses, l32)),
                      "final_weight_max_abs_diff": wabs},
    }
    if lora:
        doc["lora"] = lora_doc(m32, lora[0], f"expect/train/{lora[2]}")
        doc["initial"] = f"expect/train/{lora[2]}"
    else:
        doc["initial"] = f"models/{model_name}"
    return doc


# ---------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="tests/fixtures", help="fixtures root (models/ read, expect/train/ written)")
    args = ap.parse_args()
    if os.environ.get("PYTHONHASHSEED") != "0":
        # PEFT writes target_modules (a set) in iteration order, which depends on string hashing: pin it so that
        # adapter_config.json is the same on every run
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable] + sys.argv)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    t0 = time.time()
    out_dir = os.path.join(args.root, "expect", "train")
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)

    rng = np.random.default_rng(SEED)
    B, T = 2, 10
    V = {n: json.load(open(os.path.join(args.root, "models", n, "config.json")))["vocab_size"]
         for n in ("f32-tied", "untied-bias", "k1-rank1")}
    ids_tied, lab_tied = batch(rng, V["f32-tied"], B, T)
    ids_untied, lab_untied = batch(rng, V["untied-bias"], B, T)
    # -100: position 0 (never a target: shows the shift), two in the middle of row 0, a right-padding-like tail in row 1
    ign = {0: [0, 3, 4], 1: [6, 7, 8, 9]}
    ids_k1, lab_k1 = batch(rng, V["k1-rank1"], B, T, ign)
    ids_ub, lab_ub = batch(rng, V["untied-bias"], B, T, ign)

    base_lora = dict(r=4, lora_alpha=8, target_modules=TARGETS, bias="none", lora_dropout=0.0)
    rs_lora = dict(base_lora, use_rslora=True)
    all_lora = dict(base_lora, bias="all")

    cases = []
    log(f"[{time.time() - t0:6.1f}s] full-model gradients")
    cases.append(case_full_grad(args.root, out_dir, "grad-f32-tied", "f32-tied", ids_tied, lab_tied))
    cases.append(case_full_grad(args.root, out_dir, "grad-untied-bias", "untied-bias", ids_untied, lab_untied))
    cases.append(case_full_grad(args.root, out_dir, "grad-k1-rank1-ignore", "k1-rank1", ids_k1, lab_k1))
    log(f"[{time.time() - t0:6.1f}s] LoRA gradients")
    cases.append(case_lora_grad(args.root, out_dir, "lora-f32-tied", "f32-tied", base_lora, ids_tied, lab_tied,
                                SEED + 1))
    cases.append(case_lora_grad(args.root, out_dir, "lora-rslora-f32-tied", "f32-tied", rs_lora, ids_tied, lab_tied,
                                SEED + 2))
    cases.append(case_lora_grad(args.root, out_dir, "lora-bias-all-untied-bias", "untied-bias", all_lora, ids_ub,
                                lab_ub, SEED + 3))
    log(f"[{time.time() - t0:6.1f}s] AdamW steps")
    start = (base_lora, SEED + 1, "lora-f32-tied-adapter")  # the lora-f32-tied case's adapter is the start point
    cases.append(case_adam(args.root, out_dir, "adam-lora-f32-tied", "f32-tied", ids_tied, lab_tied, 0.0, start))
    cases.append(case_adam(args.root, out_dir, "adam-lora-f32-tied-wd", "f32-tied", ids_tied, lab_tied, 0.1, start))
    cases.append(case_adam(args.root, out_dir, "adam-full-f32-tied-wd", "f32-tied", ids_tied, lab_tied, 0.1))
    cases.append(case_adam(args.root, out_dir, "adam-full-k1-rank1", "k1-rank1", ids_k1, lab_k1, 0.0))

    meta = {"script": SCRIPT, "args": " ".join(sys.argv[1:]), "seed": SEED, "python": sys.version.split()[0],
            "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "safetensors": safetensors.__version__, "numpy": np.__version__, "device": "cpu",
            "kernel_packages_present": {k: importlib.util.find_spec(k) is not None
                                        for k in ("mamba_ssm", "causal_conv1d", "kernels", "mambapy")}}
    assert not any(meta["kernel_packages_present"].values()), meta["kernel_packages_present"]
    notes = {
        "paths": "model, file, adapter_dir, initial: relative to the fixtures root (tests/fixtures)",
        "precision": "references computed in float64 (fixture weights / adapter values are float32, converted "
                     "exactly); transformers' float32 up-casts skipped on float64 tensors (KeepFloat64 in the script); "
                     "stored float32, losses also float64 (loss_f64). f32_check = the same case rerun in plain "
                     "float32 with transformers' normal code, compared with the float64 values (grad_max_rel = "
                     "worst over tensors of max|g32-g64| / max|g64|)",
        "loss": "model(input_ids, labels=labels).loss: labels shifted inside (position t predicts labels[t+1]), "
                "-100 ignored, mean over the n_targets non-ignored targets; train mode, no attention mask, "
                "pure-PyTorch path (no mamba_ssm / causal_conv1d), sequential scan",
        "grad files": "keys loss [1] F32, loss_f64 [1] F64, input_ids [B,T] I32, labels [B,T] I32, then one F32 "
                      "gradient per parameter keyed by its name: Hugging Face named_parameters() names for grad "
                      "cases (tied: lm_head.weight is the same Parameter as backbone.embeddings.weight and is not "
                      "listed; the embedding gradient includes the head's contribution), the names PEFT writes in "
                      "adapter_model.safetensors for lora_grad cases",
        "adam files": "keys loss [S] F32 / loss_f64 [S] F64 (loss of step k before its update), lr [S] F64 (the "
                      "learning rate step k used), grad_norm [S] F64 (global L2 norm before clipping, what "
                      "clip_grad_norm_ returns), input_ids, labels, then the final trainable tensors (F32) under the "
                      "same names as the grad / lora_grad files. initial = where the weights start (model folder or "
                      "adapter folder)",
        "trainer step": "per step: loss, backward, torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm) "
                        "(coef = max_norm / (norm + 1e-6), clamped to 1, applied to every gradient), optimizer.step() "
                        "(torch.optim.AdamW, foreach=False; Trainer's default adamw_torch_fused has the same math), "
                        "scheduler.step() (transformers.get_scheduler('linear', warmup_steps, num_training_steps): "
                        "step k uses lr * lambda(k-1), lambda(s) = s / max(1, W) for s < W else max(0, (S - s) / "
                        "max(1, S - W)); so with W = 1 the first step has lr 0: Adam's moments and step count still "
                        "advance, the weights do not move and loss 1 == loss 2), zero_grad. Two parameter groups "
                        "as Trainer.create_optimizer: decayed (weight_decay) and no_decay (0.0)",
        "lora values": "LoRA tensors are set to deterministic non-zero values after get_peft_model (PEFT's init "
                       "has lora_B = 0 and lora_embedding_A = 0): Linear A ~ U(-1/sqrt(in), 1/sqrt(in)), Linear B ~ "
                       "N(0, 0.1^2), embedding A ~ N(0, 0.05^2), embedding B ~ N(0, 1); the adapter folder holds "
                       "exactly these values (save_pretrained from the float32 model, README.md model card removed)",
        "out_proj": "PEFT 0.21 refuses out_proj on Mamba (peft#2562, ValueError from "
                    "_check_lora_target_modules_mamba); the script lets out_proj (only) through that check while "
                    "PEFT builds and loads the adapter. See allow_lora_out_proj in the script and "
                    "tools/oracle/README.md",
    }
    index = {"meta": meta, "notes": notes, "cases": cases}
    with open(os.path.join(out_dir, "index.json"), "w", encoding="utf-8") as f:
        json.dump(index, f, indent=1)
        f.write("\n")
    total = 0
    for dp, _, fs in os.walk(out_dir):
        total += sum(os.path.getsize(os.path.join(dp, x)) for x in fs)
    log(f"[{time.time() - t0:6.1f}s] done: {len(cases)} cases, {total} bytes in {out_dir}")


if __name__ == "__main__":
    main()
