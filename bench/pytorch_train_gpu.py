"""The peer side of the GPU training benchmark (bench/RESULTS.md): transformers' MambaForCausalLM trains the same
model folder on random ids, as the Trainer would on a GPU: AdamW (fused), optionally bf16 autocast, or PEFT LoRA.
With mamba_ssm and causal_conv1d installed, transformers 5.17 takes their fused mamba_inner_fn in training (the "fast
path"); the script says which path ran. Prints median seconds per whole step (forward, backward, optimizer), tokens/s, and the device memory
in use at the end (total - free, as bench_train reports it for mambac) plus torch's own peak allocation.

usage: python3 bench/pytorch_train_gpu.py MODEL_DIR --batch 4 --length 1024 [--amp bf16] [--lora R] [--steps 20]
"""
import argparse
import sys
import time

import torch
from transformers import MambaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--amp", choices=["none", "bf16"], default="none")
    ap.add_argument("--lora", type=int, default=0, help="LoRA rank (0: train every weight)")
    a = ap.parse_args()

    dev = torch.device("cuda")
    model = MambaForCausalLM.from_pretrained(a.model, dtype=torch.float32).to(dev)
    targets = "all weights"
    if a.lora > 0:
        from peft import LoraConfig, get_peft_model
        wanted = ["x_proj", "embeddings", "in_proj", "out_proj"]
        try:
            model = get_peft_model(model, LoraConfig(r=a.lora, lora_alpha=a.lora, target_modules=wanted,
                                                     task_type="CAUSAL_LM", bias="none"))
            targets = ",".join(wanted)
        except Exception as e:  # PEFT refuses out_proj on Mamba (peft#2562): train what it accepts
            print("peft refused %s (%s); without out_proj" % (wanted, str(e).splitlines()[0][:120]))
            wanted = ["x_proj", "embeddings", "in_proj"]
            model = get_peft_model(model, LoraConfig(r=a.lora, lora_alpha=a.lora, target_modules=wanted,
                                                     task_type="CAUSAL_LM", bias="none"))
            targets = ",".join(wanted)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    vocab = model.config.vocab_size
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randint(0, vocab, (a.batch, a.length), generator=g).to(dev)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.amp == "bf16"):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(3):  # warm-up: kernels, allocator, autotuning
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        loss = step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    free_b, total_b = torch.cuda.mem_get_info()
    med = sorted(times)[len(times) // 2]
    tokens = a.batch * a.length
    # transformers 5.x finds the kernels when a forward runs (the module-level name the script read before stays
    # unset), so ask what the run imported: mamba_ssm's CUDA extension is loaded only when its kernels were taken.
    fast = "selective_scan_cuda" in sys.modules or any(m.startswith("mamba_ssm") for m in sys.modules)
    print("torch %s, mamba_ssm kernels loaded by the run: %s, %s, amp %s, %s: batch %d x %d, median %.4f s/step "
          "(best %.4f), %.0f tokens/s, loss %.4f, device memory in use %.2f GB, torch peak allocated %.2f GB" %
          (torch.__version__, fast, torch.cuda.get_device_name(), a.amp, targets,
           a.batch, a.length, med, min(times), tokens / med, float(loss), (total_b - free_b) * 1e-9,
           torch.cuda.max_memory_allocated() * 1e-9))


if __name__ == "__main__":
    main()
