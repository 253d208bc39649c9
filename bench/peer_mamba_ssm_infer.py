"""The peer side of the GPU inference benchmark (bench/RESULTS.md): mamba_ssm's own model (MambaLMHeadModel with
random weights of the mamba-130m shape) decodes with CUDA graphs, prefills, and its selective-scan forward kernel
runs alone, timed the way bench/bench_scan_cuda times mambac's.

- decode: mamba_ssm's generate(cg=True, top_k=1) from an 8-token prompt; the per-step time is the difference of two
  runs (n2 and n1 new tokens) divided by n2 - n1, so the prompt, the graph capture and the set-up cancel out;
- prefill: one forward over batch x length random ids from an empty inference cache, last position's logits only
  (as generate's prefill does), median of 5 after a warm-up;
- scan: selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True) at batch x d_inner x length x
  state, median of 20 after 3 warm-ups, CUDA events.

usage: python3 bench/peer_mamba_ssm_infer.py [--dtype bf16|f32] [--what decode,prefill,scan]
"""
import argparse
import statistics
import time

import torch
from mamba_ssm.models.config_mamba import MambaConfig
from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
from mamba_ssm.utils.generation import InferenceParams


def model_130m(dtype):
    torch.manual_seed(0)
    cfg = MambaConfig(d_model=768, n_layer=24, vocab_size=50280, ssm_cfg={"layer": "Mamba1"}, rms_norm=True,
                      residual_in_fp32=True, fused_add_norm=True, pad_vocab_size_multiple=8, tie_embeddings=True)
    return MambaLMHeadModel(cfg, device="cuda", dtype=dtype).eval()


def gen_seconds(model, batch, n_new):
    ids = torch.randint(0, 50000, (batch, 8), device="cuda")
    torch.cuda.synchronize()
    t = time.perf_counter()
    model.generate(input_ids=ids, max_length=8 + n_new, cg=True, top_k=1, return_dict_in_generate=True)
    torch.cuda.synchronize()
    return time.perf_counter() - t


def decode(model, dtype_name, batches, n1=64, n2=320):
    for b in batches:
        gen_seconds(model, b, n2)  # capture the graph for this batch, warm up
        per = []
        for _ in range(3):
            per.append((gen_seconds(model, b, n2) - gen_seconds(model, b, n1)) / (n2 - n1))
        ms = statistics.median(per) * 1e3
        print("decode %s batch %3d: %.3f ms per step, %.0f tokens/s" % (dtype_name, b, ms, b * 1e3 / ms), flush=True)


@torch.inference_mode()
def prefill(model, dtype_name, shapes):
    for b, length in shapes:
        ids = torch.randint(0, 50000, (b, length), device="cuda")
        times = []
        for i in range(6):
            ip = InferenceParams(max_seqlen=length + 1, max_batch_size=b)
            torch.cuda.synchronize()
            t = time.perf_counter()
            model(ids, inference_params=ip, num_last_tokens=1)
            torch.cuda.synchronize()
            if i > 0:
                times.append(time.perf_counter() - t)
        s = statistics.median(times)
        print("prefill %s %d x %d: %.2f ms, %.0f tokens/s" % (dtype_name, b, length, s * 1e3, b * length / s),
              flush=True)


def scan(dtype, dtype_name, b=8, d=1536, length=2048, n=16):
    g = torch.Generator(device="cuda").manual_seed(0)
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)
    u, z = r(b, d, length).to(dtype), r(b, d, length).to(dtype)
    delta = (0.5 * r(b, d, length)).to(dtype)
    A = -torch.exp(0.5 * r(d, n))
    B, C = r(b, n, length).to(dtype), r(b, n, length).to(dtype)
    D, bias = r(d), 0.1 * r(d)
    run = lambda: selective_scan_fn(u, delta, A, B, C, D, z, bias, delta_softplus=True)
    for _ in range(3):
        run()
    times = []
    for _ in range(20):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        run()
        e1.record()
        torch.cuda.synchronize()
        times.append(e0.elapsed_time(e1))
    ms = statistics.median(times)
    esz = u.element_size()
    nbytes = esz * (4 * b * d * length + 2 * b * n * length) + 4 * (d * n + 2 * d)  # u, delta, z, y; B, C; A, D, bias
    print("scan %s %d x %d x %d x %d: %.3f ms, %.0f GB/s of fewest bytes" % (dtype_name, b, d, length, n, ms,
                                                                          nbytes / ms / 1e6), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    ap.add_argument("--what", default="decode,prefill,scan")
    ap.add_argument("--batches", default="1,16,64")
    a = ap.parse_args()
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    what = a.what.split(",")
    import mamba_ssm
    print("mamba_ssm %s, torch %s, %s" % (mamba_ssm.__version__, torch.__version__, torch.cuda.get_device_name()))
    if "scan" in what:
        scan(dtype, a.dtype)
    if "decode" in what or "prefill" in what:
        model = model_130m(dtype)
        if "prefill" in what:
            prefill(model, a.dtype, [(1, 2048), (16, 2048)])
        if "decode" in what:
            decode(model, a.dtype, [int(x) for x in a.batches.split(",")])


if __name__ == "__main__":
    main()
