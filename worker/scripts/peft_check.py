#!/usr/bin/env python3
"""Checks that a LoRA adapter (or a merged model) loads in transformers/PEFT and gives the
expected logits.

    peft_check.py BASE_DIR ADAPTER_DIR EXPECTED_JSON      base + PEFT adapter
    peft_check.py --merged MERGED_DIR EXPECTED_JSON       a merged Hugging Face model folder

EXPECTED_JSON has the format of expected_logits.json: {"input_ids": [[...]], "logits": [[[...]]]}.
The model runs in float32, eager attention, no attention mask (pure causal). Prints the max |Δ|
against the expected logits and exits 1 if it is above --atol (default 1e-4).

Loading must be clean: with an adapter, every tensor in adapter_model.safetensors must land on a
LoRA parameter of the model and every LoRA parameter must come from the file (PEFT itself only
warns about missing keys and ignores unexpected ones, so this is checked here too); with
--merged, transformers must report no missing, unexpected or mismatched keys. A loading problem
exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import NoReturn

import torch


def fail(message: str) -> NoReturn:
    print(f"LOAD ERROR: {message}", file=sys.stderr)
    sys.exit(2)


def load_base(folder: Path, merged: bool):
    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, info = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch.float32, attn_implementation="eager", output_loading_info=True,
        )
    problems = {k: list(v) for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        fail(f"{folder}: transformers reports {problems}")
    for w in caught:
        if any(word in str(w.message).lower() for word in ("missing", "unexpected", "mismatch", "not initialized", "newly initialized")):
            fail(f"{folder}: {w.message}")
    kind = "merged model" if merged else "base"
    print(f"{kind}: {folder} ({type(model).__name__}, {sum(p.numel() for p in model.parameters())} params) loaded cleanly")
    return model.float().eval()


def load_adapter(model, folder: Path):
    from peft import PeftModel
    from safetensors.torch import load_file

    config = json.loads((folder / "adapter_config.json").read_text())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = PeftModel.from_pretrained(model, folder)
    for w in caught:
        text = str(w.message)
        if any(word in text.lower() for word in ("missing", "unexpected", "mismatch")):
            fail(f"peft: {text}")

    # PEFT ignores unexpected keys silently: check both directions here.
    weights_file = folder / "adapter_model.safetensors"
    if not weights_file.exists():
        fail(f"{weights_file} is missing (only safetensors adapters are checked)")
    saved = load_file(str(weights_file))
    adapter = peft_model.active_adapter
    params = {}
    for name, p in peft_model.named_parameters():
        if "lora_" in name:
            params[name.replace(f".{adapter}.", ".").replace(f".{adapter}", "")] = p
    missing = sorted(set(params) - set(saved))
    unexpected = sorted(set(saved) - set(params))
    if missing or unexpected:
        fail(f"adapter keys do not match the model: missing {missing[:8]} ({len(missing)}), "
             f"unexpected {unexpected[:8]} ({len(unexpected)})")
    for key, tensor in saved.items():
        if tuple(tensor.shape) != tuple(params[key].shape):
            fail(f"{key}: shape {list(tensor.shape)} in the file, {list(params[key].shape)} in the model")
        if not torch.equal(tensor.float(), params[key].detach().float()):
            fail(f"{key}: the loaded value differs from the file")
    print(f"adapter: {folder} loaded cleanly: {len(saved)} tensors, r={config.get('r')} "
          f"lora_alpha={config.get('lora_alpha')} lora_dropout={config.get('lora_dropout')} "
          f"use_rslora={config.get('use_rslora')} target_modules={config.get('target_modules')}")
    return peft_model.eval()


@torch.no_grad()
def compare(model, expected_path: Path, atol: float) -> int:
    expected = json.loads(expected_path.read_text())
    ids = torch.tensor(expected["input_ids"], dtype=torch.long)
    want = torch.tensor(expected["logits"], dtype=torch.float32)
    got = model(input_ids=ids, use_cache=False).logits.float()
    if got.shape != want.shape:
        print(f"FAIL: logits shape {list(got.shape)}, expected {list(want.shape)}")
        return 1
    diff = (got - want).abs()
    worst = diff.max().item()
    b, t, v = divmod_index(diff.argmax().item(), want.shape)
    print(f"max |Δ| = {worst:.3e} (at batch {b}, position {t}, token {v}), mean |Δ| = {diff.mean().item():.3e}, "
          f"argmax agreement = {(got.argmax(-1) == want.argmax(-1)).float().mean().item():.3f}, atol = {atol:g}")
    if worst > atol or not torch.isfinite(got).all():
        print("FAIL")
        return 1
    print("OK")
    return 0


def divmod_index(flat: int, shape) -> tuple[int, int, int]:
    _, t, v = shape
    return flat // (t * v), (flat // v) % t, flat % v


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--merged", metavar="MERGED_DIR", type=Path, help="check a merged HF model folder instead")
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("paths", nargs="+", type=Path, help="BASE_DIR ADAPTER_DIR EXPECTED_JSON, or EXPECTED_JSON with --merged")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)

    if args.merged:
        if len(args.paths) != 1:
            ap.error("with --merged give exactly one more argument: EXPECTED_JSON")
        model = load_base(args.merged, merged=True)
        return compare(model, args.paths[0], args.atol)
    if len(args.paths) != 3:
        ap.error("give BASE_DIR ADAPTER_DIR EXPECTED_JSON")
    base_dir, adapter_dir, expected = args.paths
    model = load_adapter(load_base(base_dir, merged=False), adapter_dir)
    return compare(model, expected, args.atol)


if __name__ == "__main__":
    sys.exit(main())
