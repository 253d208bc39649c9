#!/usr/bin/env python3
"""Trains a Mamba-1 language model from scratch with Hugging Face transformers (`MambaForCausalLM`) on an English
text corpus, so that mambac's weight formats (f32 / bf16 / f16 / int8) can be judged by perplexity on a *trained*
model instead of by logit error on random weights.

    python3 tools/oracle/train_quality.py --corpus corpus.txt \
        --tokenizer /work/shared/tokenizers/gpt-neox-20b/tokenizer.json --out quality-130m --preset 130m --minutes 4

The corpus (UTF-8 text; tools/oracle/make_corpus.sh builds one) is split by characters: the last --heldout-frac
(5%), starting at a line boundary, becomes DIR/heldout.txt and is never trained on; the rest is tokenized with the
GPT-NeoX tokenizer and cut into windows of --seq-len tokens, visited in a seeded random order. Training: AdamW
(betas 0.9/0.95, weight decay 0.1 on matrices except A_log, no decay on biases, norms, D), linear warmup over the
first 5% then cosine decay to 10% of --lr, gradient clipping at 1.0, bf16 autocast on CUDA (master weights f32).
The schedule runs over --minutes of training wall-clock time (or over --steps when given) and training stops
cleanly when the budget is spent (or on SIGINT / SIGTERM), then the model is evaluated and saved.

DIR gets: config.json, generation_config.json, model.safetensors (float32, `save_pretrained`), tokenizer.json (a
copy), heldout.txt, train_log.json. train_log.json holds two validation figures computed by transformers in float32:

  val_chunked  heldout tokens cut into consecutive windows of --seq-len, each window scored from a fresh (zero)
               state; mean NLL over every token but each window's first (what the training loss measures).
  val_whole    the first --whole-max-tokens heldout tokens (all of them when fewer) run as ONE sequence, every
               token after the first scored, state carried through: the definition of `mambac perplexity`, which
               matches it exactly when given the same tokens (`--max-tokens N` when val_whole.tokens < all).

Speed. Without the mamba_ssm / causal_conv1d packages transformers runs its pure-PyTorch Mamba path. Its default
selective scan is a Python loop over sequence positions whose backward is quadratic in --seq-len: every
`discrete_A[:, :, i]` / `deltaB_u[:, :, i]` read in the loop gets a full-size zero gradient tensor that autograd then
adds up, so a step touches ~8 * seq_len^2 * batch * d_inner * d_state * 4 bytes per layer (130m, seq-len 256:
~5 GB of memory traffic per trained token, a few hundred tokens/s on an H100). transformers' other pure-PyTorch
training path, `MambaConfig(use_mambapy=True)`, takes the parallel scan of the `mambapy` package (pure Python, MIT,
`pip install mambapy`; a wheel can be carried to a machine without network) and touches ~0.2 GB per token (130m):
--scan auto uses it when `mambapy` is importable and says so; the script checks at start that both scans give the
same logits on the freshly initialised model. Evaluation always uses the default loop (use_mambapy=False; without
gradients it is linear), and the saved config.json has use_mambapy false.
"""

import argparse
import hashlib
import inspect
import json
import math
import os
import platform
import shutil
import signal
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import tokenizers
import transformers
from transformers import MambaConfig, MambaForCausalLM
from transformers.utils.import_utils import is_mambapy_available

PRESETS = {
    # The shape of state-spaces/mamba-130m(-hf); time_step_rank auto = ceil(768 / 16) = 48.
    "130m": dict(hidden_size=768, num_hidden_layers=24),
    "small": dict(hidden_size=256, num_hidden_layers=4),
    "tiny": dict(hidden_size=64, num_hidden_layers=2),
}
COMMON = dict(vocab_size=50280, state_size=16, conv_kernel=4, expand=2, tie_word_embeddings=True, use_bias=False,
              use_conv_bias=True, residual_in_fp32=True, layer_norm_epsilon=1e-5, bos_token_id=0, eos_token_id=0,
              pad_token_id=0,
              # mamba_ssm's training init: 0.02 normal for embeddings and linear layers, out_proj / sqrt(n_layer).
              initializer_range=0.02, rescale_prenorm_residual=True)
# Per preset: peak learning rate and batch (sequences per step) by device.
DEFAULTS = {
    "130m": dict(lr=1.5e-3, batch_cuda=16, batch_cpu=4),
    "small": dict(lr=3e-3, batch_cuda=64, batch_cpu=8),
    "tiny": dict(lr=3e-3, batch_cuda=64, batch_cpu=8),
}


def log(*a):
    print(*a, flush=True)


def split_corpus(text, frac):
    """(train, heldout): heldout = the last `frac` of the characters, starting at the next line start."""
    pos = int(len(text) * (1.0 - frac))
    nl = text.find("\n", pos)
    if nl < 0 or nl + 1 >= len(text):
        raise SystemExit("corpus: no line break after %d%% of the text to start the held-out part at" %
                         round(100 * (1 - frac)))
    return text[:nl + 1], text[nl + 1:]


def encode_long(tok, text, block=1 << 18):
    """Token ids of a long text, encoded in blocks of ~block characters cut after a run of blank-line newlines, so
    the result is the same as one encode except possibly at the few block joints (only used for training data)."""
    parts, i = [], 0
    while i < len(text):
        j = text.find("\n\n", i + block)
        if j < 0:
            j = len(text)
        else:
            while j < len(text) and text[j] == "\n":
                j += 1
        parts.append(text[i:j])
        i = j
    ids = []
    for enc in tok.encode_batch(parts, add_special_tokens=False):
        ids.extend(enc.ids)
    return np.asarray(ids, dtype=np.int32)


class Windows:
    """Training windows of seq_len + 1 tokens starting every seq_len tokens, in a seeded random order, one new
    permutation (and start offset) per epoch."""

    def __init__(self, ids, seq_len, seed):
        if len(ids) < seq_len + 2:
            raise SystemExit("corpus: %d training tokens, fewer than one window of %d" % (len(ids), seq_len + 1))
        self.ids, self.L, self.rng = ids, seq_len, np.random.default_rng(seed)
        self.epoch, self.order, self.pos = -1, None, 0
        self._new_epoch()

    def _new_epoch(self):
        self.epoch += 1
        off = int(self.rng.integers(0, self.L)) if self.epoch > 0 else 0
        starts = np.arange(off, len(self.ids) - self.L - 1, self.L)
        self.order, self.pos = self.rng.permutation(starts), 0

    def next(self, batch):
        rows = []
        while len(rows) < batch:
            if self.pos == len(self.order):
                self._new_epoch()
            s = self.order[self.pos]
            self.pos += 1
            rows.append(self.ids[s:s + self.L + 1])
        return torch.from_numpy(np.stack(rows).astype(np.int64))


def param_groups(model, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim >= 2 and not name.endswith("A_log"):
            decay.append(p)
        else:
            no_decay.append(p)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]


def lr_at(progress, warmup_frac, peak, min_ratio=0.1):
    """Schedule by progress through the budget (0 -> 1, measured at the end of the step): linear warmup over the
    first warmup_frac, then cosine from peak down to min_ratio * peak at progress 1."""
    w = min(1.0, max(progress, 0.0) / warmup_frac) if warmup_frac > 0 else 1.0
    t = min(1.0, max(0.0, (progress - warmup_frac) / max(1e-9, 1.0 - warmup_frac)))
    return peak * max(w, 1e-3) * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def eval_chunked(model, ids, seq_len, batch, device):
    """Mean NLL over consecutive windows of seq_len tokens, each from a zero state (first token of each unscored)."""
    n_windows = (len(ids) + seq_len - 1) // seq_len
    windows = [ids[i * seq_len:(i + 1) * seq_len] for i in range(n_windows)]
    windows = [w for w in windows if len(w) >= 2]
    full = [w for w in windows if len(w) == seq_len]
    rest = [w for w in windows if len(w) != seq_len]
    total, count = 0.0, 0
    groups = [full[i:i + batch] for i in range(0, len(full), batch)] + [[w] for w in rest]
    for g in groups:
        x = torch.from_numpy(np.stack(g).astype(np.int64)).to(device)
        h = model.backbone(input_ids=x, use_cache=False)[0]
        logits = model.lm_head(h[:, :-1]).float()
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum")
        total += nll.item()
        count += x.shape[0] * (x.shape[1] - 1)
    return total, count, len(windows)


@torch.no_grad()
def eval_whole(model, ids, device, head_chunk=4096):
    """Sum of NLL of tokens 1..n-1 with ids run as one sequence (state carried throughout)."""
    x = torch.from_numpy(ids.astype(np.int64))[None].to(device)
    h = model.backbone(input_ids=x, use_cache=False)[0][0]
    total = 0.0
    for s in range(0, len(ids) - 1, head_chunk):
        e = min(len(ids) - 1, s + head_chunk)
        logits = model.lm_head(h[s:e]).float()
        total += F.cross_entropy(logits, x[0, s + 1:e + 1], reduction="sum").item()
    return total, len(ids) - 1


def set_mambapy(model, on):
    """Selects the scan of every mixer (each copies config.use_mambapy when built) and of the saved config."""
    model.config.use_mambapy = on
    for layer in model.backbone.layers:
        layer.mixer.use_mambapy = on


@torch.no_grad()
def check_scans(model, device):
    """Logits of the model with the mambapy scan vs the sequential loop on random tokens (f32, eval mode)."""
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, model.config.vocab_size - 3, (2, 64), generator=g).to(device)
    out = {}
    for on in (False, True):
        set_mambapy(model, on)
        out[on] = model.lm_head(model.backbone(input_ids=x, use_cache=False)[0]).float()
    model.train(was_training)
    return dict(max_abs_diff=(out[True] - out[False]).abs().max().item(), max_abs_logit=out[False].abs().max().item())


def versions():
    v = dict(python=platform.python_version(), torch=torch.__version__, transformers=transformers.__version__,
             tokenizers=tokenizers.__version__, numpy=np.__version__)
    try:
        import safetensors
        v["safetensors"] = safetensors.__version__
    except ImportError:
        pass
    for pkg in ("mamba_ssm", "causal_conv1d", "mambapy"):
        try:
            __import__(pkg)
            v[pkg] = "present"
        except ImportError:
            v[pkg] = None
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="UTF-8 text file")
    ap.add_argument("--tokenizer", required=True, help="GPT-NeoX tokenizer.json (copied into --out)")
    ap.add_argument("--out", required=True, help="output model folder")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="130m")
    ap.add_argument("--minutes", type=float, default=4.0, help="training wall-clock budget (default 4)")
    ap.add_argument("--steps", type=int, default=0,
                    help="optimizer steps to plan the schedule over (0: plan over --minutes); --minutes still caps")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=0, help="sequences per step (default: by preset and device; "
                    "halved automatically after a CUDA out-of-memory error)")
    ap.add_argument("--lr", type=float, default=0.0, help="peak learning rate (default: by preset)")
    ap.add_argument("--warmup-frac", type=float, default=0.05, help="warmup share of the budget (default 0.05)")
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cuda, cpu")
    ap.add_argument("--amp", choices=["auto", "bf16", "off"], default="auto",
                    help="autocast for training: auto = bf16 on cuda, off on cpu (evaluation is always f32)")
    ap.add_argument("--scan", choices=["auto", "mambapy", "loop"], default="auto",
                    help="training scan: mambapy (use_mambapy=True, needs the mambapy package), loop (transformers' "
                    "default, quadratic backward), auto (mambapy when importable)")
    ap.add_argument("--grad-checkpointing", action="store_true",
                    help="recompute each layer in backward (less activation memory, ~1/3 more work)")
    ap.add_argument("--heldout-frac", type=float, default=0.05)
    ap.add_argument("--eval-batch", type=int, default=0,
                    help="windows per val_chunked batch (default: 64 on cuda, --batch on cpu)")
    ap.add_argument("--whole-max-tokens", type=int, default=65536,
                    help="val_whole scores the first N heldout tokens as one sequence (0: all; default 65536)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--log-every", type=int, default=10, help="progress line every N steps (and every 30 s)")
    args = ap.parse_args()

    t_start = time.time()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if (args.device == "auto" and torch.cuda.is_available()) else
                          (args.device if args.device != "auto" else "cpu"))
    cuda = device.type == "cuda"
    amp = (args.amp == "bf16") or (args.amp == "auto" and cuda)
    ckpt = args.grad_checkpointing
    mambapy_ok = is_mambapy_available()
    if args.scan == "mambapy" and not mambapy_ok:
        raise SystemExit("--scan mambapy: the mambapy package is not importable (pip install mambapy)")
    use_mambapy = args.scan == "mambapy" or (args.scan == "auto" and mambapy_ok)
    d = DEFAULTS[args.preset]
    batch = args.batch or (d["batch_cuda"] if cuda else d["batch_cpu"])
    lr_peak = args.lr or d["lr"]
    budget = args.minutes * 60.0
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False  # f32 evaluation stays f32
        torch.backends.cudnn.allow_tf32 = False
    log("versions:", json.dumps(versions()))
    log("device: %s%s, amp bf16: %s, gradient checkpointing: %s, training scan: %s" %
        (device, " (%s)" % torch.cuda.get_device_name(device) if cuda else "", amp, ckpt,
         "mambapy (use_mambapy=True)" if use_mambapy else "loop (transformers' default sequential scan)"))
    if not use_mambapy:
        log("note: the sequential scan's backward is quadratic in --seq-len (see --help); with seq-len %d expect "
            "~%.1f GB of memory traffic per trained token for 130m; `pip install mambapy` makes it ~0.2 GB" %
            (args.seq_len, 8 * args.seq_len * 1536 * 16 * 4 * 24 / 1e9))

    # ---- data
    with open(args.corpus, encoding="utf-8", newline="") as f:
        text = f.read()
    corpus_sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    train_text, heldout = split_corpus(text, args.heldout_frac)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "heldout.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(heldout)
    tok = tokenizers.Tokenizer.from_file(args.tokenizer)
    t0 = time.time()
    train_ids = encode_long(tok, train_text)
    held_ids = np.asarray(tok.encode(heldout, add_special_tokens=False).ids, dtype=np.int32)
    log("corpus: %d chars (sha256 %s...), train %d chars -> %d tokens, heldout %d chars / %d bytes -> %d tokens "
        "(tokenized in %.1f s)" % (len(text), corpus_sha[:16], len(train_text), len(train_ids), len(heldout),
                                   len(heldout.encode("utf-8")), len(held_ids), time.time() - t0))
    del text, train_text
    if train_ids.max() >= COMMON["vocab_size"] or held_ids.max() >= COMMON["vocab_size"]:
        raise SystemExit("tokenizer ids exceed vocab_size %d" % COMMON["vocab_size"])
    data = Windows(train_ids, args.seq_len, args.seed)

    # ---- model
    torch.manual_seed(args.seed)
    config = MambaConfig(**COMMON, **PRESETS[args.preset], use_mambapy=use_mambapy)
    model = MambaForCausalLM(config).to(device)
    scan_check = None
    if use_mambapy:
        scan_check = check_scans(model, device)
        log("scan check (fresh model, f32, 2 x 64 random tokens): max |logit(mambapy) - logit(loop)| = %.3g, "
            "max |logit| = %.3g" % (scan_check["max_abs_diff"], scan_check["max_abs_logit"]))
        if not scan_check["max_abs_diff"] <= 1e-3 * max(1.0, scan_check["max_abs_logit"]):
            raise SystemExit("the mambapy scan disagrees with the sequential scan; use --scan loop")
    n_params = sum(p.numel() for p in model.parameters())
    log("model: preset %s, %d parameters (%d without the tied embedding), config %s" %
        (args.preset, n_params, n_params - model.backbone.embeddings.weight.numel(),
         json.dumps({k: getattr(config, k) for k in ("vocab_size", "hidden_size", "num_hidden_layers", "state_size",
                                                     "conv_kernel", "expand", "intermediate_size", "time_step_rank",
                                                     "tie_word_embeddings")})))
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    opt_kwargs = dict(lr=lr_peak, betas=(0.9, 0.95), eps=1e-8)
    if cuda:
        opt_kwargs["fused"] = True
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), **opt_kwargs)
    params = [p for p in model.parameters() if p.requires_grad]
    V = config.vocab_size

    stop = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signal.Signals(signum).name
        log("%s: stopping after this step" % stop["signal"])

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def step_fn(x, lr):
        for g in opt.param_groups:
            g["lr"] = lr
        inp, tgt = x[:, :-1], x[:, 1:]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            h = model.backbone(input_ids=inp, use_cache=False)[0]
            logits = model.lm_head(h)
        loss = F.cross_entropy(logits.float().reshape(-1, V), tgt.reshape(-1))
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        if torch.isfinite(loss) and torch.isfinite(gnorm):
            opt.step()
            ok = True
        else:
            ok = False
        opt.zero_grad(set_to_none=True)
        return loss.item(), gnorm.item(), ok

    # ---- train
    log("training: batch %d x seq-len %d, peak lr %g, budget %.1f min%s, seed %d" %
        (batch, args.seq_len, lr_peak, args.minutes, ", schedule over %d steps" % args.steps if args.steps else "",
         args.seed))
    step, tokens, skipped, oom_halvings = 0, 0, 0, 0
    curve, recent = [], []
    t_train = time.time()
    last_log_t, log_losses = t_train, []
    step_times = []
    while True:
        elapsed = time.time() - t_train
        mean_step = (sum(step_times[-5:]) / len(step_times[-5:])) if step_times else 0.0
        if stop["signal"] or elapsed + mean_step > budget or (args.steps and step >= args.steps):
            break
        # progress at the end of this step: by steps, or by time with the step time measured so far
        progress = (step + 1) / args.steps if args.steps else (elapsed + mean_step) / budget
        lr = lr_at(progress, args.warmup_frac, lr_peak)
        x = data.next(batch).to(device, non_blocking=True)
        ts = time.time()
        oom = False
        try:
            loss, gnorm, ok = step_fn(x, lr)
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            oom = True
        if oom:  # outside the except block, so that the failed step's tensors are no longer referenced
            x = None
            opt.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            batch //= 2
            oom_halvings += 1
            log("CUDA out of memory: batch halved to %d" % batch)
            continue
        if cuda:
            torch.cuda.synchronize()
        step_times.append(time.time() - ts)
        if not ok:
            skipped += 1
            log("step %d: non-finite loss/gradient (%.4g / %.4g), update skipped" % (step, loss, gnorm))
            if skipped >= 10:
                raise SystemExit("too many non-finite steps; lower --lr")
        step += 1
        tokens += x.shape[0] * args.seq_len
        recent.append(loss)
        log_losses.append(loss)
        now = time.time()
        if step % args.log_every == 0 or now - last_log_t > 30 or step == 1:
            el = now - t_train
            point = dict(step=step, tokens=tokens, loss=sum(log_losses) / len(log_losses), lr=lr, grad_norm=gnorm,
                         elapsed_s=round(el, 2))
            curve.append(point)
            log("step %5d  tokens %10d  loss %.4f  lr %.3g  |g| %.3f  %.1f s  %.2f steps/s  %.0f tokens/s" %
                (step, tokens, point["loss"], lr, gnorm, el, step / el, tokens / el))
            last_log_t, log_losses = now, []
    train_s = time.time() - t_train
    if step == 0:
        raise SystemExit("no training step fitted in the budget")
    if log_losses:
        curve.append(dict(step=step, tokens=tokens, loss=sum(log_losses) / len(log_losses), lr=lr,
                          grad_norm=gnorm, elapsed_s=round(train_s, 2)))
    final_train = sum(recent[-10:]) / len(recent[-10:])
    log("trained: %d steps, %d tokens in %.1f s (%.3f steps/s, %.0f tokens/s), final train loss %.4f (mean of the "
        "last %d steps)%s" % (step, tokens, train_s, step / train_s, tokens / train_s, final_train,
                              len(recent[-10:]), ", stopped by " + stop["signal"] if stop["signal"] else ""))
    peak_mem = torch.cuda.max_memory_allocated(device) if cuda else None
    if cuda:
        log("peak CUDA memory allocated: %.1f GiB" % (peak_mem / 2 ** 30))

    # ---- evaluate (float32, eval mode)
    if ckpt:
        model.gradient_checkpointing_disable()
    set_mambapy(model, False)  # evaluate (and save) with transformers' default scan
    model.eval()
    opt.zero_grad(set_to_none=True)
    del opt
    if cuda:
        torch.cuda.empty_cache()
    t0 = time.time()
    tot, cnt, nwin = eval_chunked(model, held_ids, args.seq_len, args.eval_batch or (64 if cuda else batch), device)
    val_chunked = dict(definition="consecutive windows of seq_len heldout tokens, each from a zero state, every "
                       "token but the window's first scored", seq_len=args.seq_len, windows=nwin,
                       tokens=int(len(held_ids)), scored=cnt, mean_nll=tot / cnt, perplexity=math.exp(tot / cnt),
                       seconds=round(time.time() - t0, 2))
    log("val_chunked: %d windows of %d, %d scored, mean NLL %.6f, perplexity %.4f (%.1f s)" %
        (nwin, args.seq_len, cnt, tot / cnt, math.exp(tot / cnt), val_chunked["seconds"]))
    n_whole = len(held_ids) if args.whole_max_tokens <= 0 else min(len(held_ids), args.whole_max_tokens)
    t0 = time.time()
    tot, cnt = eval_whole(model, held_ids[:n_whole], device)
    heldout_bytes = len(heldout.encode("utf-8"))
    whole_bytes = heldout_bytes if n_whole == len(held_ids) else len(
        tok.decode(held_ids[:n_whole].tolist(), skip_special_tokens=False).encode("utf-8"))
    val_whole = dict(definition="the first `tokens` heldout tokens as one sequence, state carried, every token after "
                     "the first scored (= mambac perplexity%s)" %
                     ("" if n_whole == len(held_ids) else " --max-tokens %d" % n_whole),
                     tokens=int(n_whole), scored=cnt, bytes=whole_bytes, mean_nll=tot / cnt,
                     perplexity=math.exp(tot / cnt), bits_per_byte=tot / math.log(2) / whole_bytes,
                     seconds=round(time.time() - t0, 2))
    log("val_whole: %d tokens as one sequence, mean NLL %.6f, perplexity %.4f, bits/byte %.6f (%.1f s)" %
        (n_whole, tot / cnt, math.exp(tot / cnt), val_whole["bits_per_byte"], val_whole["seconds"]))

    # ---- save (float32)
    model = model.to("cpu", dtype=torch.float32)
    save_kwargs = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        save_kwargs["safe_serialization"] = True
    model.save_pretrained(args.out, **save_kwargs)
    shutil.copyfile(args.tokenizer, os.path.join(args.out, "tokenizer.json"))
    info = dict(
        script="tools/oracle/train_quality.py", argv=sys.argv[1:], versions=versions(),
        device=str(device), device_name=torch.cuda.get_device_name(device) if cuda else platform.processor() or None,
        torch_threads=torch.get_num_threads(), amp_bf16=amp, gradient_checkpointing=ckpt,
        training_scan="mambapy" if use_mambapy else "loop", scan_check=scan_check,
        preset=args.preset, n_params=n_params, config={k: v for k, v in config.to_dict().items()
                                                        if not k.startswith("_")},
        corpus=dict(path=args.corpus, sha256=corpus_sha, train_tokens=int(len(train_ids)),
                    heldout_tokens=int(len(held_ids)), heldout_bytes=heldout_bytes, heldout_frac=args.heldout_frac),
        training=dict(seed=args.seed, seq_len=args.seq_len, batch=batch, oom_halvings=oom_halvings, lr_peak=lr_peak,
                      schedule="warmup %.0f%% then cosine to 10%% over %s" %
                      (100 * args.warmup_frac, "%d steps" % args.steps if args.steps else "%.1f min" % args.minutes),
                      weight_decay=args.weight_decay, betas=[0.9, 0.95], grad_clip=1.0, budget_minutes=args.minutes,
                      steps=step, skipped_steps=skipped, tokens_seen=tokens, epochs=round(tokens / len(train_ids), 4),
                      train_seconds=round(train_s, 2), steps_per_s=step / train_s, tokens_per_s=tokens / train_s,
                      final_train_loss=final_train, last_step_loss=recent[-1], stopped_by=stop["signal"],
                      peak_cuda_bytes=peak_mem),
        val_chunked=val_chunked, val_whole=val_whole, loss_curve=curve,
        total_seconds=round(time.time() - t_start, 2))
    with open(os.path.join(args.out, "train_log.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    log("saved %s (%s) in %.1f s total" % (args.out, ", ".join(sorted(os.listdir(args.out))), time.time() - t_start))
    log("check with: mambac perplexity -m %s -f %s/heldout.txt --dtype f32%s" %
        (args.out, args.out, "" if n_whole == len(held_ids) else " --max-tokens %d" % n_whole))


if __name__ == "__main__":
    main()
