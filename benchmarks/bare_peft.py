"""A bare PyTorch + peft fine-tuning script: the baseline of ``benchmarks/overhead.py``'s end-to-end row.

What a researcher would write without ftlab: tokenize (prompt, answer) pairs with the byte-level
tokenizer, mask the prompt in the labels, batch ``batch_size`` examples padded to the batch's
longest, LoRA through peft, AdamW, a constant learning rate, gradient clipping, the loss read
every ``log_every`` steps. It imports only torch, transformers and peft, so its start-up is the
floor a framework's start-up is compared with.

    python benchmarks/bare_peft.py SPEC.json      (SPEC: written by benchmarks/overhead.py)
"""

from __future__ import annotations

import json
import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, ByT5Tokenizer

IGNORE_INDEX = -100


def encode(tok, prompt: str, answer: str, max_length: int) -> tuple[list[int], list[int]]:
    p = tok.encode(prompt, add_special_tokens=False)
    a = tok.encode(answer, add_special_tokens=False) + [tok.eos_token_id]
    a = a[:max_length - 1] if len(a) >= max_length else a
    p = p[-(max_length - len(a)):] if len(p) + len(a) > max_length else p
    return p + a, [IGNORE_INDEX] * len(p) + a


def pad_batch(batch: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        ids[i, :len(x)], labels[i, :len(y)], mask[i, :len(x)] = torch.tensor(x), torch.tensor(y), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def main(spec_path: str) -> None:
    spec = json.loads(open(spec_path).read())
    torch.manual_seed(spec["seed"])
    tok = ByT5Tokenizer(extra_ids=0)
    config = dict(spec["model_config"])
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(config.pop("model_type"), **config))
    lora = spec["lora"]
    model = get_peft_model(model, LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                                             target_modules=lora["target_modules"], task_type="CAUSAL_LM"))
    model.train()
    data = [encode(tok, p, a, spec["max_length"]) for p, a in spec["examples"]]
    bs = spec["batch_size"]
    params = [p for p in model.parameters() if p.requires_grad]
    o = spec["optim"]
    opt = torch.optim.AdamW(params, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"], weight_decay=o["weight_decay"])
    steps = 0
    for start in range(0, len(data) - bs + 1, bs):
        loss = model(**pad_batch(data[start:start + bs], tok.pad_token_id)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, o["clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps += 1
        if steps % spec["log_every"] == 0:
            print(f"step {steps} loss {loss.item():.4f}", flush=True)
    print(f"trained {steps} steps on {steps * bs} examples")


if __name__ == "__main__":
    main(sys.argv[1])
