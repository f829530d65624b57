"""The shards PyTorch's DistributedSampler gives each rank, for the test of
llm_core's BatchSampler::distributed (llm_core/tests/loaders.rs).

    ~/.cache/llm-rs/bench-venv/bin/python scripts/reference/ddp_sampler_oracle.py

writes llm_core/tests/data/ddp_sampler_oracle.json: for each case (dataset
length, world size, seed, epoch, shuffle), every rank's indices, and the
batches a DataLoader(batch_size, drop_last) over that sampler yields.
"""
import json
import pathlib

import torch
from torch.utils.data import DataLoader, DistributedSampler

cases = []
for n, world, seed, epoch, shuffle, batch_size, drop_last in [
    (10, 2, 0, 0, True, 2, False),
    (10, 3, 0, 1, True, 2, True),
    (7, 4, 123, 0, True, 1, False),
    (7, 4, 123, 5, False, 3, False),
    (168, 2, 123, 0, True, 2, True),
    (168, 2, 123, 1, True, 2, True),
    (5, 8, 42, 2, True, 2, False),
    (1000, 3, 7, 3, True, 8, True),
]:
    dataset = list(range(n))
    ranks = []
    for rank in range(world):
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
        sampler.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last)
        ranks.append({"indices": list(iter(sampler)), "batches": [b.tolist() for b in loader]})
    cases.append({"len": n, "world_size": world, "seed": seed, "epoch": epoch, "shuffle": shuffle,
                  "batch_size": batch_size, "drop_last": drop_last, "ranks": ranks})

out = pathlib.Path(__file__).resolve().parents[2] / "llm_core/tests/data/ddp_sampler_oracle.json"
out.write_text(json.dumps({"torch": torch.__version__, "cases": cases}, separators=(",", ":")) + "\n")
print(f"{out}: {len(cases)} cases (torch {torch.__version__})")
