"""CLIP's tokenizer written out: text -> normalised text -> pieces -> bytes -> BPE -> ids.

This is the tokenizer of OpenAI's CLIP (Radford et al. 2021), which Stable Diffusion 1.x uses.
It is a byte-level byte-pair encoding (Sennrich et al. 2016; GPT-2's byte table):

1. normalise: Unicode NFC, every run of whitespace -> one space, lower case;
2. pre-tokenise with CLIP's regex: contractions, runs of letters, *single* digits, runs of
   punctuation (spaces are dropped: a word's end is marked by "</w>" on its last symbol);
3. map each UTF-8 byte to a printable character (`bytes_to_unicode`), so any text is covered;
4. BPE: repeatedly merge the adjacent pair with the lowest merge rank until none applies;
5. look the symbols up in the 49,408-entry vocabulary; wrap in <|startoftext|> (49406) and
   <|endoftext|> (49407); for SD, pad to 77 with <|endoftext|> and truncate longer prompts.

`SimpleCLIPTokenizer(...).encode(text)` equals `CLIPTokenizer(...)(text).input_ids`
(tests/test_tokenization.py checks it on punctuation, digits, accents, emoji, long prompts).
Taught in notebooks/01_tokenization.ipynb.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import regex

from course_utils import MINI_SD_PATH

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

BOS_ID, EOS_ID = 49406, 49407  # <|startoftext|>, <|endoftext|> (also SD's padding token)
SPECIALS = ("<|startoftext|>", "<|endoftext|>")  # typed verbatim in a prompt, they stay whole
MAX_LENGTH = 77  # CLIP's context length, what SD's text encoder was trained with
TOKENIZER_DIR = MINI_SD_PATH / "tokenizer"

# CLIP's pre-tokenizer: specials, contractions, letter runs, ONE digit, punctuation runs.
CLIP_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
# Hugging Face's CLIPTokenizer then applies GPT-2's byte-level split inside each piece. On CLIP's
# pieces it changes one thing only: a special token typed in another case ("<|ENDOFTEXT|>") is
# lower-cased into a special-token match above, and this split cuts it back into "<|", "endoftext",
# "|>" (fuzzed against CLIPTokenizer; typed specials in the right case are cut out before).
GPT2_PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)


@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's table byte -> printable character. Printable bytes map to themselves; the
    68 others (space, control bytes, ...) to characters from 256 up, so nothing is invisible."""
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def normalize(text: str) -> str:
    """Step 1: NFC, whitespace runs -> " ", lower case (what CLIPTokenizer's normaliser does)."""
    return regex.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).lower()


def pre_tokenize(text: str) -> list[str]:
    """Step 2: split normalised text into pieces; each piece is BPE-encoded on its own."""
    return [p for piece in CLIP_PATTERN.findall(text) for p in GPT2_PATTERN.findall(piece)]


def to_byte_symbols(piece: str) -> list[str]:
    """Step 3: the piece's UTF-8 bytes as printable symbols; the last one gets "</w>"."""
    table = bytes_to_unicode()
    symbols = [table[b] for b in piece.encode("utf-8")]
    symbols[-1] += "</w>"
    return symbols


def merge_pair(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """Step 4's one move: replace every occurrence of `pair` in `symbols`, left to right, by the
    two symbols joined ("p", "h") -> "ph". Encoding (`SimpleCLIPTokenizer.bpe_steps`) and learning
    (`learn_merges`) both use it."""
    merged, i = [], 0
    while i < len(symbols):
        if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == tuple(pair):
            merged.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


def learn_merges(words: list[str], n_merges: int) -> list[tuple[str, str]]:
    """How merges.txt was made (Sennrich et al. 2016, Algorithm 1): start from characters, the
    last of each word marked "</w>"; count every adjacent pair over the corpus (each word weighted
    by its frequency); merge the most frequent pair everywhere; record it; repeat `n_merges` times.
    Ties go to the pair whose symbols entered the vocabulary first (characters in code-point
    order, then "x</w>" symbols, then merged ones), the rule of Hugging Face's `BpeTrainer`:
    the result equals `tokenizers.trainers.BpeTrainer(end_of_word_suffix="</w>")`'s merges
    (tests/test_tokenization.py). CLIP's own merges were learned on far more text, on bytes."""
    if not words or not all(isinstance(w, str) and w for w in words):
        raise ValueError("words must be a non-empty list of non-empty strings")
    vocab = Counter(tuple(w[:-1]) + (w[-1] + "</w>",) for w in words)
    symbols = sorted({c for w in words for c in w}) + sorted({w[-1] for w in vocab})
    order = {s: i for i, s in enumerate(symbols)}  # when each symbol entered the vocabulary
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, n in vocab.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += n
        if not pairs:  # every word is one symbol: nothing left to merge
            break
        best = min(pairs, key=lambda p: (-pairs[p], order[p[0]], order[p[1]]))
        merges.append(best)
        order.setdefault(best[0] + best[1], len(order))
        new: Counter[tuple[str, ...]] = Counter()
        for word, n in vocab.items():
            new[tuple(merge_pair(list(word), best))] += n
        vocab = new
    return merges


class MergeStep(NamedTuple):
    """One BPE merge, as `SimpleCLIPTokenizer.bpe_steps` shows it."""

    pair: tuple[str, str]  # the pair merged at this step
    rank: int  # its rank in merges.txt (lower = learned earlier = merged first)
    symbols: list[str]  # the symbols after the merge


class TokenTrace(NamedTuple):
    """Every intermediate of `encode_verbose` (minGPT's encode_and_show_work)."""

    normalized: str
    pieces: list[str]
    bpe_tokens: list[str]
    ids: list[int]  # padded/truncated to max_length, with start/end tokens
    attention_mask: list[int]  # 1 for real tokens (start and first end included), 0 for padding
    n_pad: int
    n_truncated: int  # how many BPE tokens the truncation dropped


def clip_tokenizer(path: str | Path = TOKENIZER_DIR) -> CLIPTokenizer:
    """transformers' `CLIPTokenizer` from a folder's vocab.json and merges.txt (default: the
    course's copy of CLIP's BPE files). Built from files it needs `model_max_length=77` said
    explicitly; `from_pretrained` would read it from tokenizer_config.json. The reference that
    `SimpleCLIPTokenizer` is checked against (01, tests/test_tokenization.py)."""
    from transformers import CLIPTokenizer

    path = Path(path)
    return CLIPTokenizer(
        str(path / "vocab.json"), str(path / "merges.txt"), model_max_length=MAX_LENGTH
    )


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}: {text!r:.60}")
    return text


class SimpleCLIPTokenizer:
    """CLIP's BPE tokenizer in ~100 readable lines, reading the same vocab.json / merges.txt."""

    def __init__(self, path: str | Path = TOKENIZER_DIR, max_length: int = MAX_LENGTH):
        path = Path(path)
        if not (path / "vocab.json").is_file() or not (path / "merges.txt").is_file():
            raise FileNotFoundError(f"{path} must hold vocab.json and merges.txt")
        self.encoder: dict[str, int] = json.loads((path / "vocab.json").read_text("utf-8"))
        self.decoder = {i: t for t, i in self.encoder.items()}
        lines = (path / "merges.txt").read_text("utf-8").split("\n")[1:]  # skip "#version"
        self.ranks = {tuple(m.split()): r for r, m in enumerate(lines) if m}
        self.max_length = max_length
        self._cache: dict[str, list[str]] = {}

    def __len__(self) -> int:
        return len(self.encoder)

    def bpe_steps(self, piece: str) -> list[MergeStep]:
        """Step 4 shown: every merge applied to one piece, in order."""
        symbols, steps = to_byte_symbols(piece), []
        while len(symbols) > 1:
            pairs = set(zip(symbols, symbols[1:]))
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            symbols = merge_pair(symbols, best)
            steps.append(MergeStep(best, self.ranks[best], symbols))
        return steps

    def bpe(self, piece: str) -> list[str]:
        """The final BPE symbols of one piece (cached: prompts repeat words)."""
        if piece not in self._cache:
            steps = self.bpe_steps(piece)
            self._cache[piece] = steps[-1].symbols if steps else to_byte_symbols(piece)
        return self._cache[piece]

    def tokenize(self, text: str) -> list[str]:
        """Text -> BPE token strings, without start/end tokens. Special tokens typed verbatim
        (case-sensitive, as in CLIPTokenizer) are cut out before normalising and kept whole."""
        tokens = []
        for part in regex.split(r"(<\|startoftext\|>|<\|endoftext\|>)", _check_text(text)):
            if part in SPECIALS:
                tokens.append(part)
            else:
                tokens += [s for p in pre_tokenize(normalize(part)) for s in self.bpe(p)]
        return tokens

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Text -> ids, `[49406, ..., 49407]`; equal to `CLIPTokenizer(text).input_ids`.
        Neither padded nor truncated: see `pad_and_truncate` for SD's fixed 77."""
        ids = [self.encoder[s] for s in self.tokenize(text)]
        return [BOS_ID, *ids, EOS_ID] if add_special_tokens else ids

    def pad_and_truncate(self, ids: list[int], max_length: int | None = None) -> list[int]:
        """Keep the first max_length-1 ids, end with <|endoftext|>, pad with it to max_length
        (= CLIPTokenizer(..., padding="max_length", truncation=True, max_length=77))."""
        n = max_length or self.max_length
        if n < 2:
            raise ValueError(f"max_length must be >= 2 (start + end token), got {n}")
        if len(ids) > n:
            ids = [*ids[: n - 1], EOS_ID]
        return ids + [EOS_ID] * (n - len(ids))

    def attention_mask(self, text: str, max_length: int | None = None) -> list[int]:
        """1 for the real tokens (start, text, first end token), 0 for the padding."""
        n = max_length or self.max_length
        real = min(len(self.encode(text)), n)
        return [1] * real + [0] * (n - real)

    def __call__(self, text: str, max_length: int | None = None) -> list[int]:
        """What Stable Diffusion feeds its text encoder: exactly 77 ids."""
        return self.pad_and_truncate(self.encode(text), max_length)

    def encode_verbose(self, text: str, max_length: int | None = None) -> TokenTrace:
        """Every intermediate of encoding, for the notebook (and for curious learners)."""
        n = max_length or self.max_length
        norm = normalize(_check_text(text))
        pieces = pre_tokenize(norm)
        tokens = self.tokenize(text)
        ids = self.pad_and_truncate([BOS_ID, *(self.encoder[s] for s in tokens), EOS_ID], n)
        mask = self.attention_mask(text, n)
        return TokenTrace(norm, pieces, tokens, ids, mask, n - sum(mask),
                          max(0, len(tokens) + 2 - n))  # fmt: skip

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """Ids -> text: symbols back to bytes, "</w>" back to a space. Inverts `encode` up to
        normalisation (lower case, one space) and CLIP's spaces around punctuation."""
        inverse = {c: b for b, c in bytes_to_unicode().items()}
        specials = {BOS_ID, EOS_ID}
        text = "".join(
            self.decoder[int(i)] for i in ids if not (skip_special_tokens and int(i) in specials)
        )
        text = text.replace("</w>", " ")
        out = bytearray()
        for ch in text:  # specials and spaces are not in the byte table; keep them as UTF-8
            out.extend([inverse[ch]] if ch in inverse else ch.encode("utf-8"))
        return out.decode("utf-8", errors="replace").strip()
