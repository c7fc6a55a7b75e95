"""Build CLIP's tokenizer files (vocab.json, merges.txt) offline.

The BPE merge list `bpe_simple_vocab_16e6.txt.gz` ships inside the open-clip-torch wheel (MIT
license). We read it as *data* from the wheel (we never import open_clip, which would pull in
torchvision) and lay out the vocabulary exactly as OpenAI's CLIP does:

    256 byte symbols, the same 256 with an end-of-word marker "</w>", 48,894 merges,
    "<|startoftext|>" (49406) and "<|endoftext|>" (49407)  ->  49,408 tokens.

The ids equal those of openai/clip-vit-large-patch14 (checked by tests/test_tokenization.py on
known prompts, e.g. "a photo of a cat" -> [49406, 320, 1125, 539, 320, 2368, 49407]).

Usage:  python scripts/build_tokenizer.py OUT_DIR [--wheel PATH]
Without --wheel it runs `pip download --no-deps open-clip-torch==3.3.0` into a temp folder.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from course_utils.tokenization import bytes_to_unicode

N_MERGES = 49408 - 256 - 256 - 2  # = 48,894


def read_bpe_from_wheel(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        text = gzip.decompress(z.read("open_clip/bpe_simple_vocab_16e6.txt.gz")).decode("utf-8")
    return text.split("\n")[1 : N_MERGES + 1]  # line 0 is a header


def build(out: Path, merges: list[str]) -> None:
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408, len(vocab)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(
        json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False)
    )
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--wheel", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel
        if wheel is None:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
                   "open-clip-torch==3.3.0"]  # fmt: skip
            subprocess.run(cmd, check=True)
            wheel = next(Path(tmp).glob("open_clip_torch-*.whl"))
        build(args.out, read_bpe_from_wheel(wheel))
    print(f"wrote {args.out}/vocab.json and merges.txt (49408 tokens)")


if __name__ == "__main__":
    main()
