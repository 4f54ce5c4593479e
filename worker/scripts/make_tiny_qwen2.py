#!/usr/bin/env python3
"""Writes the tiny Qwen2 parity fixtures the Rust LoRA trainer (worker/src/lm) is checked against.

Outputs, under worker/tests/fixtures/ (or --out):

  tiny-qwen2/               float32 weights, untied lm_head, GQA (4 query heads, 2 kv heads)
  tiny-qwen2-bf16/          bfloat16 weights, tied embeddings, another seed
  peft-reference-adapter/   a PEFT LoRA adapter (r=4, alpha=8, q/k/v/o) for tiny-qwen2

Each model folder holds config.json, model.safetensors, generation_config.json, tokenizer.json,
expected_logits.json (float32 eager logits of a fixed batch, no attention mask) and
expected_generation.json (greedy, 8 new tokens, KV cache). The adapter folder holds PEFT's own
adapter_config.json and adapter_model.safetensors plus expected_logits.json of base+adapter.

Weights are re-initialised with large values (HF's default std 0.02 gives near-uniform logits,
which would make a parity test weak). Everything is seeded, so reruns give the same files
(up to float formatting of the library versions in use).

Run from the repository root:
    /work/torch-venv/bin/python worker/scripts/make_tiny_qwen2.py
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path("/work/shared/data/ko/corpus.jsonl")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHECK_TEXT = "대한민국 헌법 제1조"
VOCAB = 320

# Fixed batch: 2 sequences of 12 ids, spread over the vocab, including 0 and 319.
INPUT_IDS = [
    [0, 17, 45, 88, 123, 150, 177, 201, 240, 266, 299, 319],
    [319, 3, 250, 64, 100, 7, 289, 33, 160, 211, 5, 0],
]

# Used when the shared corpus is not there, so the script still runs anywhere.
FALLBACK_SENTENCES = [
    "대한민국은 민주공화국이다.",
    "대한민국의 주권은 국민에게 있고, 모든 권력은 국민으로부터 나온다.",
    "모든 국민은 법 앞에 평등하다.",
    "모든 국민은 거주·이전의 자유를 가진다.",
    "모든 국민은 직업선택의 자유를 가진다.",
    "모든 국민은 언론·출판의 자유와 집회·결사의 자유를 가진다.",
    "모든 국민은 인간으로서의 존엄과 가치를 가지며, 행복을 추구할 권리를 가진다.",
    "국가는 전통문화의 계승·발전과 민족문화의 창달에 노력하여야 한다.",
    "오늘은 날씨가 맑고 바람이 시원합니다.",
    "한국어 문장을 토큰으로 나누는 작은 토크나이저를 학습합니다.",
]


def korean_sentences(n: int = 30) -> list[str]:
    """About n Korean sentences: lines of the shared corpus, cut at sentence ends."""
    sentences: list[str] = []
    if CORPUS.exists():
        for line in CORPUS.read_text(encoding="utf-8").splitlines():
            text = json.loads(line)["text"]
            for part in text.replace(". ", ".\n").splitlines():
                part = part.strip()
                if 8 <= len(part) <= 200 and any("\uac00" <= ch <= "\ud7a3" for ch in part):
                    sentences.append(part)
                if len(sentences) >= n:
                    break
            if len(sentences) >= n:
                break
    if len(sentences) < n:
        sentences += FALLBACK_SENTENCES
    # The check text's words should be in the training data so it gets merges.
    sentences.append("대한민국 헌법 제1조 ① 대한민국은 민주공화국이다.")
    return sentences


def train_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(korean_sentences(), trainer=trainer)
    assert tok.get_vocab_size() <= vocab_size, tok.get_vocab_size()
    return tok


def make_config(tie: bool, dtype: str):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tie,
        dtype=dtype,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )


@torch.no_grad()
def reinit(model) -> None:
    """Large weights so the logits have a real spread (std 0.2 linears/embeddings)."""
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.uniform_(0.5, 1.5)
        elif name.endswith(".bias"):
            p.normal_(0.0, 0.1)
        else:
            p.normal_(0.0, 0.2)


def patch_config_json(folder: Path, dtype: str) -> None:
    """Adds the keys older transformers (and most Hub Qwen2 checkpoints) write, next to the
    transformers 5 ones: top-level `rope_theta`, `torch_dtype`, `rope_scaling: null`."""
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    cfg["rope_theta"] = 10000.0
    cfg["torch_dtype"] = dtype
    cfg["dtype"] = dtype
    cfg.setdefault("rope_scaling", None)
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def f32(x: float) -> float:
    """Shortest decimal that round-trips to the same float32."""
    return float(f"{x:.9g}")


def nested(t: torch.Tensor):
    return [[[f32(v) for v in row] for row in seq] for seq in t.tolist()]


def load_f32(folder: Path):
    from transformers import Qwen2ForCausalLM

    model = Qwen2ForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    return model.float().eval()


@torch.no_grad()
def logits_of(model, ids) -> torch.Tensor:
    return model(input_ids=torch.tensor(ids), use_cache=False).logits.float()


@torch.no_grad()
def write_expectations(folder: Path, tokenizer) -> torch.Tensor:
    """expected_logits.json and expected_generation.json from the saved folder, in float32."""
    model = load_f32(folder)
    logits = logits_of(model, INPUT_IDS)
    check_ids = tokenizer.encode(CHECK_TEXT, add_special_tokens=False).ids
    (folder / "expected_logits.json").write_text(json.dumps({
        "input_ids": INPUT_IDS,
        "logits": nested(logits),
        "tokenizer_check": {"text": CHECK_TEXT, "ids": check_ids},
    }))

    prompt = torch.tensor([INPUT_IDS[0][:5]])
    # Explicit all-ones mask: the prompt starts with id 0, which must not be read as padding.
    out = model.generate(
        prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=8, min_new_tokens=8,
        eos_token_id=None, pad_token_id=0, output_scores=True, return_dict_in_generate=True,
    )
    sequence = out.sequences[0].tolist()
    scores = torch.stack([s[0] for s in out.scores]).float()  # [8, V] logits of each new token
    top2 = scores.topk(2, dim=-1).values
    # Cross-check: KV-cache greedy == full recompute greedy.
    full = logits_of(model, [sequence[:-1]])[0, 4:]
    assert torch.equal(full.argmax(-1), torch.tensor(sequence[5:])), "generate disagrees with full forward"
    (folder / "expected_generation.json").write_text(json.dumps({
        "prompt_ids": sequence[:5],
        "max_new_tokens": 8,
        "new_ids": sequence[5:],
        "sequence": sequence,
        "step_logits": [[f32(v) for v in row] for row in scores.tolist()],
        "min_top1_top2_margin": f32((top2[:, 0] - top2[:, 1]).min().item()),
    }, indent=1))
    return logits


def describe(name: str, logits: torch.Tensor) -> None:
    print(f"{name}: logits max|x|={logits.abs().max().item():.4f} std={logits.std().item():.4f} "
          f"per-position std mean={logits.std(-1).mean().item():.4f}")


def make_model(folder: Path, seed: int, tie: bool, bf16: bool, tokenizer) -> torch.Tensor:
    from transformers import Qwen2ForCausalLM

    dtype = "bfloat16" if bf16 else "float32"
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(make_config(tie, dtype)).float()
    reinit(model)
    if bf16:
        model = model.to(torch.bfloat16)
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(folder, safe_serialization=True)
    patch_config_json(folder, dtype)
    tokenizer.save(str(folder / "tokenizer.json"))
    logits = write_expectations(folder, tokenizer)
    describe(folder.name, logits)
    return logits


def make_adapter(base_dir: Path, folder: Path, seed: int, base_logits: torch.Tensor) -> None:
    from peft import LoraConfig, get_peft_model

    base = load_f32(base_dir)
    config = LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    )
    torch.manual_seed(seed)
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.2)  # PEFT starts B at zero; make the update non-zero
    model.eval()
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(folder)
    # The base path PEFT records is this machine's; keep a repo-relative one in the fixture.
    cfg_path = folder / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = "worker/tests/fixtures/tiny-qwen2"
    cfg["target_modules"] = sorted(cfg["target_modules"])  # PEFT writes a set, in hash order
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    readme = folder / "README.md"  # PEFT's model card template: not needed
    if readme.exists():
        readme.unlink()

    # Expected logits from a fresh load of what was saved.
    from peft import PeftModel

    fresh = PeftModel.from_pretrained(load_f32(base_dir), folder).eval()
    logits = logits_of(fresh, INPUT_IDS)
    (folder / "expected_logits.json").write_text(json.dumps({"input_ids": INPUT_IDS, "logits": nested(logits)}))
    describe(folder.name, logits)
    print(f"{folder.name}: max|adapter - base| = {(logits - base_logits).abs().max().item():.4f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "worker" / "tests" / "fixtures")
    args = ap.parse_args()
    torch.set_num_threads(2)

    tokenizer = train_tokenizer(VOCAB)
    print(f"tokenizer: vocab {tokenizer.get_vocab_size()}, "
          f"{CHECK_TEXT!r} -> {tokenizer.encode(CHECK_TEXT, add_special_tokens=False).ids}")

    base_logits = make_model(args.out / "tiny-qwen2", seed=1234, tie=False, bf16=False, tokenizer=tokenizer)
    make_model(args.out / "tiny-qwen2-bf16", seed=5678, tie=True, bf16=True, tokenizer=tokenizer)
    make_adapter(args.out / "tiny-qwen2", args.out / "peft-reference-adapter", seed=4321, base_logits=base_logits)

    for folder in ["tiny-qwen2", "tiny-qwen2-bf16", "peft-reference-adapter"]:
        for f in sorted((args.out / folder).iterdir()):
            print(f"  {folder}/{f.name}: {f.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
