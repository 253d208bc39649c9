#!/bin/sh
# make_corpus.sh OUTFILE: builds the English text corpus that tools/oracle/train_quality.py trains the quality model
# on (see README.md, "Quality model"). Deterministic for given package versions: the output's sha256 is printed.
#
# Where the text comes from (Debian 12 "bookworm" main, fetched with `apt-get download`, unpacked with
# `dpkg-deb -x` into a temporary folder; nothing is installed and no R, Sphinx or other tool is needed):
#   r-cran-janeaustenr  Jane Austen's six novels (Emma, Mansfield Park, Northanger Abbey, Persuasion, Pride and
#                       Prejudice, Sense and Sensibility): public-domain texts (Project Gutenberg transcriptions),
#                       packaging MIT. Read from the package's R lazy-load database with a small R-serialization
#                       reader below. About 4.0 MB.
#   python3.11-doc      the Python 3.11 documentation (PSF documentation licence): the prose paragraphs (<p>) and
#                       headings of every HTML page; code examples, tables of contents and navigation are left out.
#   debian-handbook     "The Debian Administrator's Handbook", English edition (GPL-2+ or CC-BY-SA-3.0): the
#                       paragraphs and headings of its HTML pages, without screen listings or program examples.
# All three licences allow copying the text; the corpus is only generated for measuring a model's perplexity,
# never committed or distributed.
#
# Layout: each source is cut into documents (a novel's chapter, a documentation page), each document into pieces of at
# most ~32 KB at paragraph boundaries; the pieces are put in the order of sha256(source/name/index), so that every part
# of the file, the 5% that train_quality.py holds out at its end included, mixes the three sources. Pieces are
# separated by one blank line; paragraphs inside one by a blank line; whitespace in a paragraph is collapsed (Austen's
# lines keep their original wrapping). Output: one UTF-8 file with '\n' line ends and no control characters.
#
# Needs: apt-get (with its lists; run `apt-get update` once), dpkg-deb, python3 (standard library only).
# Usage: sh tools/oracle/make_corpus.sh corpus.txt
#        AUSTEN_ONLY=1 sh tools/oracle/make_corpus.sh austen.txt   (only the public-domain novels, same layout: the
#        source of the tokenizer-training test fixture, tests/fixtures/tokenizer_train/)
set -eu
if [ $# -ne 1 ]; then
    echo "usage: $0 OUTFILE" >&2
    exit 2
fi
out=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pkgs="r-cran-janeaustenr python3.11-doc debian-handbook"
if [ -n "${AUSTEN_ONLY:-}" ]; then
    pkgs="r-cran-janeaustenr"
fi
# The versions this recipe was made with; with them the output is 12,208,754 bytes (Austen 4.02 MB, Python docs
# 7.19 MB, handbook 0.99 MB; 181,442 lines), sha256 a2e5baa4ba0fb42d80424457327e9c4c53879d3105e85bcbebdec64fb6a977e7.
# Another version still works (a note says so) but gives another file.
made_with="r-cran-janeaustenr=1.0.0-1 python3.11-doc=3.11.2-6+deb12u9 debian-handbook=11.20220922"
# shellcheck disable=SC2086 # $pkgs is a list of names
(cd "$tmp" && apt-get download $pkgs >/dev/null)
for deb in "$tmp"/*.deb; do
    name=$(dpkg-deb -f "$deb" Package)
    ver=$(dpkg-deb -f "$deb" Version)
    echo "source: $name=$ver" >&2
    case " $made_with " in
    *" $name=$ver "*) ;;
    *) echo "note: $name $ver differs from the recipe's ($made_with): the output will differ" >&2 ;;
    esac
    dpkg-deb -x "$deb" "$tmp/root"
done
python3 - "$tmp/root" "$out" "${AUSTEN_ONLY:-}" <<'PY'
import gzip, hashlib, html.parser, os, re, struct, sys, unicodedata, zlib

root, out, austen_only = sys.argv[1], sys.argv[2], sys.argv[3] != ""
PIECE = 32768


# ---- R serialization (format 2/3, XDR), just enough for the janeaustenr data: character vectors and lists.
class RReader:
    def __init__(self, b):
        self.b, self.p, self.refs = b, 0, []

    def i32(self):
        (v,) = struct.unpack_from(">i", self.b, self.p)
        self.p += 4
        return v

    def take(self, n):
        v = self.b[self.p:self.p + n]
        self.p += n
        return v

    def load(self):
        assert self.take(2) == b"X\n", "not an XDR R serialization"
        version = self.i32()
        self.i32(), self.i32()
        if version == 3:
            self.take(self.i32())  # native encoding name
        return self.item()

    def item(self):
        flags = self.i32()
        t, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if t in (241, 242, 250, 251, 252, 253, 254):  # environments, NULL and markers
            return None
        if t == 255:  # back-reference
            return self.refs[(flags >> 8) - 1]
        if t == 1:  # symbol
            v = self.item()
            self.refs.append(v)
            return v
        if t == 9:  # CHARSXP
            n = self.i32()
            return None if n == -1 else self.take(n).decode("utf-8")
        if t in (2, 3, 4, 5, 6, 17):  # pairlist-like
            attr = self.item() if has_attr else None
            tag = self.item() if has_tag else None
            car, cdr = self.item(), self.item()
            return [(tag, car)] + (cdr if isinstance(cdr, list) else [])
        if t in (16, 19, 20):  # character vector, list
            v = [self.item() for _ in range(self.i32())]
        elif t in (10, 13):  # logical, integer
            n = self.i32()
            v = list(struct.unpack_from(">%di" % n, self.b, self.p))
            self.p += 4 * n
        elif t == 14:  # double
            n = self.i32()
            v = list(struct.unpack_from(">%dd" % n, self.b, self.p))
            self.p += 8 * n
        else:
            raise ValueError("R type %d not supported" % t)
        if has_attr:
            return {"value": v, "attr": dict(self.item())}
        return v


def austen():
    d = os.path.join(root, "usr/lib/R/site-library/janeaustenr/data")
    index = RReader(gzip.decompress(open(os.path.join(d, "Rdata.rdx"), "rb").read())).load()
    fields = dict(zip(index["attr"]["names"], index["value"]))
    variables = fields["variables"]
    assert fields["compressed"] == [1], "expected zlib-compressed lazy-load data"
    db = open(os.path.join(d, "Rdata.rdb"), "rb").read()
    for name, (off, size) in zip(variables["attr"]["names"], variables["value"]):
        blob = db[off:off + size]
        lines = RReader(zlib.decompress(blob[4:])).load()
        assert len(lines) > 1000 and all(isinstance(s, str) for s in lines), name
        # Documents = chapters: cut before each "CHAPTER"/"Chapter" heading line.
        chapters, cur = [], []
        for line in lines:
            if re.match(r"^\s*(CHAPTER|Chapter)\b", line) and cur:
                chapters.append(cur)
                cur = []
            cur.append(line.rstrip())
        chapters.append(cur)
        for k, ch in enumerate(chapters):
            text = "\n".join(ch)
            paras = [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]
            yield "austen/%s/%03d" % (name, k), paras


# ---- HTML: paragraphs (<p>, DocBook's <div class="para">) and headings (<h1>-<h4>), nothing inside <pre>,
# navigation, sidebars, footers, scripts or styles.
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
SKIP_CLASSES = {"sphinxsidebar", "related", "footer", "docnav", "highlight", "toctree-wrapper", "contents", "topic",
                "mobile-nav", "sidebar-search", "footnote", "legalnotice", "toc"}
SKIP_TAGS = {"pre", "script", "style", "nav", "head", "table"}


class ParaParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack = []  # (tag, is_skip, is_para)
        self.skip = 0
        self.para = None  # list of text parts while inside a paragraph
        self.depth = 0  # stack depth at which the current paragraph started
        self.paras = []

    def handle_starttag(self, tag, attrs):
        if tag in VOID:
            if tag == "br" and self.para is not None:
                self.para.append(" ")
            return
        a = dict(attrs)
        classes = set((a.get("class") or "").split())
        skip = tag in SKIP_TAGS or bool(classes & SKIP_CLASSES) or a.get("id") in ("banner", "title")
        is_para = (not self.skip and not skip and self.para is None and
                   (tag == "p" or tag in ("h1", "h2", "h3", "h4") or (tag == "div" and "para" in classes)))
        self.stack.append((tag, skip, is_para))
        self.skip += skip
        if is_para:
            self.para = []

    def handle_startendtag(self, tag, attrs):
        if tag == "br" and self.para is not None:
            self.para.append(" ")

    def handle_endtag(self, tag):
        if tag in VOID or not any(t == tag for t, _, _ in self.stack):
            return
        while self.stack:  # close unclosed children too (HTML's optional end tags)
            t, skip, is_para = self.stack.pop()
            self.skip -= skip
            if is_para:
                text = re.sub(r"\s+", " ", "".join(self.para)).replace("\u00b6", "").strip()
                if text:
                    self.paras.append(text)
                self.para = None
            if t == tag:
                break

    def handle_data(self, data):
        if self.para is not None and not self.skip:
            self.para.append(data)


def html_docs(source, folder, drop=()):
    base = os.path.join(root, folder)
    for dirpath, dirnames, files in os.walk(base):
        dirnames.sort()
        rel = os.path.relpath(dirpath, base)
        if any(rel == d or rel.startswith(d + "/") for d in drop):
            continue
        for f in sorted(files):
            if not f.endswith(".html"):
                continue
            p = ParaParser()
            p.feed(open(os.path.join(dirpath, f), encoding="utf-8").read())
            p.close()
            paras = [t for t in p.paras if len(t) > 1]
            if paras:
                yield "%s/%s" % (source, os.path.normpath(os.path.join(rel, f))), paras


def docs():
    yield from austen()
    if austen_only:
        return
    yield from html_docs("python", "usr/share/doc/python3.11/html", drop=("_sources", "_static", "_images"))
    yield from html_docs("handbook", "usr/share/doc/debian-handbook/html/en-US", drop=("Common_Content", "images"))


def clean(s):
    s = unicodedata.normalize("NFC", s.replace("\r\n", "\n").replace("\r", "\n"))
    # Control characters other than newline become spaces (tabs included); lines lose trailing blanks.
    s = "".join(" " if (unicodedata.category(c) == "Cc" and c != "\n") else c for c in s)
    return "\n".join(line.rstrip() for line in s.split("\n"))


pieces, per_source = [], {}
for name, paras in docs():
    src = name.split("/")[0]
    chunk, size, k = [], 0, 0
    for para in paras:
        para = clean(para).strip("\n")
        if not para.strip():
            continue
        if chunk and size + len(para) > PIECE:
            pieces.append(("%s/%d" % (name, k), "\n\n".join(chunk)))
            chunk, size, k = [], 0, k + 1
        chunk.append(para)
        size += len(para) + 2
    if chunk:
        pieces.append(("%s/%d" % (name, k), "\n\n".join(chunk)))
for name, text in pieces:
    src = name.split("/")[0]
    per_source[src] = per_source.get(src, 0) + len(text.encode("utf-8"))
pieces.sort(key=lambda nt: hashlib.sha256(nt[0].encode("utf-8")).hexdigest())
data = ("\n\n".join(text for _, text in pieces) + "\n").encode("utf-8")
with open(out, "wb") as f:
    f.write(data)
for src, n in sorted(per_source.items()):
    print("%-8s %9d bytes" % (src, n), file=sys.stderr)
print("pieces: %d, bytes: %d, lines: %d, sha256: %s" % (len(pieces), len(data), data.count(b"\n"),
      hashlib.sha256(data).hexdigest()), file=sys.stderr)
PY
