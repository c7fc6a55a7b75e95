"""SimpleCLIPTokenizer against transformers' CLIPTokenizer (the independent reference)."""

import pytest

from course_utils.tokenization import (
    BOS_ID,
    EOS_ID,
    SimpleCLIPTokenizer,
    bytes_to_unicode,
    learn_merges,
    merge_pair,
    normalize,
    pre_tokenize,
)

PROMPTS = [
    "a photo of a cat",
    "an astronaut riding a horse, highly detailed, 8k, trending on artstation",
    "Hello,   World!!  it's 2024 -- don't STOP",
    "café naïve résumé Ǆ ß straße",
    "e\u0301 (combining accent, NFC-normalised)",
    "😀 emoji 👩‍👩‍👧 🚀🚀",
    "日本語のテキスト и кириллица",
    "3.14159 $100 50% #hashtag @user",
    "tabs\tand\nnewlines\r\n  everywhere",
    "\u00a0no-break\u2003em space",
    "x'''s rock'n'roll I'LL",
    "<|endoftext|> typed specials <|startoftext|>",
    "<|ENDOFTEXT|> not special in upper case",
    "",
    "   ",
    "!!!???...",
    "a red circle on a blue background",
    "word " * 100,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
]


@pytest.fixture(scope="module")
def ours():
    return SimpleCLIPTokenizer()


def test_known_ids_of_clip_vit_large_patch14(ours):
    # ids published with openai/clip-vit-large-patch14's tokenizer
    assert ours.encode("a photo of a cat") == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(ours) == 49408


@pytest.mark.parametrize("text", PROMPTS)
def test_encode_equals_clip_tokenizer(ours, clip_tokenizer, text):
    assert ours.encode(text) == clip_tokenizer(text).input_ids


@pytest.mark.parametrize("text", PROMPTS)
def test_padded_truncated_equals_clip_tokenizer(ours, clip_tokenizer, text):
    ref = clip_tokenizer(text, padding="max_length", max_length=77, truncation=True)
    assert ours(text) == ref.input_ids
    assert ours.attention_mask(text) == ref.attention_mask


@pytest.mark.parametrize("text", PROMPTS)
def test_decode_equals_clip_tokenizer(ours, clip_tokenizer, text):
    ids = clip_tokenizer(text).input_ids
    assert ours.decode(ids) == clip_tokenizer.decode(ids, skip_special_tokens=True)


def test_decode_inverts_encode_up_to_normalisation(ours):
    assert ours.decode(ours.encode("A Red  Circle")) == "a red circle"


def test_byte_table_is_a_bijection_onto_printables():
    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert all(c.isprintable() and not c.isspace() for c in table.values())


def test_pieces_and_single_digits():
    assert pre_tokenize(normalize("It's 2024!")) == ["it", "'s", "2", "0", "2", "4", "!"]


def test_bpe_steps_end_at_the_final_tokens(ours):
    steps = ours.bpe_steps("photography")
    ranks = [s.rank for s in steps]
    assert ranks == sorted(set(ranks))  # a merge's rank exceeds those that built its parts
    assert steps[-1].symbols == ours.bpe("photography")
    assert "".join(steps[-1].symbols) == "photography</w>"


def test_verbose_trace(ours):
    tr = ours.encode_verbose("a red cube")
    assert tr.ids[:5] == [BOS_ID, *ours.encode("a red cube", add_special_tokens=False), EOS_ID]
    assert len(tr.ids) == 77 and tr.n_pad == 72 and sum(tr.attention_mask) == 5
    long = ours.encode_verbose("word " * 100)
    assert long.n_truncated == 102 - 77 and long.ids[-1] == EOS_ID


@pytest.mark.parametrize("bad", [None, 3, ["a", "list"], b"bytes"])
def test_non_string_is_a_clear_error(ours, bad):
    with pytest.raises(TypeError, match="text must be a str"):
        ours.encode(bad)


def test_max_length_too_small(ours):
    with pytest.raises(ValueError, match="max_length must be >= 2"):
        ours("a cat", max_length=1)


def test_merge_pair_merges_every_occurrence_left_to_right():
    assert merge_pair(list("aaa"), ("a", "a")) == ["aa", "a"]
    assert merge_pair(["a", "b", "a", "b</w>"], ("a", "b")) == ["ab", "a", "b</w>"]
    assert merge_pair(list("abc"), ("x", "y")) == list("abc")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learn_merges_equals_huggingface_bpe_trainer(seed):
    import json
    import random

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from course_utils.mini import data

    rng = random.Random(seed)
    specs = [data.sample_spec(seed, i) for i in range(60)]
    words = [w for spec in specs for w in data.caption(spec, rng).split()]
    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(
        vocab_size=100_000, end_of_word_suffix="</w>", show_progress=False
    )
    tok.train_from_iterator([" ".join(words)], trainer)
    reference = [tuple(m) for m in json.loads(tok.to_str())["model"]["merges"]]
    assert len(reference) > 30
    assert learn_merges(words, len(reference) + 10) == reference  # and it stops when done


def test_learn_merges_rejects_an_empty_corpus():
    with pytest.raises(ValueError, match="non-empty"):
        learn_merges([], 5)
