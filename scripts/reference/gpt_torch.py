"""The book's GPT and training loop in plain PyTorch: the reference that llm_core
is checked and benchmarked against on the same machine, libtorch and thread count.

Written for this project after the book's chapter 4/5 and appendix D code: the
same modules, created in the same order (so `torch.manual_seed` gives the same
weights), the same loader draws and the same training loop.

    python scripts/reference/gpt_torch.py figures   # seeded figures of notebook ch05
    python scripts/reference/gpt_torch.py bench     # tokens/s of one epoch of notebook ch05
    python scripts/reference/gpt_torch.py train-oracle --out llm_core/tests/data/train_oracle.json
    python scripts/reference/gpt_torch.py instruct-oracle --out llm_core/tests/data/instruct_oracle.json

Needs a full `torch==2.13.0` (the benchmark venv of scripts/bench.sh) and
tiktoken. Reads the-verdict.txt, instruction-data.json and GPT-2's BPE files from $LLM_DATA_DIR
(default ../shared/data).
"""

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench_tiktoken import default_data_dir, gpt2_encoding  # noqa: E402

GPT_CONFIG_124M = dict(
    vocab_size=50257, context_length=256, emb_dim=768, n_heads=12, n_layers=12,
    drop_rate=0.1, qkv_bias=False,
)


class MultiHeadAttention(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        assert d_out % num_heads == 0
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x):
        b, n, _ = x.shape
        split = lambda t: t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        q, k, v = split(self.W_query(x)), split(self.W_key(x)), split(self.W_value(x))
        scores = q @ k.transpose(2, 3)
        scores.masked_fill_(self.mask.bool()[:n, :n], -torch.inf)
        weights = torch.softmax(scores / k.shape[-1] ** 0.5, dim=-1)
        weights = self.dropout(weights)
        context = (weights @ v).transpose(1, 2).contiguous().view(b, n, self.d_out)
        return self.out_proj(context)


class LayerNorm(nn.Module):
    def __init__(self, emb_dim):
        super().__init__()
        self.eps = 1e-5
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return self.scale * ((x - mean) / torch.sqrt(var + self.eps)) + self.shift


class GELU(nn.Module):
    def forward(self, x):
        return 0.5 * x * (1 + torch.tanh(torch.sqrt(torch.tensor(2.0 / torch.pi)) * (x + 0.044715 * torch.pow(x, 3))))


class FeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["emb_dim"]
        self.layers = nn.Sequential(nn.Linear(d, 4 * d), GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        return self.layers(x)


class TransformerBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.att = MultiHeadAttention(cfg["emb_dim"], cfg["emb_dim"], cfg["context_length"],
                                      cfg["drop_rate"], cfg["n_heads"], cfg["qkv_bias"])
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg["emb_dim"])
        self.norm2 = LayerNorm(cfg["emb_dim"])
        self.drop_shortcut = nn.Dropout(cfg["drop_rate"])

    def forward(self, x):
        x = x + self.drop_shortcut(self.att(self.norm1(x)))
        return x + self.drop_shortcut(self.ff(self.norm2(x)))


class GPTModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = LayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)

    def forward(self, in_idx):
        n = in_idx.shape[1]
        x = self.tok_emb(in_idx) + self.pos_emb(torch.arange(n, device=in_idx.device))
        x = self.trf_blocks(self.drop_emb(x))
        return self.out_head(self.final_norm(x))


class GPTDatasetV1(Dataset):
    def __init__(self, ids, max_length, stride):
        self.inputs = [torch.tensor(ids[i:i + max_length]) for i in range(0, len(ids) - max_length, stride)]
        self.targets = [torch.tensor(ids[i + 1:i + max_length + 1]) for i in range(0, len(ids) - max_length, stride)]

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, i):
        return self.inputs[i], self.targets[i]


def make_loader(text, tokenizer, batch_size, max_length, stride, shuffle, drop_last):
    ids = tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    return DataLoader(GPTDatasetV1(ids, max_length, stride), batch_size=batch_size,
                      shuffle=shuffle, drop_last=drop_last, num_workers=0)


def calc_loss_batch(input_batch, target_batch, model, device):
    logits = model(input_batch.to(device))
    return nn.functional.cross_entropy(logits.flatten(0, 1), target_batch.to(device).flatten())


def calc_loss_loader(loader, model, device, num_batches=None):
    if len(loader) == 0:
        return float("nan")
    num_batches = len(loader) if num_batches is None else min(num_batches, len(loader))
    total = 0.0
    for i, (x, y) in enumerate(loader):
        if i >= num_batches:
            break
        total += calc_loss_batch(x, y, model, device).item()
    return total / num_batches


def evaluate_model(model, train_loader, val_loader, device, eval_iter):
    model.eval()
    with torch.no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, eval_iter)
        val_loss = calc_loss_loader(val_loader, model, device, eval_iter)
    model.train()
    return train_loss, val_loss


def greedy_sample(model, tokenizer, device, start_context, max_new_tokens=50):
    model.eval()
    ctx = model.pos_emb.weight.shape[0]
    idx = torch.tensor(tokenizer.encode(start_context)).unsqueeze(0).to(device)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(idx[:, -ctx:])[:, -1, :]
            idx = torch.cat([idx, logits.argmax(dim=-1, keepdim=True)], dim=1)
    model.train()
    return tokenizer.decode(idx.squeeze(0).tolist()).replace("\n", " ")


def train_model_simple(model, train_loader, val_loader, optimizer, device, num_epochs,
                       eval_freq, eval_iter, start_context, tokenizer, log=print):
    history = dict(train_losses=[], val_losses=[], tokens_seen=[], samples=[])
    tokens_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()
            optimizer.step()
            tokens_seen += input_batch.numel()
            global_step += 1
            if global_step % eval_freq == 0:
                tr, va = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                history["train_losses"].append(tr)
                history["val_losses"].append(va)
                history["tokens_seen"].append(tokens_seen)
                log(f"Ep {epoch + 1} (Step {global_step:06d}): Train loss {tr:.3f}, Val loss {va:.3f}")
        sample = greedy_sample(model, tokenizer, device, start_context)
        history["samples"].append(sample)
        log(sample)
    return history


def train_model(model, train_loader, val_loader, optimizer, device, n_epochs, eval_freq,
                eval_iter, start_context, tokenizer, warmup_steps, initial_lr=3e-05,
                min_lr=1e-6, sample=True, log=print):
    """Appendix D: linear warm-up, cosine decay, gradient clipping after warm-up
    (`global_step > warmup_steps`, as printed in the book)."""
    history = dict(train_losses=[], val_losses=[], tokens_seen=[], lrs=[], samples=[])
    tokens_seen, global_step = 0, -1
    peak_lr = optimizer.param_groups[0]["lr"]
    total_steps = len(train_loader) * n_epochs
    lr_increment = (peak_lr - initial_lr) / warmup_steps
    for epoch in range(n_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            global_step += 1
            if global_step < warmup_steps:
                lr = initial_lr + global_step * lr_increment
            else:
                progress = (global_step - warmup_steps) / (total_steps - warmup_steps)
                lr = min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
            for group in optimizer.param_groups:
                group["lr"] = lr
            history["lrs"].append(lr)
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()
            if global_step > warmup_steps:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            optimizer.step()
            tokens_seen += input_batch.numel()
            if global_step % eval_freq == 0:
                tr, va = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                history["train_losses"].append(tr)
                history["val_losses"].append(va)
                history["tokens_seen"].append(tokens_seen)
                log(f"Ep {epoch + 1} (Step {global_step:06d}): Train loss {tr:.3f}, Val loss {va:.3f}")
        if sample:
            history["samples"].append(greedy_sample(model, tokenizer, device, start_context))
    return history


def verdict_loaders(tokenizer, cfg, batch_size=2):
    text = (default_data_dir() / "the-verdict.txt").read_text(encoding="utf-8")
    split = int(0.9 * len(text))
    ctx = cfg["context_length"]
    torch.manual_seed(123)
    train = make_loader(text[:split], tokenizer, batch_size, ctx, ctx, True, True)
    val = make_loader(text[split:], tokenizer, batch_size, ctx, ctx, False, False)
    return train, val


def figures(args):
    """Notebook ch05's seeded run: initial losses and the whole training log."""
    tokenizer = gpt2_encoding(default_data_dir())
    cfg = dict(GPT_CONFIG_124M)
    torch.manual_seed(123)
    model = GPTModel(cfg)
    model.eval()
    train_loader, val_loader = verdict_loaders(tokenizer, cfg)
    with torch.no_grad():
        tr = calc_loss_loader(train_loader, model, "cpu")
        va = calc_loss_loader(val_loader, model, "cpu")
    out = dict(initial_train_loss=tr, initial_val_loss=va)
    print(f"Training loss: {tr}\nValidation loss: {va}", flush=True)
    torch.manual_seed(123)
    model = GPTModel(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0004, weight_decay=0.1)
    hist = train_model_simple(model, train_loader, val_loader, optimizer, "cpu", args.epochs,
                              5, 5, "Every effort moves you", tokenizer,
                              log=lambda s: print(s, flush=True))
    out.update(hist)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


def bench(args):
    """Tokens/s of one epoch of notebook ch05's training loop (no evaluation, no sampling)."""
    tokenizer = gpt2_encoding(default_data_dir())
    cfg = dict(GPT_CONFIG_124M)
    train_loader, _ = verdict_loaders(tokenizer, cfg)
    torch.manual_seed(123)
    model = GPTModel(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0004, weight_decay=0.1)
    model.train()
    tokens, t0 = 0, None
    phases = [0.0] * 4  # zero_grad, forward+loss, backward, step
    for step, (x, y) in enumerate(train_loader):
        if step == 1:  # the first step warms up the allocator; time the rest
            t0, tokens, phases = time.perf_counter(), 0, [0.0] * 4
        t = [time.perf_counter()]

        def lap(i):
            now = time.perf_counter()
            phases[i] += now - t[0]
            t[0] = now
        optimizer.zero_grad()
        lap(0)
        loss = calc_loss_batch(x, y, model, "cpu")
        lap(1)
        loss.backward()
        lap(2)
        optimizer.step()
        lap(3)
        tokens += x.numel()
    elapsed = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    print(f"torch_threads {torch.get_num_threads()}")
    print(f"torch_params {n_params}")
    print(f"torch_train_tokens_per_s {tokens / elapsed:.1f}")
    for name, sec in zip(["zero_grad", "forward", "backward", "step"], phases):
        print(f"torch_{name}_s {sec:.2f}")


def matmul_peak(args):
    """Peak float32 matmul GFLOP/s on this machine (the MFU denominator)."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    reps, t0 = 10, time.perf_counter()
    for _ in range(reps):
        a @ b
    elapsed = time.perf_counter() - t0
    print(f"matmul_gflops {2 * n ** 3 * reps / elapsed / 1e9:.1f}")


def train_oracle(args):
    """A tiny seeded appendix-D run whose every figure llm_core's test
    `training_matches_pytorch` must reproduce (tests/data/train_oracle.json)."""
    cfg = dict(vocab_size=50, context_length=8, emb_dim=32, n_heads=2, n_layers=2,
               drop_rate=0.1, qkv_bias=False)
    torch.manual_seed(0)
    train_ids = torch.randint(0, 50, (300,)).tolist()
    val_ids = torch.randint(0, 50, (60,)).tolist()
    torch.manual_seed(123)
    train_loader = DataLoader(GPTDatasetV1(train_ids, 8, 4), batch_size=4, shuffle=True, drop_last=True)
    val_loader = DataLoader(GPTDatasetV1(val_ids, 8, 4), batch_size=4, shuffle=False, drop_last=False)
    model = GPTModel(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.1)
    n_epochs = 3
    warmup_steps = int(0.2 * len(train_loader) * n_epochs)
    hist = train_model(model, train_loader, val_loader, optimizer, "cpu", n_epochs, 3, 2, None, None,
                       warmup_steps, initial_lr=1e-4, min_lr=1e-5, sample=False, log=lambda s: None)
    out = dict(
        about="scripts/reference/gpt_torch.py train-oracle: torch " + torch.__version__,
        config=cfg, train_ids=train_ids, val_ids=val_ids, max_length=8, stride=4, batch_size=4,
        n_epochs=n_epochs, warmup_steps=warmup_steps, peak_lr=5e-3, initial_lr=1e-4, min_lr=1e-5,
        weight_decay=0.1, eval_freq=3, eval_iter=2,
        train_losses=hist["train_losses"], val_losses=hist["val_losses"],
        tokens_seen=hist["tokens_seen"], lrs=hist["lrs"],
        param_sums={n: p.detach().double().sum().item() for n, p in model.named_parameters()},
        next_rand=torch.rand(3).tolist(),
    )
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


# --- chapter 7: instruction data, the padding collate function, fine-tuning ---

def format_input(entry, style="alpaca"):
    if style == "phi3":
        return f"<|user|>\n{entry['instruction']}" + (f"\n{entry['input']}" if entry["input"] else "")
    text = ("Below is an instruction that describes a task. "
            "Write a response that appropriately completes the request."
            f"\n\n### Instruction:\n{entry['instruction']}")
    return text + (f"\n\n### Input:\n{entry['input']}" if entry["input"] else "")


def format_response(entry, style="alpaca"):
    if style == "phi3":
        return f"\n<|assistant|>:\n{entry['output']}"
    return f"\n\n### Response:\n{entry['output']}"


class InstructionDataset(Dataset):
    """Items are (instruction length, token ids), for both collate variants."""

    def __init__(self, data, tokenizer, style="alpaca"):
        self.items = []
        for entry in data:
            prompt = format_input(entry, style)
            self.items.append((len(tokenizer.encode(prompt)),
                               tokenizer.encode(prompt + format_response(entry, style))))

    def __getitem__(self, i):
        return self.items[i]

    def __len__(self):
        return len(self.items)


def collate(batch, pad_token_id=50256, ignore_index=-100, allowed_max_length=None,
            mask_instructions=False):
    batch_max_length = max(len(item) + 1 for _, item in batch)
    inputs_lst, targets_lst = [], []
    for instruction_length, item in batch:
        padded = item + [pad_token_id] * (batch_max_length - len(item))
        inputs = torch.tensor(padded[:-1])
        targets = torch.tensor(padded[1:])
        indices = torch.nonzero(targets == pad_token_id).squeeze()
        if indices.numel() > 1:
            targets[indices[1:]] = ignore_index
        if mask_instructions:
            targets[:instruction_length - 1] = ignore_index
        if allowed_max_length is not None:
            inputs, targets = inputs[:allowed_max_length], targets[:allowed_max_length]
        inputs_lst.append(inputs)
        targets_lst.append(targets)
    return torch.stack(inputs_lst), torch.stack(targets_lst)


def instruct_oracle(args):
    """Chapter 7's loaders and a tiny fine-tuning run, seeded as the book; the
    figures llm_core's tests/instruct.rs must reproduce."""
    from functools import partial
    with open(os.path.join(default_data_dir(), "instruction-data.json")) as f:
        data = json.load(f)
    train_portion, test_portion = int(len(data) * 0.85), int(len(data) * 0.1)
    train_data = data[:train_portion]
    test_data = data[train_portion:train_portion + test_portion]
    val_data = data[train_portion + test_portion:]
    tokenizer = gpt2_encoding(default_data_dir())

    def epoch_figures(dataset, shuffle, drop_last, **kw):
        torch.manual_seed(123)
        loader = DataLoader(dataset, batch_size=8, shuffle=shuffle, drop_last=drop_last,
                            collate_fn=partial(collate, **kw))
        return [dict(shape=list(x.shape), input_sum=int(x.sum()), target_sum=int(y.sum()),
                     ignored=int((y == -100).sum())) for x, y in loader]

    train_ds = InstructionDataset(train_data, tokenizer)
    out = dict(
        about="scripts/reference/gpt_torch.py instruct-oracle: torch " + torch.__version__,
        sizes=[len(train_data), len(val_data), len(test_data)],
        first_train_tokens=train_ds[0][1], first_train_instruction_length=train_ds[0][0],
        train_epoch=epoch_figures(train_ds, True, True, allowed_max_length=1024),
        val_epoch=epoch_figures(InstructionDataset(val_data, tokenizer), False, False,
                                allowed_max_length=1024),
        train_epoch_masked=epoch_figures(train_ds, True, True, allowed_max_length=1024,
                                         mask_instructions=True),
        train_epoch_truncated=epoch_figures(train_ds, True, True, allowed_max_length=64),
        train_epoch_phi3=epoch_figures(InstructionDataset(train_data, tokenizer, "phi3"), True, True),
    )
    # A tiny fine-tuning run: the book's calls in the book's order.
    cfg = dict(vocab_size=50257, context_length=128, emb_dim=32, n_heads=2, n_layers=2,
               drop_rate=0.0, qkv_bias=False)
    torch.manual_seed(123)
    model = GPTModel(cfg)
    c = partial(collate, allowed_max_length=128)
    torch.manual_seed(123)
    train_loader = DataLoader(InstructionDataset(train_data[:40], tokenizer), batch_size=8,
                              shuffle=True, drop_last=True, collate_fn=c)
    val_loader = DataLoader(InstructionDataset(val_data[:16], tokenizer), batch_size=8,
                            shuffle=False, drop_last=False, collate_fn=c)
    with torch.no_grad():
        initial = [calc_loss_loader(train_loader, model, "cpu", 5),
                   calc_loss_loader(val_loader, model, "cpu", 5)]
    torch.manual_seed(123)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.1)
    hist = train_model_simple(model, train_loader, val_loader, optimizer, "cpu", 2, 2, 2,
                              format_input(val_data[0]), tokenizer, log=lambda s: None)
    out["tiny_run"] = dict(config=cfg, train_entries=40, val_entries=16, lr=5e-4,
                           weight_decay=0.1, num_epochs=2, eval_freq=2, eval_iter=2,
                           allowed_max_length=128, initial_losses=initial, **hist)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("figures")
    f.add_argument("--epochs", type=int, default=10)
    f.add_argument("--out")
    sub.add_parser("bench")
    sub.add_parser("matmul")
    o = sub.add_parser("train-oracle")
    o.add_argument("--out", required=True)
    o = sub.add_parser("instruct-oracle")
    o.add_argument("--out", required=True)
    args = p.parse_args()
    {"figures": figures, "bench": bench, "matmul": matmul_peak, "train-oracle": train_oracle,
     "instruct-oracle": instruct_oracle}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
