#!/usr/bin/env python3
"""Checks `mambac tokenizer train` against Hugging Face `tokenizers`' BpeTrainer, and writes the C test's fixture.

The reference tokenizer is built with tokenizers' Python API the way GPT-NeoX's tokenizer.json is laid out:

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=V, min_frequency=F, special_tokens=[...],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train(files, trainer); tok.save(path)          # pretty JSON

Commands:
  check   --mambac BIN --vocab-size V [--min-frequency F] [--special TOKEN]... [--heldout FILE] FILES...
          trains both, compares the files byte for byte (on a difference: the first differing vocab entry and merge),
          and compares the ids both give for the held-out text (tokenizers' encode vs `mambac tokenize`).
  sweep   --mambac BIN [--corpus FILE --heldout FILE]
          `check` over a grid: vocab sizes, min_frequency 0/1/2/5, special-token lists, on the given corpus and on
          random multilingual corpora (alphabets of tokenizer_fixtures.py: spaces, CJK, combining marks, emoji, ...).
  fixture --out DIR SOURCE
          cuts SOURCE (AUSTEN_ONLY=1 make_corpus.sh's output) at blank lines into DIR/corpus.txt (the first
          <= 180,000 bytes) and DIR/heldout.txt (the next <= 20,000), then writes DIR/reference.json (tokenizers'
          tokenizer.json for corpus.txt with FIXTURE_SETTINGS) and DIR/expect.json (meta: script, settings,
          versions, sha256 of the inputs; encode: the ids tokenizers gives for the held-out text and for
          EXTRA_STRINGS) for tests/test_tokenizer_train.c.
Exit status 0 when everything matched.
"""

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time

import tokenizers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tokenizer_fixtures import ALPHABETS  # noqa: E402

SCRIPT = "tools/oracle/tokenizer_train_check.py"
FIXTURE_SETTINGS = {"vocab_size": 1000, "min_frequency": 2, "special": ["<|endoftext|>", "<|padding|>"]}
# Strings the fixture also encodes: what a trained tokenizer meets besides plain prose.
EXTRA_STRINGS = [
    "It is a truth universally acknowledged",
    "  two leading spaces, and   three inside\n\n\nthree newlines",
    "tabs\tand\r\nCRLF\r\n",
    "<|endoftext|>between<|padding|>specials<|endoftext|>",
    "don't I'll we're THEY'RE it's",
    "numbers 3.14159 and 1,234,567 and \u00bd \u2160",
    "ünïcödé caf\u0065\u0301 na\u00efve \u00c5ngstr\u00f6m",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \ud55c\uad6d\uc5b4 \u0627\u0644\u0639\u0631\u0628\u064a\u0629",
    "emoji \U0001F600\U0001F44D\U0001F3FB \u2764\ufe0f",
    "",
]


def train_reference(files, vocab_size, min_frequency, special):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(special),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train([str(f) for f in files], trainer)
    return tok


def run_mambac(mambac, args, stdin=None):
    r = subprocess.run([mambac] + args, input=stdin, capture_output=True)
    return r.returncode, r.stdout, r.stderr.decode("utf-8", "replace")


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i, x, y
    if len(a) != len(b):
        i = min(len(a), len(b))
        return i, a[i] if i < len(a) else None, b[i] if i < len(b) else None
    return None


def compare_files(ref_path, got_path):
    """Returns a list of problems (empty when the files are byte-identical)."""
    ref_bytes, got_bytes = open(ref_path, "rb").read(), open(got_path, "rb").read()
    if ref_bytes == got_bytes:
        return []
    problems = ["files differ (%d vs %d bytes)" % (len(ref_bytes), len(got_bytes))]
    ref, got = json.loads(ref_bytes), json.loads(got_bytes)
    rv = sorted(ref["model"]["vocab"].items(), key=lambda kv: kv[1])
    gv = sorted(got["model"]["vocab"].items(), key=lambda kv: kv[1])
    d = first_difference(rv, gv)
    if d:
        problems.append("vocab (%d vs %d): first difference at %d: tokenizers %r, mambac %r" % (len(rv), len(gv), *d))
    rm = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in ref["model"]["merges"]]
    gm = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in got["model"]["merges"]]
    d = first_difference(rm, gm)
    if d:
        problems.append("merges (%d vs %d): first difference at %d: tokenizers %r, mambac %r" % (len(rm), len(gm), *d))
    for key in ref:
        if key != "model" and ref[key] != got.get(key):
            problems.append("%s differs: tokenizers %r, mambac %r" % (key, ref[key], got.get(key)))
    return problems


def check(mambac, files, vocab_size, min_frequency, special, heldout=None, label=""):
    with tempfile.TemporaryDirectory() as tmp:
        ref_path, got_path = os.path.join(tmp, "ref.json"), os.path.join(tmp, "got.json")
        t0 = time.time()
        ref_tok = train_reference(files, vocab_size, min_frequency, special)
        t_ref = time.time() - t0
        ref_tok.save(ref_path)
        args = ["tokenizer", "train", "--vocab-size", str(vocab_size), "--min-frequency", str(min_frequency), "-o",
                got_path]
        for s in special:
            args += ["--special", s]
        t0 = time.time()
        rc, _, err = run_mambac(mambac, args + [str(f) for f in files])
        t_got = time.time() - t0
        if rc != 0:
            print("FAIL %s: mambac exited %d: %s" % (label, rc, err.strip()))
            return False
        problems = compare_files(ref_path, got_path)
        ref = json.load(open(ref_path, encoding="utf-8"))
        n_vocab, n_merges = len(ref["model"]["vocab"]), len(ref["model"]["merges"])
        multi = n_merges - (n_vocab - len(set(special) | set(pre_tokenizers.ByteLevel.alphabet())))
        line = "%s: vocab %d, merges %d (%d merges made an existing token), tokenizers %.2f s, mambac %.2f s" % (
            label, n_vocab, n_merges, multi, t_ref, t_got)
        if heldout is not None and not problems:
            text = open(heldout, encoding="utf-8").read()
            want = Tokenizer.from_file(got_path).encode(text).ids  # tokenizers loads mambac's file
            if want != ref_tok.encode(text).ids:
                problems.append("tokenizers encodes differently with mambac's file and its own")
            rc, out, err = run_mambac(mambac, ["tokenize", "--tokenizer", got_path], stdin=text.encode("utf-8"))
            got = [int(x) for x in out.decode().strip().split(",") if x] if rc == 0 else None
            if got != want:
                d = first_difference(want, got or [])
                problems.append("held-out ids differ (%d vs %s): first at %s" % (
                    len(want), len(got) if got is not None else err.strip(), d))
            else:
                line += "; held-out text: %d ids identical" % len(want)
        print(("ok   " if not problems else "FAIL ") + line)
        for p in problems:
            print("     " + p)
        return not problems


def random_corpus(path, seed, n_bytes):
    """Multilingual text with repeated 'words' (so merges have counts), runs of every kind of whitespace, digits,
    punctuation, combining marks and emoji: many ties, and tokens reachable by several merge orders."""
    rng = random.Random(seed)
    names = sorted(ALPHABETS)
    lexicon = []
    for _ in range(3000):
        alpha = ALPHABETS[rng.choice(names)]
        lexicon.append("".join(rng.choice(alpha) for _ in range(rng.randint(1, 8))))
    weights = [1.0 / (i + 1) for i in range(len(lexicon))]  # Zipf
    out, size = [], 0
    while size < n_bytes:
        words = rng.choices(lexicon, weights, k=rng.randint(1, 20))
        seps = [rng.choice([" ", " ", " ", "  ", "\t", "\u00a0", "", "'s ", "'ll "]) for _ in words]
        line = "".join(w + s for w, s in zip(words, seps)) + rng.choice(["\n", "\n", "\r\n", "\n\n", "   \n"])
        out.append(line)
        size += len(line.encode("utf-8"))
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("".join(out))


def sweep(args):
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        corpora = []
        for seed in (1, 2, 3):
            p = os.path.join(tmp, "random%d.txt" % seed)
            random_corpus(p, seed, 400_000 * seed)
            h = os.path.join(tmp, "random%d_heldout.txt" % seed)
            random_corpus(h, seed + 100, 50_000)
            corpora.append(("random%d" % seed, [p], h))
        if args.corpus:
            corpora.append((os.path.basename(args.corpus), [args.corpus], args.heldout))
        grid = [(300, 2, ["<|endoftext|>"]), (1000, 2, ["<|endoftext|>"]), (4000, 0, ["<|endoftext|>"]),
                (4000, 1, ["<|endoftext|>", "<|padding|>"]), (8192, 2, ["<|endoftext|>"]), (8192, 5, ["a", "Ġ"]),
                (30000, 2, ["<|endoftext|>"]), (100000, 0, ["<|endoftext|>"])]
        for name, files, heldout in corpora:
            for vocab_size, min_frequency, special in grid:
                label = "%s V=%d F=%d special=%s" % (name, vocab_size, min_frequency, special)
                ok &= check(args.mambac, files, vocab_size, min_frequency, special, heldout, label)
        ok &= small_cases(args.mambac, tmp, 300)
    return ok


def small_cases(mambac, tmp, n):
    """Tiny corpora over 1-4 letters with special tokens that are also strings merges make (a merge then yields an
    existing token, which tokenizers records without growing the vocabulary), many equal counts: n runs."""
    bad = 0
    for seed in range(n):
        rng = random.Random(seed)
        alpha = rng.choice(["a", "ab", "ab ", "aab", "abc", "abcd"])
        lines = []
        for _ in range(rng.randint(5, 200)):
            words = ["".join(rng.choice(alpha) for _ in range(rng.randint(1, 12))) for _ in range(rng.randint(1, 6))]
            lines.append(" ".join(words) + "\n")
        path = os.path.join(tmp, "small.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(lines))
        special = rng.choice([["<|endoftext|>"], ["ab"], ["aab", "ba"], ["abc", "a"], ["aa", "aaa", "aaaa"],
                              ["bab", "aba", "ba"]])
        vocab_size = rng.randint(256 + len(special), 330)
        min_frequency = rng.choice([0, 1, 2])
        with contextlib.redirect_stdout(io.StringIO()) as out:
            good = check(mambac, [path], vocab_size, min_frequency, special, None, "small seed %d" % seed)
        if not good:
            bad += 1
            print(out.getvalue(), end="")
    print("%s small corpora: %d of %d identical" % ("ok  " if bad == 0 else "FAIL", n - bad, n))
    return bad == 0


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def cut_at_blank_line(text, start, limit):
    """End of the longest run text[start:end] of at most limit UTF-8 bytes that ends just after a blank line."""
    end = start
    while True:
        k = text.find("\n\n", end)
        if k < 0 or len(text[start:k + 2].encode("utf-8")) > limit:
            return end
        end = k + 2


def fixture(args):
    s = FIXTURE_SETTINGS
    os.makedirs(args.out, exist_ok=True)
    source = open(args.source, encoding="utf-8").read()
    a = cut_at_blank_line(source, 0, 180_000)
    b = cut_at_blank_line(source, a, 20_000)
    args.corpus, args.heldout = os.path.join(args.out, "corpus.txt"), os.path.join(args.out, "heldout.txt")
    with open(args.corpus, "w", encoding="utf-8", newline="") as f:
        f.write(source[:a])
    with open(args.heldout, "w", encoding="utf-8", newline="") as f:
        f.write(source[a:b])
    tok = train_reference([args.corpus], s["vocab_size"], s["min_frequency"], s["special"])
    ref_path = os.path.join(args.out, "reference.json")
    tok.save(ref_path)
    text = open(args.heldout, encoding="utf-8").read()
    encode = [{"name": "heldout", "ids": tok.encode(text).ids}]
    for s_ in EXTRA_STRINGS:
        encode.append({"text": s_, "ids": tok.encode(s_).ids})
    expect = {
        "meta": {
            "script": SCRIPT,
            "args": sys.argv[1:],
            "tokenizers": tokenizers.__version__,
            "source": "%s (sha256 %s)" % (os.path.basename(args.source), sha256(args.source)),
            "corpus": os.path.basename(args.corpus),
            "corpus_sha256": sha256(args.corpus),
            "heldout": os.path.basename(args.heldout),
            "heldout_sha256": sha256(args.heldout),
            "reference_sha256": sha256(ref_path),
            "recipe": "Tokenizer(BPE()), NFC, ByteLevel(add_prefix_space=False) pre-tokenizer and post-processor, "
                      "ByteLevel decoder, BpeTrainer(initial_alphabet=ByteLevel.alphabet()), tok.train([corpus]), "
                      "tok.save(reference.json)",
        },
        "settings": s,
        "encode": encode,
    }
    with open(os.path.join(args.out, "expect.json"), "w", encoding="ascii") as f:  # one case per line
        f.write('{"meta": %s,\n "settings": %s,\n "encode": [\n  ' % (json.dumps(expect["meta"], indent=1),
                                                                      json.dumps(s)))
        f.write(",\n  ".join(json.dumps(e, ensure_ascii=True) for e in encode))
        f.write("\n ]}\n")
    ref = json.load(open(ref_path, encoding="utf-8"))
    print("wrote %s (vocab %d, merges %d) and expect.json (%d held-out ids)" % (
        ref_path, len(ref["model"]["vocab"]), len(ref["model"]["merges"]), len(encode[0]["ids"])))
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("--mambac", required=True)
    c.add_argument("--vocab-size", type=int, required=True)
    c.add_argument("--min-frequency", type=int, default=2)
    c.add_argument("--special", action="append")
    c.add_argument("--heldout")
    c.add_argument("files", nargs="+")
    w = sub.add_parser("sweep")
    w.add_argument("--mambac", required=True)
    w.add_argument("--corpus")
    w.add_argument("--heldout")
    f = sub.add_parser("fixture")
    f.add_argument("--out", required=True)
    f.add_argument("source")
    args = ap.parse_args()
    print("tokenizers %s" % tokenizers.__version__)
    if args.cmd == "check":
        special = args.special if args.special is not None else ["<|endoftext|>"]
        ok = check(args.mambac, args.files, args.vocab_size, args.min_frequency, special, args.heldout,
                   "%s V=%d F=%d" % (",".join(os.path.basename(x) for x in args.files), args.vocab_size,
                                     args.min_frequency))
    elif args.cmd == "sweep":
        ok = sweep(args)
    else:
        ok = fixture(args)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
