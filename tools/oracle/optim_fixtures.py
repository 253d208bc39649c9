#!/usr/bin/env python3
"""Optimizer oracle for mambac: records what torch.optim.AdamW, transformers.get_scheduler and
torch.nn.utils.clip_grad_norm_ do on a few small parameter sets, for tests/test_optim.c.

    python3 tools/oracle/optim_fixtures.py [--out tests/fixtures/expect/optim.json] [--seed 20260801]

Each run is one training loop as the HF Trainer drives it (spec §9.1), on the CPU, in float32:
  params = a few tensors of odd sizes; weight decay on some (the Trainer's two parameter groups: decayed
  tensors with weight_decay, the rest with 0.0); AdamW(lr, betas, eps) with foreach=False, fused=False
  (the single-tensor path torch takes on the CPU anyway); scheduler = get_scheduler(name, W, S).
  Per step k: p.grad = the recorded grads; total_norm = clip_grad_norm_(params, max_norm) when max_norm > 0
  (else the norm is measured with clip_grad_norm_(params, inf) and the grads are untouched); lr = the group lr
  used by this step; optimizer.step(); scheduler.step().

Output JSON:
  meta       script, args, seed, torch / transformers / python versions, cpu capability
  schedules  [{name, lr, warmup, total, num_cycles?, lrs}]  lrs[k] = the lr of optimizer step k + 1, for k in
             0 .. total + 2 (past the end too)
  warmup     [{warmup, total, steps}]  TrainingArguments(warmup_steps=warmup).get_warmup_steps(total)
  decay      [{name, decays}]  whether Trainer.get_decay_parameter_names puts a parameter of that full name in
             the weight-decay group (names of mamba, PEFT and other models, on a module tree built from them)
  runs       [{name, schedule, lr, warmup, total, beta1, beta2, eps, weight_decay, max_norm,
               tensors: [{numel, decay}], init: [floats], steps: [{grads, total_norm, lr, params}],
               final_m, final_v}]
             flat float32 values in tensor order (tensor i = the next numel values); total_norm is null when
             max_norm is 0; params are the values after the step.
"""

import argparse
import json
import platform
import sys

import torch
import transformers
from transformers import Trainer, TrainingArguments, get_scheduler

SCRIPT = "tools/oracle/optim_fixtures.py"


def f32list(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def schedule_case(name, lr, warmup, total, num_cycles=None):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=lr)
    kwargs = {"num_cycles": num_cycles} if num_cycles is not None else None
    sched = get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=total,
                          scheduler_specific_kwargs=kwargs)
    lrs = []
    for _ in range(total + 3):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    case = {"name": name, "lr": lr, "warmup": warmup, "total": total, "lrs": lrs}
    if num_cycles is not None:
        case["num_cycles"] = num_cycles
    return case


def run_case(gen, name, sizes, decay, schedule, lr, warmup, total, beta1, beta2, eps, wd, max_norm, grad_scale):
    params = [torch.nn.Parameter(torch.randn(n, generator=gen)) for n in sizes]
    init = [x for p in params for x in f32list(p)]
    groups = [{"params": [p for p, d in zip(params, decay) if d], "weight_decay": wd},
              {"params": [p for p, d in zip(params, decay) if not d], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(beta1, beta2), eps=eps, foreach=False, fused=False)
    sched = get_scheduler(schedule, opt, num_warmup_steps=warmup, num_training_steps=total)
    steps = []
    for k in range(total):
        grads = [torch.randn(n, generator=gen) * grad_scale[k % len(grad_scale)] for n in sizes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        flat_grads = [x for g in grads for x in f32list(g)]
        if max_norm > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        else:
            norm = None
        step_lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        steps.append({"grads": flat_grads, "total_norm": norm, "lr": step_lr,
                      "params": [x for p in params for x in f32list(p)]})
    final_m = [x for p in params for x in f32list(opt.state[p]["exp_avg"])]
    final_v = [x for p in params for x in f32list(opt.state[p]["exp_avg_sq"])]
    return {"name": name, "schedule": schedule, "lr": lr, "warmup": warmup, "total": total, "beta1": beta1,
            "beta2": beta2, "eps": eps, "weight_decay": wd, "max_norm": max_norm,
            "tensors": [{"numel": n, "decay": d} for n, d in zip(sizes, decay)], "init": init, "steps": steps,
            "final_m": final_m, "final_v": final_v}


DECAY_NAMES = [
    "backbone.embeddings.weight", "backbone.layers.0.norm.weight", "backbone.layers.11.mixer.A_log",
    "backbone.layers.0.mixer.D", "backbone.layers.0.mixer.conv1d.weight", "backbone.layers.0.mixer.conv1d.bias",
    "backbone.layers.0.mixer.dt_proj.bias", "backbone.layers.0.mixer.in_proj.weight", "backbone.norm_f.weight",
    "lm_head.weight", "base_model.model.backbone.layers.0.mixer.in_proj.lora_A.default.weight",
    "base_model.model.backbone.embeddings.lora_embedding_B.default",
    "base_model.model.backbone.layers.0.mixer.in_proj.base_layer.bias", "model.layers.0.input_layernorm.weight",
    "model.layers.0.post_attention_layernorm.weight", "encoder.LayerNorm.weight", "h.0.ln_1.weight",
    "model.final_norm.weight", "model.norm.weight", "model.norm_layer.weight", "model.normalizer.weight",
    "model.q_norm.scale", "model.layer_norm.weight", "model.RMSNorm.weight", "model.Norm.weight", "norm.weight",
    "x.unbiased.weight", "x.my_norm", "x.norm",
]


def decay_cases():
    root = torch.nn.Module()
    for name in DECAY_NAMES:
        *path, leaf = name.split(".")
        m = root
        for part in path:
            if not hasattr(m, part):
                m.add_module(part, torch.nn.Module())
            m = getattr(m, part)
        m.register_parameter(leaf, torch.nn.Parameter(torch.zeros(1)))
    decayed = set(Trainer.get_decay_parameter_names(None, root))  # uses no trainer state
    return [{"name": n, "decays": n in decayed} for n in DECAY_NAMES]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures/expect/optim.json")
    ap.add_argument("--seed", type=int, default=20260801)
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(args.seed)

    schedules = []
    for name in ["linear", "cosine", "constant", "constant_with_warmup"]:
        for warmup, total in [(0, 4), (2, 6), (3, 3), (5, 4), (1, 1881)]:
            if total > 100 and name != "linear":
                continue
            schedules.append(schedule_case(name, 2e-3, warmup, total))
    schedules.append(schedule_case("cosine", 1e-3, 2, 9, num_cycles=1.25))

    warmup = []
    for w, s in [(0, 100), (0.1, 1881), (0.05, 7), (0.5, 3), (3, 10), (2.7, 10)]:
        ta = TrainingArguments(output_dir="/tmp/optim_fixtures_unused", warmup_steps=w, report_to=[])
        warmup.append({"warmup": w, "total": s, "steps": ta.get_warmup_steps(s)})

    sizes = [5, 7, 33, 16]
    runs = [
        # the spec §9 recipe: lr 2e-3, linear, no warmup, wd 0, clip 1.0; grads large enough to be clipped
        run_case(gen, "recipe", sizes, [True, False, True, False], "linear", 2e-3, 0, 6, 0.9, 0.999, 1e-8, 0.0,
                 1.0, [1.0, 0.05, 0.3]),
        # weight decay on two tensors, warmup, clipping on some steps only
        run_case(gen, "decay_warmup", sizes, [True, False, True, False], "linear", 1e-2, 2, 7, 0.9, 0.999, 1e-8,
                 0.1, 0.5, [0.02, 1.0]),
        # cosine, no clipping, other betas and eps, every tensor decayed
        run_case(gen, "cosine_noclip", sizes, [True, True, True, True], "cosine", 3e-3, 1, 6, 0.8, 0.95, 1e-6,
                 0.01, 0.0, [1.0, 1e-3]),
        # tiny gradients: eps dominates the denominator
        run_case(gen, "tiny_grads", [3, 9], [False, True], "constant_with_warmup", 1e-3, 1, 5, 0.9, 0.999, 1e-8,
                 0.05, 1.0, [1e-7, 1e-9]),
    ]

    meta = {"script": SCRIPT, "args": " ".join(sys.argv[1:]), "seed": args.seed, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "schedules": schedules, "warmup": warmup, "decay": decay_cases(), "runs": runs}, f,
                  indent=None)
        f.write("\n")
    print(f"wrote {args.out}: {len(schedules)} schedules, {len(runs)} runs")


if __name__ == "__main__":
    main()
