#!/usr/bin/env python3
"""Tokenizer oracle for mambac: records what Hugging Face `tokenizers` does with the GPT-NeoX-20B
tokenizer.json on a varied corpus, for tests/test_tokenizer.c.

    python3 tools/oracle/tokenizer_fixtures.py ../shared/tokenizers/gpt-neox-20b/tokenizer.json \
        [--out tests/fixtures/tokenizer/neox.json] [--seed 20240611]

Output JSON (ASCII only):
  meta     script, args, seed, tokenizers version, sha256 of the tokenizer file
  encode   [{text, ids, decoded?, decoded_skip?}]   ids = tok.encode(text, add_special_tokens=False).ids
           (transformers adds no BOS/EOS for this tokenizer, spec §10.2 step 6), decoded =
           tok.decode(ids, skip_special_tokens=False) when it differs from text, decoded_skip =
           decode(ids, skip_special_tokens=True) when it differs from decoded
  decode   [{ids, text, text_skip?}]   random id sequences (byte tokens that split multi-byte characters,
           ids >= 50277 without a string) and their decodes, skip_special False / True
  mini     a small tokenizer.json built here (BPE over byte symbols, NFC, ByteLevel with add_prefix_space,
           added tokens with lstrip / rstrip / single_word / normalized flags) and its cases, same fields
Any string containing U+0000 is stored as `<key>_hex` (UTF-8 bytes in hex) instead of `<key>`, because
cJSON strings end at NUL.
"""

import argparse
import hashlib
import json
import random
import sys
import unicodedata

import tokenizers
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

SCRIPT = "tools/oracle/tokenizer_fixtures.py"


def put(d, key, s):
    if "\x00" in s:
        d[key + "_hex"] = s.encode("utf-8").hex()
    else:
        d[key] = s


# Alphabets for the random strings. Only blocks assigned long before Unicode 13, so utf8proc (Debian's 2.6,
# Unicode 13), oniguruma and the normalization crate inside tokenizers agree on every character.
ALPHABETS = {
    "ascii": [chr(c) for c in range(0x20, 0x7F)],
    "space": [" ", " ", " ", "\t", "\n", "\r", "\x0b", "\x0c", "\u00a0", "\u0085", "\u2028", "\u2029", "\u3000",
              "\u2003", "\u202f", "\u205f", "\u1680", "\u200b"],
    "latin1": [chr(c) for c in range(0xA0, 0x180)],
    "greek": [chr(c) for c in range(0x391, 0x3CA) if unicodedata.category(chr(c)) != "Cn"],
    "cyrillic": [chr(c) for c in range(0x410, 0x450)],
    "cjk": [chr(c) for c in range(0x4E00, 0x4F00)] + [chr(c) for c in range(0x3041, 0x3097)],
    "hangul": [chr(c) for c in range(0xAC00, 0xAD00)] + [chr(c) for c in range(0x1100, 0x1113)] +
              [chr(c) for c in range(0x1161, 0x1176)] + [chr(c) for c in range(0x11A8, 0x11C3)],
    "arabic": [chr(c) for c in range(0x621, 0x64B)] + [chr(c) for c in range(0x660, 0x66A)] + ["\u064b", "\u0650"],
    "devanagari": [chr(c) for c in range(0x905, 0x939)] + [chr(c) for c in range(0x93E, 0x94D)] +
                  [chr(c) for c in range(0x966, 0x970)],
    "combining": [chr(c) for c in range(0x300, 0x370)],
    "emoji": [chr(c) for c in range(0x1F600, 0x1F650)] + ["\u200d", "\ufe0f", "\U0001F3FB", "\U0001F1FA",
                                                          "\U0001F1F8", "\u2764"],
    "numbers": [str(d) for d in range(10)] + ["\u00bd", "\u00b2", "\u2160", "\u216b", "\u2460", "\u0661",
                                              "\u0967", "\uff13", "\u3007"],
    "punct": list("'\".,;:!?-()[]{}<>/\\|@#$%^&*_+=~`") + ["\u2019", "\u201c", "\u2014", "\u00bf", "\u3002"],
    "control": ["\x00", "\x01", "\x07", "\x1b", "\x7f", "\x80", "\x9f", "\u00ad", "\ufeff", "\ufffd"],
    "special": ["<|endoftext|>", "<|padding|>", "<|endoftext", "|>", "<|"],
    "contraction": ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ll", "n't", "'"],
}


def random_texts(rng, count):
    names = sorted(ALPHABETS)
    out = []
    for i in range(count):
        picks = rng.sample(names, rng.randint(1, 4))
        n = rng.choice([1, 2, 3, 5, 8, 13, 30, 60, 120])
        parts = []
        for _ in range(n):
            a = ALPHABETS[rng.choice(picks)]
            w = rng.choice(a)
            if rng.random() < 0.3:
                w = w * rng.randint(1, 6)
            parts.append(w)
        out.append("".join(parts))
    return out


# Marks assigned after Unicode 9.0: tokenizers' NFC tables are 9.0, so it neither reorders nor composes them
# (Python's unicodedata, 14.0, does); U+11A7 is not a trailing jamo, so LV + U+11A7 stays two characters.
POST9 = ["\u0309\u0d3c", "a\u0314\u089e\u0329 x", "o\u0308\u1df9\u0301", "\U00011935\U00011930", "\u1ac6\u0348",
         "\u1100\u116f\u11a7\u11cc", "\uac00\u11a7", "\u09fe\u0301e\u0301"]


def fixed_texts():
    prose = (
        "The quick brown fox jumps over the lazy dog. It wasn't the first time; the dog didn't mind, "
        "and they'd all agreed it'll happen again. \"Why?\" she asked -- nobody knew.\n\n"
        "In 1969, Apollo 11 landed on the Moon at 20:17 UTC; the descent took 12.5 minutes and used "
        "about 95% of the fuel budget (roughly 8,200 kg).\n"
    )
    code = (
        "def fib(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    a, b = 0, 1\n    for _ in range(n):\n"
        "        a, b = b, a + b\n    return a\n\n\nif __name__ == '__main__':\n\tprint(fib(10))  # tab-indented\n"
        "int main(void) {\n\tint x = 0x7fff;\n\t\tx <<= 2;   /* comment */\n\treturn x != 0 ? 1 : 0;\n}\n"
    )
    texts = [
        # spec §10.6 vectors
        "Hey how are you doing?", "Hello world", "a  b", "x      y\n\tz", "<|endoftext|>hi",
        "I'm   don't 3.14 \u00fcn\u00efcode \u65e5\u672c", "x   y", " " * 25 + "q", "hello\n\nworld", "\n\n  x",
        "it's 'S 'Re", "a\u00a0\u00a0b", "e\u0301", "\u00e9", "\U0001F600 ok",
        "", " ", "  ", "\n", "\t", "a", "'", "''", "'s", "x'sy", " 's", "don''t", "'ll'll've",
        prose, code, prose * 3,
        # letters and digits assigned after utf8proc's Unicode version (src/tokenizer/classes_ref.h)
        # (a letter or digit before 's: "other" to utf8proc would swallow the apostrophe)
        "\u1c89's \u1c8a's", "\ua7cd's", "x\U000105c0's", "\U00010d40's 1", "\U00013460's", "\U0002ebf0's",
        "\u1c89\u1c8a test", "x\ua7cb\ua7cdy \ua7dc", "\U000105c0\U000105f3 ab", "1\U00010d40\U00010d49 2",
        "\U00010d4a\U00010d65\U00010d40", "a\U00011380\U000113b5\U000113d1 b", "\U000116d0\U000116e3.",
        "\U00013460\U000143fa!", "\U00016130\U00016139 \U00016100", "\U0001ccf0\U0001ccf9x",
        "\U0001e5d0\U0001e5f1\U0001e5fa", "\U0002ebf0\U0002ee5d\u4e00 1",
        # contractions in both cases
        "I'M SURE YOU'RE RIGHT, WE'LL SEE WHAT THEY'VE DONE, HE'D SAY IT'S NOT", "i'm you're we'll they've he'd it's",
        "'s't're've'm'll'd", "'S'T'RE'VE'M'LL'D", "can\u2019t won\u2019t",
        # numbers
        "3.14159 2.71828 -0.5 1e10 1,000,000 0x1F 007 12345678901234567890", "v1.2.3-rc4", "\u00bd \u00b2 \u2167 \u2460 \u0663",
        # special tokens in text
        "<|endoftext|>", "<|padding|>", "<|endoftext|><|endoftext|>", " <|endoftext|> x", "a<|padding|>b",
        "text <|endoftext|>   more", "   <|endoftext|>", "<|endoftext|>   ", "<|endoftext|", "<<|endoftext|>>",
        "<|endoftext|>\u0301", "e<|padding|>\u0301", "  <|padding|>  <|endoftext|>\n\n<|endoftext|>",
        # scripts
        "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3002\u4e2d\u6587\u6587\u672c\uff0c\u5305\u542b\u6807\u70b9\u3002",
        "\u0627\u0644\u0633\u0644\u0627\u0645 \u0639\u0644\u064a\u0643\u0645 \u0661\u0662\u0663",
        "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e \u0967\u0968\u0969",
        "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
        "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8", "\u1112\u1161\u11ab\u1100\u1173\u11af",
        "\u1100\u1161 \u1100\u1161\u11a8 \u110b\u1175",
        # emoji
        "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466 family", "\U0001F1FA\U0001F1F8\U0001F1EF\U0001F1F5 flags",
        "\U0001F44D\U0001F3FD thumbs", "\u2764\ufe0f love", "\U0001F600\U0001F601\U0001F602",
        # combining marks, NFD text that NFC changes
        unicodedata.normalize("NFD", "Cr\u00e8me br\u00fbl\u00e9e, na\u00efve caf\u00e9, \u00c5ngstr\u00f6m, \u1ec7"),
        "a\u0300\u0301\u0302\u0303 o\u0308\u0304 \u212b \u2126 \u0344 \u0958", "\u0301\u0301 leading marks",
        "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dA\u0334\u0335\u031c\u0330\u0354L",
    ] + POST9 + [
        # Lm / Mn / Nl / No
        "\u02b0\u02b2\u02e0 \u3005 \u0640 \u16ee\u2160\u3021 \u00b9\u00bc\u2070\u2474 \u0300\u0903",
        # controls, NUL, unusual whitespace
        "a\x00b", "\x00", "\x00\x00 \x00x", "\x01\x02\x1b[0m\x7f", "bell\x07tab\tnul\x00end",
        "a\u2028b\u2029c\u3000d\u0085e\u00a0f\u1680g\u2000h\u200ai\u202fj\u205fk", "\u3000\u3000x", "x\u0085 y",
        "\r\n\r\n", "line\r\nbreak", "\x0b\x0c\x1c\x1d\x1e\x1f",
        # long words and runs
        "supercalifragilisticexpialidocious" * 40, "a" * 3000, "ab" * 1500, "9" * 2000, "." * 1000,
        "\u00e9" * 500, "\u65e5" * 800, "\U0001F600" * 300, "x" + " " * 5000 + "y", "\n" * 700,
        "\t" * 300 + "x", "pneumonoultramicroscopicsilicovolcanoconiosis",
    ]
    # whitespace runs 1..60 between words, mixed with tabs, newlines and NBSP
    for n in range(1, 61):
        texts.append("w" + " " * n + "x")
    for n in [1, 2, 3, 7, 23, 24, 25, 26, 47, 48, 49]:
        texts.append(" " * n)
        texts.append(" " * n + "\n")
        texts.append("a\t" + " " * n + "b")
        texts.append("a" + " " * n + "\tb")
        texts.append("a\n" + " " * n + "b")
        texts.append("a" + " " * n + "\u00a0b")
        texts.append("a\u00a0" + " " * n + "b")
        texts.append("    " * (n // 4) + "if x:\n" + "    " * (n // 4 + 1) + "return 1")
    return texts


def build_mini():
    """A small byte-level BPE tokenizer exercising the added-token flags and add_prefix_space."""
    from tokenizers.pre_tokenizers import ByteLevel
    alphabet = sorted(ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    merges = [("a", "a"), ("\u0120", "t"), ("h", "e"), ("\u0120t", "he"), ("aa", "a"), ("aa", "aa"), ("b", "c"),
              ("a", "bc"), ("l", "o"), ("lo", "w"), ("\u0120", "low"), ("e", "r"), ("\u0120low", "er")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True)])
    tok.add_tokens([
        AddedToken("[R]", rstrip=True, normalized=True),
        AddedToken("word", single_word=True, normalized=False),
        AddedToken("\u00e9t\u00e9", normalized=True),
        AddedToken("<both>", lstrip=True, rstrip=True, normalized=False, special=False),
    ])
    tok.add_special_tokens([AddedToken("<sw>", single_word=True, normalized=False, special=True)])
    cases = [
        "the lower", "aaaaaaa", "aaa", "abc bc", "lower<mask> the", "x   <mask>  y", "<mask><mask>",
        "a [R]   b", "[R]\n\nx", "word words sword word.", "a word_b", "\u00e9t\u00e9", "e\u0301te\u0301 \u00e9t\u00e9s",
        "x <both>  y", "  <both>  ", "<sw> a<sw> <sw>b", "", " ", "hello\u00a0world", "the\u2028the",
        # word characters newer than utf8proc's tables (src/tokenizer/classes_ref.h) break a single_word match
        "\u1c89word word\U000105c0 \U00010d40word", "\U00016d40word \U0002ebf0word",
    ]
    return tok, cases


def encode_entry(tok, text):
    ids = tok.encode(text, add_special_tokens=False).ids
    e = {}
    put(e, "text", text)
    e["ids"] = ids
    dec = tok.decode(ids, skip_special_tokens=False)
    dec_skip = tok.decode(ids, skip_special_tokens=True)
    if dec != text:
        put(e, "decoded", dec)
    if dec_skip != dec:
        put(e, "decoded_skip", dec_skip)
    return e


def decode_cases(tok, rng, n_vocab):
    byte_ids = [tok.token_to_id(c) for c in sorted(pre_tokenizers.ByteLevel.alphabet())]
    byte_ids = [i for i in byte_ids if i is not None]
    cases = []
    fixed = [
        [], [0], [1], [0, 1, 0], [50276], [50254, 50276], [50277], [50279, 50278, 50277], [14931, 235, 211],
        [14931], [235], [211], [14931, 235], [14931, 235, 8718], [211, 14931, 235, 211], [0, 14931, 1, 235, 211],
    ]
    for ids in fixed:
        cases.append(ids)
    for _ in range(150):
        k = rng.choice([1, 2, 3, 4, 6, 10, 20])
        ids = []
        for _ in range(k):
            r = rng.random()
            if r < 0.5:
                ids.append(rng.choice(byte_ids))
            elif r < 0.6:
                ids.append(rng.choice([0, 1, 50254, 50265, 50276, 50277, 50278, 50279]))
            else:
                ids.append(rng.randrange(0, n_vocab + 3))
        cases.append(ids)
    out = []
    for ids in cases:
        e = {"ids": ids}
        t = tok.decode(ids, skip_special_tokens=False)
        ts = tok.decode(ids, skip_special_tokens=True)
        put(e, "text", t)
        if ts != t:
            put(e, "text_skip", ts)
        out.append(e)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tokenizer", help="path of the GPT-NeoX-20B tokenizer.json")
    ap.add_argument("--out", default="tests/fixtures/tokenizer/neox.json")
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--random", type=int, default=300, help="number of random strings")
    args = ap.parse_args()

    raw = open(args.tokenizer, "rb").read()
    tok = Tokenizer.from_str(raw.decode("utf-8"))
    rng = random.Random(args.seed)
    n_vocab = tok.get_vocab_size(with_added_tokens=True)

    texts = fixed_texts() + random_texts(rng, args.random)
    encode = [encode_entry(tok, t) for t in texts]
    for t in texts:  # decode(encode(text)) == NFC(text) for this tokenizer, Unicode 9.0 aside
        if "<|" not in t and t not in POST9:
            dec = tok.decode(tok.encode(t, add_special_tokens=False).ids, skip_special_tokens=False)
            assert dec == unicodedata.normalize("NFC", t), ascii(t)

    mini_tok, mini_cases = build_mini()
    mini = {
        "tokenizer": json.loads(mini_tok.to_str()),
        "encode": [encode_entry(mini_tok, t) for t in mini_cases],
    }
    doc = {
        "meta": {
            "script": SCRIPT,
            "args": sys.argv[1:],
            "seed": args.seed,
            "tokenizers_version": tokenizers.__version__,
            "python": sys.version.split()[0],
            "unicodedata_version": unicodedata.unidata_version,
            "tokenizer_sha256": hashlib.sha256(raw).hexdigest(),
            "n_vocab": n_vocab,
        },
        "encode": encode,
        "decode": decode_cases(tok, rng, n_vocab),
        "mini": mini,
    }
    text = json.dumps(doc, ensure_ascii=True, separators=(",", ":"))
    with open(args.out, "w", encoding="ascii") as f:
        f.write(text + "\n")
    print(f"{args.out}: {len(text)} bytes, {len(encode)} texts, {len(doc['decode'])} decode cases, "
          f"{len(mini['encode'])} mini cases", file=sys.stderr)


if __name__ == "__main__":
    main()
