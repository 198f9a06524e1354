"""2:4 semi-structured inference vs dense, as ratios measured in the same invocation.

    python benchmarks/sparse_speed.py [--hidden 4096] [--intermediate 14336] [--layers 4]
                                      [--batches 1,8,32] [--seq 512] [--iters 20]

A Llama built from its config (random weights, fp16, CUDA) is pruned 2:4 by magnitude in every
decoder linear; the same model is timed dense and with its linears converted by
``torch.sparse.to_sparse_semi_structured`` (``ftlab.sparsity.semi``). Printed per batch size:
median forward latency of each, tokens/s of each, and the speed-up (dense / 2:4 latency).
Needs a CUDA GPU of compute capability >= 8.0; elsewhere it prints one line why and exits 0.
"""

from __future__ import annotations

import argparse
import copy
import json

import torch


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--intermediate", type=int, default=14336)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--iters", type=int, default=20)
    args = p.parse_args(argv)

    from ftlab.sparsity.semi import compare_speed, to_semi_structured_, unsupported_reason

    reason = unsupported_reason()
    if reason:
        print(f"sparse_speed: cannot measure: {reason}")
        return
    from transformers import LlamaConfig, LlamaForCausalLM

    from ftlab.sparsity.masks import nm_mask

    config = LlamaConfig(vocab_size=32000, hidden_size=args.hidden, intermediate_size=args.intermediate,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads,
                         num_key_value_heads=args.heads, max_position_embeddings=max(2048, args.seq))
    torch.manual_seed(0)
    dense = LlamaForCausalLM(config).half().cuda().eval()
    with torch.no_grad():
        for name, module in dense.named_modules():
            if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}":
                module.weight.mul_(nm_mask(module.weight.abs().float(), 2, 4).to(module.weight.dtype))
    sparse = copy.deepcopy(dense)
    converted = to_semi_structured_(sparse)
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; "
          f"{len(converted['converted'])} linears converted, {len(converted['skipped'])} left dense")
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        r = compare_speed(dense, sparse, batch, args.seq, config.vocab_size, args.iters)
        rows.append(r)
        print(f"batch {batch:>3} x seq {args.seq}: dense {r['dense_latency_ms']:8.2f} ms "
              f"({r['dense_tokens_per_s']:9.0f} tok/s)  2:4 {r['sparse_latency_ms']:8.2f} ms "
              f"({r['sparse_tokens_per_s']:9.0f} tok/s)  speed-up {r['speedup']:.3f}x")
    print("json:", json.dumps(rows))


if __name__ == "__main__":
    main()
