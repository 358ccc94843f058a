"""A byte-level BPE vocabulary in CLIP's format (vocab.json + merges.txt), trained on captions.

Layout as OpenAI's: the 256 byte symbols, the same with "</w>", then one entry per merge in merge
order, then <|startoftext|> and <|endoftext|>.  merges.txt starts with a "#version" line.
encode() is CLIP's simple_tokenizer for lower-case ASCII text (what the captions are).
"""
import collections
import json
import re


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


B2U = bytes_to_unicode()
WORD_RE = re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+")


def words_of(text):
    text = " ".join(text.lower().split())
    return ["".join(B2U[b] for b in w.encode("utf-8")) for w in WORD_RE.findall(text)]


def train(captions, max_merges=2000):
    """Merges the most frequent adjacent pair (ties: the smallest pair) until none occurs twice."""
    freq = collections.Counter(w for c in captions for w in words_of(c))
    words = {w: tuple(w[:-1]) + (w[-1] + "</w>",) for w in freq}
    merges = []
    while len(merges) < max_merges:
        pairs = collections.Counter()
        for w, sym in words.items():
            for a, b in zip(sym, sym[1:]):
                pairs[a, b] += freq[w]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < 2:
            break
        merges.append(best)
        for w, sym in words.items():
            out, i = [], 0
            while i < len(sym):
                if i + 1 < len(sym) and (sym[i], sym[i + 1]) == best:
                    out.append(sym[i] + sym[i + 1])
                    i += 2
                else:
                    out.append(sym[i])
                    i += 1
            words[w] = tuple(out)
    vocab = list(B2U.values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return merges, {tok: i for i, tok in enumerate(vocab)}


def save(merges, vocab, folder):
    with open(f"{folder}/vocab.json", "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(f"{folder}/merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2 - demo vocabulary trained by tools/train/bpe.py\n")
        f.writelines(f"{a} {b}\n" for a, b in merges)


class Tokenizer:
    def __init__(self, folder):
        with open(f"{folder}/vocab.json", encoding="utf-8") as f:
            self.vocab = json.load(f)
        with open(f"{folder}/merges.txt", encoding="utf-8") as f:
            lines = f.read().split("\n")[1:]
        self.ranks = {tuple(l.split()): i for i, l in enumerate(l for l in lines if l)}
        self.sot, self.eot = self.vocab["<|startoftext|>"], self.vocab["<|endoftext|>"]
        self.cache = {}

    def bpe(self, w):
        if w in self.cache:
            return self.cache[w]
        sym = list(w[:-1]) + [w[-1] + "</w>"]
        while len(sym) > 1:
            pairs = [(self.ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(sym, sym[1:]))]
            rank, first = min(pairs)
            if rank == 1 << 30:
                break
            pair = (sym[first], sym[first + 1])
            out, i = [], 0
            while i < len(sym):
                if i + 1 < len(sym) and (sym[i], sym[i + 1]) == pair:
                    out.append(sym[i] + sym[i + 1])
                    i += 2
                else:
                    out.append(sym[i])
                    i += 1
            sym = out
        self.cache[w] = [self.vocab[s] for s in sym]
        return self.cache[w]

    def encode(self, text, length=77):
        """[SOT, tokens..., EOT] padded with EOT (SD 1.x), truncated to `length` keeping the EOT."""
        ids = [self.sot] + [t for w in words_of(text) for t in self.bpe(w)]
        ids = ids[:length - 1] + [self.eot]
        return ids + [self.eot] * (length - len(ids))
