#!/usr/bin/env python3
"""tiktoken's GPT-2 encode throughput on tiny Shakespeare, offline, on one thread.

The reference figure for `cargo run --release --example bench_tokenizers`.
tiktoken is not a dependency of the project: run this with a Python that has
it (`pip install tiktoken`). Nothing is downloaded: tiktoken reads GPT-2's two
files from a cache directory in which they are stored under the sha1 of their
OpenAI URLs (see shared/data/SOURCES.md, "Offline tiktoken in Python").

Prints one line: `tiktoken_mb_s <value>` (best of --repeats runs, after one
warm-up run).

    python scripts/bench_tiktoken.py [--data-dir DIR] [--repeats N]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# sha1 of the OpenAI URLs tiktoken downloads the two files from
CACHE_NAMES = {
    "vocab.bpe": "6d1cbeee0f20b3d9449abfede4726ed8212e3aee",
    "encoder.json": "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6",
}


def default_data_dir() -> Path:
    env = os.environ.get("LLM_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def gpt2_encoding(data_dir: Path):
    """tiktoken's "gpt2" encoding built from the two files under `data_dir/gpt2`,
    without a download. tiktoken copies nothing once loaded, so the temporary
    cache directory is removed at once."""
    with tempfile.TemporaryDirectory(prefix="tiktoken-cache-") as cache:
        for name, sha1 in CACHE_NAMES.items():
            shutil.copyfile(data_dir / "gpt2" / name, Path(cache) / sha1)
        # must be set before tiktoken loads the encoding
        os.environ["TIKTOKEN_CACHE_DIR"] = cache
        import tiktoken

        return tiktoken.get_encoding("gpt2")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    text_path = args.data_dir / "tinyshakespeare.txt"
    text = text_path.read_text(encoding="utf-8")
    os.environ["RAYON_NUM_THREADS"] = "1"
    enc = gpt2_encoding(args.data_dir)
    ids = enc.encode(text, allowed_special={"<|endoftext|>"})  # warm-up
    if len(ids) != 338025:
        print(f"unexpected token count {len(ids)} (expected 338025)", file=sys.stderr)
        return 1
    best = float("inf")
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        enc.encode(text, allowed_special={"<|endoftext|>"})
        best = min(best, time.perf_counter() - t0)
    mb = len(text.encode("utf-8")) / 1e6
    print(f"tiktoken_mb_s {mb / best:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
