"""The book's own code, run as the reference that llm_core is checked and benchmarked
against on the same machine, libtorch and thread count.

Nothing of the book is re-typed here: the model, the data loader, the losses and the
training loops are imported from the book's package, `llms-from-scratch` (pinned in
environment.yml; the benchmark venv of scripts/bench_venv.sh has it). This file only
sets up the runs and writes down what they print and return. The exceptions are code
the package lacks: two exercises of chapter 7 and the DPO notebook's functions, copied
in their own sections below.

    python scripts/reference/gpt_torch.py figures   # seeded figures of notebook ch05
    python scripts/reference/gpt_torch.py appendix-d  # notebook ch05's appendix-D run
    python scripts/reference/gpt_torch.py bench     # tokens/s of one epoch of notebook ch05
    python scripts/reference/gpt_torch.py train-oracle --out llm_core/tests/data/train_oracle.json
    python scripts/reference/gpt_torch.py instruct-oracle --out llm_core/tests/data/instruct_oracle.json
    python scripts/reference/gpt_torch.py lora-oracle --out llm_core/tests/data/lora_oracle.json
    python scripts/reference/gpt_torch.py dpo-oracle   # --out llm_core/tests/data/dpo_oracle.json
    python scripts/reference/gpt_torch.py bench-lora --mode lora   # or full, last_block
    python scripts/reference/gpt_torch.py bench-speed --mode orig   # or opt, opt-nocompile

Reads the-verdict.txt, instruction-data.json, instruction-data-with-preference.json and
GPT-2's BPE files from $LLM_DATA_DIR (default ../shared/data); nothing is downloaded.
"""

import argparse
import contextlib
import io
import json
import os
import resource
import sys
import time
from functools import partial

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench_tiktoken import default_data_dir, gpt2_encoding  # noqa: E402

# tiktoken keeps the "gpt2" encoding once loaded: load it offline before the book's
# code asks for it (create_dataloader_v1 calls tiktoken.get_encoding("gpt2")).
TOKENIZER = gpt2_encoding(default_data_dir())

from llms_from_scratch.appendix_d import train_model  # noqa: E402
from llms_from_scratch.appendix_e import replace_linear_with_lora  # noqa: E402
from llms_from_scratch.ch02 import GPTDatasetV1, create_dataloader_v1  # noqa: E402
from llms_from_scratch.ch04 import GPTModel, GPTModelFast  # noqa: E402
from llms_from_scratch.ch05 import calc_loss_batch, calc_loss_loader, train_model_simple  # noqa: E402
from llms_from_scratch.ch06 import calc_loss_batch as calc_loss_batch_classifier  # noqa: E402
from llms_from_scratch.ch06 import train_classifier_simple  # noqa: E402
from llms_from_scratch.ch07 import InstructionDataset, custom_collate_fn, format_input  # noqa: E402

GPT_CONFIG_124M = dict(
    vocab_size=50257, context_length=256, emb_dim=768, n_heads=12, n_layers=12,
    drop_rate=0.1, qkv_bias=False,
)


def quietly(f, *args, **kwargs):
    """Run one of the book's loops, which print; return its result and the printed
    lines that are not evaluations (the samples of generate_and_print_sample)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = f(*args, **kwargs)
    samples = [line for line in out.getvalue().splitlines() if line and not line.startswith("Ep ")]
    return result, samples


def verdict_loaders(cfg, batch_size=2):
    """Chapter 5's loaders (§5.1.3), seeded as the book."""
    text = (default_data_dir() / "the-verdict.txt").read_text(encoding="utf-8")
    split = int(0.9 * len(text))
    ctx = cfg["context_length"]
    torch.manual_seed(123)
    train = create_dataloader_v1(text[:split], batch_size=batch_size, max_length=ctx, stride=ctx,
                                 drop_last=True, shuffle=True, num_workers=0)
    val = create_dataloader_v1(text[split:], batch_size=batch_size, max_length=ctx, stride=ctx,
                               drop_last=False, shuffle=False, num_workers=0)
    return train, val


def figures(args):
    """Notebook ch05's seeded run: initial losses and the whole training log."""
    cfg = dict(GPT_CONFIG_124M)
    torch.manual_seed(123)
    model = GPTModel(cfg)
    model.eval()
    train_loader, val_loader = verdict_loaders(cfg)
    with torch.no_grad():
        tr = calc_loss_loader(train_loader, model, "cpu")
        va = calc_loss_loader(val_loader, model, "cpu")
    out = dict(initial_train_loss=tr, initial_val_loss=va)
    print(f"Training loss: {tr}\nValidation loss: {va}", flush=True)
    torch.manual_seed(123)
    model = GPTModel(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0004, weight_decay=0.1)
    train_losses, val_losses, tokens_seen = train_model_simple(
        model, train_loader, val_loader, optimizer, "cpu", num_epochs=args.epochs,
        eval_freq=5, eval_iter=5, start_context="Every effort moves you", tokenizer=TOKENIZER)
    out.update(train_losses=train_losses, val_losses=val_losses, tokens_seen=tokens_seen)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


def appendix_d(args):
    """Notebook ch05's appendix-D run with the book's train_model: GPT-2 124M at context
    256 on The Verdict, 15 epochs, peak learning rate 0.001 (train_model reads it from the
    optimizer), initial and minimum 1e-5, 20 % warm-up, evaluation every 5 steps on one
    batch. Prints the book's lines; the notebook prints the same ones."""
    cfg = dict(GPT_CONFIG_124M)
    train_loader, val_loader = verdict_loaders(cfg)
    torch.manual_seed(123)
    model = GPTModel(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.peak_lr, weight_decay=0.1)
    total_steps = len(train_loader) * args.epochs
    warmup_steps = int(0.2 * total_steps)
    print(f"{total_steps} steps, {warmup_steps} of warm-up", flush=True)
    train_model(model, train_loader, val_loader, optimizer, "cpu", n_epochs=args.epochs,
                eval_freq=5, eval_iter=1, start_context="Every effort moves you",
                tokenizer=TOKENIZER, warmup_steps=warmup_steps, initial_lr=1e-5, min_lr=1e-5)


def bench(args):
    """Tokens/s of one epoch of notebook ch05's training loop (no evaluation, no sampling):
    the body of the book's train_model_simple, timed phase by phase."""
    cfg = dict(GPT_CONFIG_124M)
    train_loader, _ = verdict_loaders(cfg)
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


class IdsTokenizer:
    """Token ids 0..vocab_size as a tokenizer for the book's GPTDatasetV1 and
    generate_and_print_sample: `encode` of the corpus gives the ids themselves, of
    any other text (the start context) the first ids; `decode` writes the ids."""

    def __init__(self, ids):
        self.ids = ids

    def encode(self, text, allowed_special=None):
        return self.ids if text == "corpus" else [0, 1, 2]

    def decode(self, ids):
        return " ".join(map(str, ids))


def train_oracle(args):
    """A tiny seeded appendix-D run whose every figure llm_core's test
    `training_matches_pytorch` must reproduce (tests/data/train_oracle.json)."""
    cfg = dict(vocab_size=50, context_length=8, emb_dim=32, n_heads=2, n_layers=2,
               drop_rate=0.1, qkv_bias=False)
    torch.manual_seed(0)
    train_ids = torch.randint(0, 50, (300,)).tolist()
    val_ids = torch.randint(0, 50, (60,)).tolist()
    torch.manual_seed(123)
    train_loader = DataLoader(GPTDatasetV1("corpus", IdsTokenizer(train_ids), 8, 4), batch_size=4,
                              shuffle=True, drop_last=True)
    val_loader = DataLoader(GPTDatasetV1("corpus", IdsTokenizer(val_ids), 8, 4), batch_size=4,
                            shuffle=False, drop_last=False)
    model = GPTModel(cfg)
    # appendix D's train_model reads the peak learning rate from the optimizer
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.1)
    n_epochs = 3
    warmup_steps = int(0.2 * len(train_loader) * n_epochs)
    (train_losses, val_losses, tokens_seen, lrs), _ = quietly(
        train_model, model, train_loader, val_loader, optimizer, "cpu", n_epochs, 3, 2,
        "start", IdsTokenizer(train_ids), warmup_steps, initial_lr=1e-4, min_lr=1e-5)
    out = dict(
        about="scripts/reference/gpt_torch.py train-oracle: llms_from_scratch.appendix_d.train_model, torch "
        + torch.__version__,
        config=cfg, train_ids=train_ids, val_ids=val_ids, max_length=8, stride=4, batch_size=4,
        n_epochs=n_epochs, warmup_steps=warmup_steps, peak_lr=5e-3, initial_lr=1e-4, min_lr=1e-5,
        weight_decay=0.1, eval_freq=3, eval_iter=2,
        train_losses=train_losses, val_losses=val_losses, tokens_seen=tokens_seen, lrs=lrs,
        param_sums={n: p.detach().double().sum().item() for n, p in model.named_parameters()},
        next_rand=torch.rand(3).tolist(),
    )
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


# --- appendix E: LoRA ---

def lora_oracle(args):
    """A tiny seeded LoRA fine-tuning of a classifier, as appendix E does it (new head,
    everything frozen, every Linear replaced, chapter 6's train_classifier_simple), whose
    figures llm_core's test `lora_classifier_matches_pytorch` must reproduce
    (tests/data/lora_oracle.json).

    The package (1.0.19) scales the update by `alpha`; the book's repository today by
    `alpha / rank`, as llm_core does. Passing alpha / rank to the package gives the latter."""
    cfg = dict(vocab_size=50, context_length=8, emb_dim=32, n_heads=2, n_layers=2,
               drop_rate=0.1, qkv_bias=True)
    rank, alpha = 4, 8.0
    torch.manual_seed(0)
    train_x, train_y = torch.randint(0, 50, (24, 8)), torch.randint(0, 2, (24,))
    val_x, val_y = torch.randint(0, 50, (8, 8)), torch.randint(0, 2, (8,))
    torch.manual_seed(123)
    model = GPTModel(cfg)
    torch.manual_seed(123)
    model.out_head = torch.nn.Linear(cfg["emb_dim"], 2)
    trainable_before = sum(p.numel() for p in model.parameters() if p.requires_grad)
    for param in model.parameters():
        param.requires_grad = False
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()}
    replace_linear_with_lora(model, rank=rank, alpha=alpha / rank)
    trainable_lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lora_init = {n: p.detach().double().sum().item() for n, p in model.named_parameters() if ".lora." in n}
    train_loader = DataLoader(torch.utils.data.TensorDataset(train_x, train_y), batch_size=4,
                              shuffle=True, drop_last=True)
    val_loader = DataLoader(torch.utils.data.TensorDataset(val_x, val_y), batch_size=4,
                            shuffle=False, drop_last=False)
    torch.manual_seed(123)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.1)
    (train_losses, val_losses, train_accs, val_accs, examples_seen), _ = quietly(
        train_classifier_simple, model, train_loader, val_loader, optimizer, "cpu",
        num_epochs=3, eval_freq=2, eval_iter=2)
    assert all(torch.equal(p, frozen[n.replace(".linear.", ".")]) for n, p in model.named_parameters()
               if ".lora." not in n), "a frozen weight changed"
    out = dict(
        about="scripts/reference/gpt_torch.py lora-oracle: llms_from_scratch.appendix_e "
        "(alpha / rank passed as alpha) and ch06.train_classifier_simple, torch " + torch.__version__,
        config=cfg, rank=rank, alpha=alpha, lr=5e-3, weight_decay=0.1, batch_size=4,
        num_epochs=3, eval_freq=2, eval_iter=2,
        train_x=train_x.tolist(), train_y=train_y.tolist(), val_x=val_x.tolist(), val_y=val_y.tolist(),
        trainable_before=trainable_before, trainable_lora=trainable_lora,
        lora_init_sums=lora_init,
        train_losses=train_losses, val_losses=val_losses, train_accs=train_accs, val_accs=val_accs,
        examples_seen=examples_seen,
        lora_sums={n: p.detach().double().sum().item() for n, p in model.named_parameters() if ".lora." in n},
        next_rand=torch.rand(3).tolist(),
    )
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


def bench_lora(args):
    """examples/bench_lora.rs in the book's code: seconds per step and peak memory of
    fine-tuning the 124M classifier (batch 8, 120 tokens) with LoRA (rank 16, alpha 16,
    every Linear), with chapter 6's recipe (last block, final norm, head) or in full."""
    cfg = dict(GPT_CONFIG_124M, context_length=1024, drop_rate=0.0, qkv_bias=True)
    torch.manual_seed(123)
    model = GPTModel(cfg)
    torch.manual_seed(123)
    model.out_head = torch.nn.Linear(cfg["emb_dim"], 2)
    lr = 5e-5
    if args.mode == "last_block":
        for p in model.parameters():
            p.requires_grad = False
        for m in (model.out_head, model.trf_blocks[-1], model.final_norm):
            for p in m.parameters():
                p.requires_grad = True
    elif args.mode == "lora":
        for p in model.parameters():
            p.requires_grad = False
        replace_linear_with_lora(model, rank=16, alpha=16 / 16)  # alpha / rank, as llm_core
        lr = 8e-4
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    x, y = torch.randint(0, 50257, (8, 120)), torch.randint(0, 2, (8,))
    model.train()

    def step():
        optimizer.zero_grad()
        calc_loss_batch_classifier(x, y, model, "cpu").backward()
        optimizer.step()

    step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    per_step = (time.perf_counter() - t0) / args.steps
    state_mb = sum(t.numel() * t.element_size() for st in optimizer.state.values()
                   for t in st.values() if torch.is_tensor(t) and t.dim() > 0) / 2**20
    m = args.mode
    print(f"mode {m} (PyTorch): {trainable} trainable")
    print(f"torch_lora_{m}_trainable {trainable}")
    print(f"torch_lora_{m}_step_s {per_step:.4f}")
    print(f"torch_lora_{m}_epoch_s {per_step * 130:.1f}")
    print(f"torch_lora_{m}_optimizer_state_mb {state_mb:.1f}")
    print(f"torch_lora_{m}_peak_rss_mb {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


# --- chapter 7: instruction data, the padding collate function, fine-tuning ---
# The book's package has the Alpaca format, InstructionDataset and custom_collate_fn.
# Exercises 7.1 (the Phi-3 format) and 7.2 (masking the instruction) live in the book's
# solutions, not in the package: their few lines follow here.

def format_input_phi3(entry):
    """Exercise 7.1's prompt."""
    return f"<|user|>\n{entry['instruction']}" + (f"\n{entry['input']}" if entry["input"] else "")


class InstructionDatasetPhi3(InstructionDataset):
    """Exercise 7.1: the Phi-3 prompt and response."""

    def __init__(self, data, tokenizer):
        self.data = data
        self.encoded_texts = [
            tokenizer.encode(format_input_phi3(e) + f"\n<|assistant|>:\n{e['output']}") for e in data
        ]


class InstructionDatasetMasked(InstructionDataset):
    """Exercise 7.2: the dataset also keeps each instruction's length in tokens."""

    def __init__(self, data, tokenizer):
        super().__init__(data, tokenizer)
        self.instruction_lengths = [len(tokenizer.encode(format_input(e))) for e in data]

    def __getitem__(self, index):
        return self.instruction_lengths[index], self.encoded_texts[index]


def collate_masked(batch, allowed_max_length=None):
    """Exercise 7.2: the book's custom_collate_fn, then the instruction's targets masked."""
    inputs, targets = custom_collate_fn([item for _, item in batch], allowed_max_length=allowed_max_length)
    for row, (instruction_length, _) in enumerate(batch):
        targets[row, :instruction_length - 1] = -100
    return inputs, targets


def instruct_oracle(args):
    """Chapter 7's loaders and a tiny fine-tuning run, seeded as the book; the
    figures llm_core's tests/instruct.rs must reproduce."""
    with open(os.path.join(default_data_dir(), "instruction-data.json")) as f:
        data = json.load(f)
    train_portion, test_portion = int(len(data) * 0.85), int(len(data) * 0.1)
    train_data = data[:train_portion]
    test_data = data[train_portion:train_portion + test_portion]
    val_data = data[train_portion + test_portion:]
    tokenizer = TOKENIZER

    def epoch_figures(dataset, shuffle, drop_last, collate):
        torch.manual_seed(123)
        loader = DataLoader(dataset, batch_size=8, shuffle=shuffle, drop_last=drop_last, collate_fn=collate)
        return [dict(shape=list(x.shape), input_sum=int(x.sum()), target_sum=int(y.sum()),
                     ignored=int((y == -100).sum())) for x, y in loader]

    train_ds = InstructionDataset(train_data, tokenizer)
    first = train_data[0]
    out = dict(
        about="scripts/reference/gpt_torch.py instruct-oracle: llms_from_scratch.ch07, torch " + torch.__version__,
        sizes=[len(train_data), len(val_data), len(test_data)],
        first_train_tokens=train_ds[0], first_train_instruction_length=len(tokenizer.encode(format_input(first))),
        train_epoch=epoch_figures(train_ds, True, True, partial(custom_collate_fn, allowed_max_length=1024)),
        val_epoch=epoch_figures(InstructionDataset(val_data, tokenizer), False, False,
                                partial(custom_collate_fn, allowed_max_length=1024)),
        train_epoch_masked=epoch_figures(InstructionDatasetMasked(train_data, tokenizer), True, True,
                                         partial(collate_masked, allowed_max_length=1024)),
        train_epoch_truncated=epoch_figures(train_ds, True, True, partial(custom_collate_fn, allowed_max_length=64)),
        train_epoch_phi3=epoch_figures(InstructionDatasetPhi3(train_data, tokenizer), True, True, custom_collate_fn),
    )
    # A tiny fine-tuning run: the book's calls in the book's order.
    cfg = dict(vocab_size=50257, context_length=128, emb_dim=32, n_heads=2, n_layers=2,
               drop_rate=0.0, qkv_bias=False)
    torch.manual_seed(123)
    model = GPTModel(cfg)
    c = partial(custom_collate_fn, allowed_max_length=128)
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
    (train_losses, val_losses, tokens_seen), samples = quietly(
        train_model_simple, model, train_loader, val_loader, optimizer, "cpu", num_epochs=2,
        eval_freq=2, eval_iter=2, start_context=format_input(val_data[0]), tokenizer=tokenizer)
    out["tiny_run"] = dict(config=cfg, train_entries=40, val_entries=16, lr=5e-4,
                           weight_decay=0.1, num_epochs=2, eval_freq=2, eval_iter=2,
                           allowed_max_length=128, initial_losses=initial, train_losses=train_losses,
                           val_losses=val_losses, tokens_seen=tokens_seen, samples=samples)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


# --- chapter 7, bonus: preference tuning with DPO ---
# The book's DPO code is not in its package (1.0.19): it lives only in the notebook
# ch07/04_preference-tuning-with-dpo/dpo-from-scratch.ipynb of the book's repository.
# The functions below are copied from that notebook, the same operations in the same
# order. Two changes only:
#  - `format_input` and `custom_collate_fn` are renamed `dpo_format_input` and
#    `dpo_custom_collate_fn`, because chapter 7's package functions of those names are
#    imported above (the notebook's format_input is the same Alpaca prompt as ch07's);
#  - `train_model_dpo_simple` drops the `generate_and_print_sample` call at the end of
#    each epoch (the notebook passes it an undefined global `model`; it is greedy and
#    draws no random numbers, so dropping it changes no figure and no generator draw).

def dpo_format_input(entry):
    instruction_text = (
        f"Below is an instruction that describes a task. "
        f"Write a response that appropriately completes the request."
        f"\n\n### Instruction:\n{entry['instruction']}"
    )

    input_text = f"\n\n### Input:\n{entry['input']}" if entry["input"] else ""

    return instruction_text + input_text


class PreferenceDataset(torch.utils.data.Dataset):
    def __init__(self, data, tokenizer):
        self.data = data

        # Pre-tokenize texts
        self.encoded_texts = []
        for entry in data:
            prompt = dpo_format_input(entry)
            rejected_response = entry["rejected"]
            chosen_response = entry["chosen"]

            prompt_tokens = tokenizer.encode(prompt)
            chosen_full_text = f"{prompt}\n\n### Response:\n{chosen_response}"
            rejected_full_text = f"{prompt}\n\n### Response:\n{rejected_response}"
            chosen_full_tokens = tokenizer.encode(chosen_full_text)
            rejected_full_tokens = tokenizer.encode(rejected_full_text)

            self.encoded_texts.append({
                "prompt": prompt_tokens,
                "chosen": chosen_full_tokens,
                "rejected": rejected_full_tokens,
            })

    def __getitem__(self, index):
        return self.encoded_texts[index]

    def __len__(self):
        return len(self.data)


def dpo_custom_collate_fn(
    batch,
    pad_token_id=50256,
    allowed_max_length=None,
    mask_prompt_tokens=True,
    device="cpu"
):
    # Initialize lists to hold batch data
    batch_data = {
        "prompt": [],
        "chosen": [],
        "rejected": [],
        "rejected_mask": [],
        "chosen_mask": []

    }

    # Determine the longest sequence to set a common padding length
    max_length_common = 0
    if batch:
        for key in ["chosen", "rejected"]:
            current_max = max(len(item[key])+1 for item in batch)
            max_length_common = max(max_length_common, current_max)

    # Process each item in the batch
    for item in batch:
        prompt = torch.tensor(item["prompt"])
        batch_data["prompt"].append(prompt)

        for key in ["chosen", "rejected"]:
            # Adjust padding according to the common maximum length
            sequence = item[key]
            padded = sequence + [pad_token_id] * (max_length_common - len(sequence))
            mask = torch.ones(len(padded)).bool()

            # Set mask for all padding tokens to False
            mask[len(sequence):] = False

            # Set mask for all input tokens to False
            # +2 sets the 2 newline ("\n") tokens before "### Response" to False
            if mask_prompt_tokens:
                mask[:prompt.shape[0]+2] = False

            batch_data[key].append(torch.tensor(padded))
            batch_data[f"{key}_mask"].append(mask)

    # Final processing
    for key in ["chosen", "rejected", "chosen_mask", "rejected_mask"]:
        # Stack all sequences into a tensor for the given key
        tensor_stack = torch.stack(batch_data[key])

        # Optionally truncate to maximum sequence length
        if allowed_max_length is not None:
            tensor_stack = tensor_stack[:, :allowed_max_length]

        # Move to the specified device
        batch_data[key] = tensor_stack.to(device)

    return batch_data


def compute_dpo_loss(
      model_chosen_logprobs,
      model_rejected_logprobs,
      reference_chosen_logprobs,
      reference_rejected_logprobs,
      beta=0.1,
    ):
    """Compute the DPO loss for a batch of policy and reference model log probabilities.

    Args:
        model_chosen_logprobs: Log probabilities of the policy model for the chosen responses. Shape: (batch_size,)
        model_rejected_logprobs: Log probabilities of the policy model for the rejected responses. Shape: (batch_size,)
        reference_chosen_logprobs: Log probabilities of the reference model for the chosen responses. Shape: (batch_size,)
        reference_rejected_logprobs: Log probabilities of the reference model for the rejected responses. Shape: (batch_size,)
        beta: Temperature parameter for the DPO loss; typically something in the range of 0.1 to 0.5. We ignore the reference model as beta -> 0.

    Returns:
        A tuple of three tensors: (loss, chosen_rewards, rejected_rewards).
    """

    model_logratios = model_chosen_logprobs - model_rejected_logprobs
    reference_logratios = reference_chosen_logprobs - reference_rejected_logprobs
    logits = model_logratios - reference_logratios

    # DPO (Eq. 7 of https://arxiv.org/pdf/2305.18290.pdf)
    losses = -F.logsigmoid(beta * logits)

    # Optional values to track progress during training
    chosen_rewards = (model_chosen_logprobs - reference_chosen_logprobs).detach()
    rejected_rewards = (model_rejected_logprobs - reference_rejected_logprobs).detach()

    # .mean() to average over the samples in the batch
    return losses.mean(), chosen_rewards.mean(), rejected_rewards.mean()


def compute_logprobs(logits, labels, selection_mask=None):
    """
    Compute log probabilities.

    Args:
      logits: Tensor of shape (batch_size, num_tokens, vocab_size)
      labels: Tensor of shape (batch_size, num_tokens)
      selection_mask: Tensor for shape (batch_size, num_tokens)

    Returns:
      mean_log_prob: Mean log probability excluding padding tokens.
    """

    # Labels are the inputs shifted by one
    labels = labels[:, 1:].clone()

    # Truncate logits to match the labels num_tokens
    logits = logits[:, :-1, :]

    log_probs = F.log_softmax(logits, dim=-1)

    # Gather the log probabilities for the actual labels
    selected_log_probs = torch.gather(
        input=log_probs,
        dim=-1,
        index=labels.unsqueeze(-1)
    ).squeeze(-1)

    if selection_mask is not None:
        mask = selection_mask[:, 1:].clone()

        # Apply the mask to filter out padding tokens
        selected_log_probs = selected_log_probs * mask

        # Calculate the average log probability excluding padding tokens
        # This averages over the tokens, so the shape is (batch_size,)
        avg_log_prob = selected_log_probs.sum(-1) / mask.sum(-1)

        return avg_log_prob

    else:
        return selected_log_probs.mean(-1)


def compute_dpo_loss_batch(batch, policy_model, reference_model, beta):
    """Compute the DPO loss on an input batch"""

    # where policy_model(batch["chosen"]) are the logits
    policy_chosen_log_probas = compute_logprobs(
        logits=policy_model(batch["chosen"]),
        labels=batch["chosen"],
        selection_mask=batch["chosen_mask"]
    )
    policy_rejected_log_probas = compute_logprobs(
        logits=policy_model(batch["rejected"]),
        labels=batch["rejected"],
        selection_mask=batch["rejected_mask"]
    )

    with torch.no_grad():
        ref_chosen_log_probas = compute_logprobs(
            logits=reference_model(batch["chosen"]),
            labels=batch["chosen"],
            selection_mask=batch["chosen_mask"]
        )
        ref_rejected_log_probas = compute_logprobs(
            logits=reference_model(batch["rejected"]),
            labels=batch["rejected"],
            selection_mask=batch["rejected_mask"]
        )
    loss, chosen_rewards, rejected_rewards = compute_dpo_loss(
        model_chosen_logprobs=policy_chosen_log_probas,
        model_rejected_logprobs=policy_rejected_log_probas,
        reference_chosen_logprobs=ref_chosen_log_probas,
        reference_rejected_logprobs=ref_rejected_log_probas,
        beta=beta
    )
    return loss, chosen_rewards, rejected_rewards


def compute_dpo_loss_loader(data_loader, policy_model, reference_model, beta, num_batches=None):
    """Apply compute_dpo_loss_batch to a whole data loader"""

    total_loss, total_chosen_rewards, total_rejected_rewards = 0., 0., 0.
    if len(data_loader) == 0:
        return float("nan")

    elif num_batches is None:
        num_batches = len(data_loader)
    else:
        # Reduce the number of batches to match the total number of batches in the data loader
        # if num_batches exceeds the number of batches in the data loader
        num_batches = min(num_batches, len(data_loader))
    for i, batch in enumerate(data_loader):
        if i < num_batches:
            loss, chosen_rewards, rejected_rewards = compute_dpo_loss_batch(
                batch=batch,
                policy_model=policy_model,
                reference_model=reference_model,
                beta=beta
            )
            total_loss += loss.item()
            total_chosen_rewards += chosen_rewards.item()
            total_rejected_rewards += rejected_rewards.item()

        else:
            break

    # calculate average
    total_loss /= num_batches
    total_chosen_rewards /= num_batches
    total_rejected_rewards /= num_batches
    return total_loss, total_chosen_rewards, total_rejected_rewards


def evaluate_dpo_loss_loader(policy_model, reference_model, train_loader, val_loader, beta, eval_iter):
    """Compute the DPO loss for the training and validation dataset"""

    policy_model.eval()
    with torch.no_grad():
        train_loss, train_chosen_rewards, train_rejected_rewards = compute_dpo_loss_loader(
            data_loader=train_loader,
            policy_model=policy_model,
            reference_model=reference_model,
            beta=beta,
            num_batches=eval_iter
        )

        val_loss, val_chosen_rewards, val_rejected_rewards = compute_dpo_loss_loader(
            data_loader=val_loader,
            policy_model=policy_model,
            reference_model=reference_model,
            beta=beta,
            num_batches=eval_iter
        )

    res = {
        "train_loss": train_loss,
        "train_chosen_reward": train_chosen_rewards,
        "train_rejected_reward": train_rejected_rewards,
        "val_loss": val_loss,
        "val_chosen_reward": val_chosen_rewards,
        "val_rejected_reward": val_rejected_rewards
    }

    policy_model.train()
    return res


def train_model_dpo_simple(
    policy_model, reference_model, train_loader, val_loader,
    optimizer, num_epochs, beta,
    eval_freq, eval_iter, start_context, tokenizer
):

    # Initialize lists to track losses and tokens seen
    tracking = {
        "train_losses": [],
        "train_chosen_rewards": [],
        "train_rejected_rewards": [],
        "val_losses": [],
        "val_chosen_rewards": [],
        "val_rejected_rewards": [],
        "tokens_seen": []
    }
    tokens_seen, global_step = 0, -1

    # Main training loop
    for epoch in range(num_epochs):
        policy_model.train()  # Set model to training mode

        for batch in train_loader:

            optimizer.zero_grad()  # Reset loss gradients from previous batch iteration

            loss, chosen_rewards, rejected_rewards = compute_dpo_loss_batch(
                batch=batch,
                policy_model=policy_model,
                reference_model=reference_model,
                beta=beta
            )

            loss.backward()  # Calculate loss gradients
            optimizer.step()  # Update model weights using loss gradients

            tokens_seen += batch["chosen"].numel()
            global_step += 1

            # Optional evaluation step
            if global_step % eval_freq == 0:
                res = evaluate_dpo_loss_loader(
                    policy_model=policy_model,
                    reference_model=reference_model,
                    train_loader=train_loader,
                    val_loader=val_loader,
                    beta=beta,
                    eval_iter=eval_iter
                )
                tracking["train_losses"].append(res["train_loss"])
                tracking["train_chosen_rewards"].append(res["train_chosen_reward"])
                tracking["train_rejected_rewards"].append(res["train_rejected_reward"])
                tracking["val_losses"].append(res["val_loss"])
                tracking["val_chosen_rewards"].append(res["val_chosen_reward"])
                tracking["val_rejected_rewards"].append(res["val_rejected_reward"])
                tracking["tokens_seen"].append(tokens_seen)
                train_reward_margin = res["train_chosen_reward"] - res["train_rejected_reward"]
                val_reward_margin = res["val_chosen_reward"] - res["val_rejected_reward"]

                print(
                    f"Ep {epoch+1} (Step {global_step:06d}): "
                    f"Train loss {res['train_loss']:.3f}, Val loss {res['val_loss']:.3f}, "
                    f"Train reward margins {train_reward_margin:.3f}, "
                    f"Val reward margins {val_reward_margin:.3f}"
                )

        # (the notebook's generate_and_print_sample call is dropped here: see above)

    return tracking

# --- end of the DPO notebook's code ---


def dpo_oracle(args):
    """A tiny seeded DPO run with the DPO notebook's code above (12 preference entries,
    a 2-layer 32-wide GPT, the policy starting as a copy of the reference); the figures
    llm_core's DPO tests must reproduce.

    Draws from the global generator, in this order (a DataLoader iterator draws its base
    seed when created; with shuffle=True its RandomSampler draws its own seed at the
    first batch; with shuffle=False nothing more):
      1. torch.manual_seed(123); the two GPTModel inits (policy, then reference);
      2. torch.manual_seed(123); the loaders are built (no draw);
      3. next(iter(val_loader)) once, for first_val_batch: one draw (the base seed);
      4. torch.manual_seed(123) (so 3. leaves no trace); AdamW draws nothing;
      5. train_model_dpo_simple: per epoch, iter(train_loader) (base seed, then sampler
         seed); after every step (eval_freq=1) an evaluation, iter(train_loader) (base
         seed, sampler seed) then iter(val_loader) (base seed)."""
    torch.set_num_threads(1)
    with open(os.path.join(default_data_dir(), "instruction-data-with-preference.json")) as f:
        entries = json.load(f)[:12]
    train_data, val_data = entries[:8], entries[8:12]
    # TOKENIZER above already loaded "gpt2" offline; tiktoken returns that same encoding.
    import tiktoken
    tokenizer = tiktoken.get_encoding("gpt2")
    assert tokenizer is TOKENIZER
    cfg = {"vocab_size": 50257, "context_length": 256, "emb_dim": 32, "n_heads": 2,
           "n_layers": 2, "drop_rate": 0.0, "qkv_bias": False}
    allowed_max_length, beta, batch_size, lr, weight_decay = 256, 0.1, 2, 1e-3, 0.01
    num_epochs, eval_freq, eval_iter = 2, 1, 2

    torch.manual_seed(123)
    policy_model = GPTModel(cfg)
    reference_model = GPTModel(cfg)
    reference_model.load_state_dict(policy_model.state_dict())
    reference_model.eval()
    reference_before = {n: p.detach().clone() for n, p in reference_model.named_parameters()}

    customized_collate_fn = partial(dpo_custom_collate_fn, device="cpu", mask_prompt_tokens=True,
                                    allowed_max_length=allowed_max_length)
    torch.manual_seed(123)
    train_dataset = PreferenceDataset(train_data, tokenizer)
    train_loader = DataLoader(train_dataset, batch_size=batch_size, collate_fn=customized_collate_fn,
                              shuffle=True, drop_last=True, num_workers=0)
    val_dataset = PreferenceDataset(val_data, tokenizer)
    val_loader = DataLoader(val_dataset, batch_size=batch_size, collate_fn=customized_collate_fn,
                            shuffle=False, drop_last=False, num_workers=0)
    # Sequences (prompt + response) longer than allowed_max_length, cut by the collate.
    lengths = [len(e[k]) for ds in (train_dataset, val_dataset) for e in ds.encoded_texts
               for k in ("chosen", "rejected")]
    n_truncated = sum(n > allowed_max_length for n in lengths)
    print(f"{n_truncated} of {len(lengths)} chosen/rejected sequences are longer than "
          f"{allowed_max_length} tokens (longest {max(lengths)})", file=sys.stderr)

    # This draws one number from the global generator (the val loader's base seed);
    # the torch.manual_seed(123) before the optimizer below resets it anyway.
    batch = next(iter(val_loader))
    policy_model.eval()
    with torch.no_grad():
        policy_chosen = compute_logprobs(policy_model(batch["chosen"]), batch["chosen"], batch["chosen_mask"])
        loss, chosen_reward, rejected_reward = compute_dpo_loss_batch(batch, policy_model, reference_model,
                                                                      beta=beta)
    first_val_batch = dict(
        chosen=batch["chosen"].tolist(), rejected=batch["rejected"].tolist(),
        chosen_mask=batch["chosen_mask"].tolist(), rejected_mask=batch["rejected_mask"].tolist(),
        policy_chosen_logprobs=policy_chosen.tolist(),
        loss=loss.item(), chosen_reward=chosen_reward.item(), rejected_reward=rejected_reward.item(),
    )

    torch.manual_seed(123)
    optimizer = torch.optim.AdamW(policy_model.parameters(), lr=lr, weight_decay=weight_decay)
    tracking, _ = quietly(
        train_model_dpo_simple, policy_model, reference_model, train_loader, val_loader, optimizer,
        num_epochs=num_epochs, beta=beta, eval_freq=eval_freq, eval_iter=eval_iter,
        start_context=dpo_format_input(val_data[0]), tokenizer=tokenizer)

    out = dict(
        about="scripts/reference/gpt_torch.py dpo-oracle: the book's ch07/04_preference-tuning-with-dpo/"
        "dpo-from-scratch.ipynb with llms_from_scratch.ch04.GPTModel, torch " + torch.__version__,
        config=cfg, seed=123, lr=lr, weight_decay=weight_decay, beta=beta, batch_size=batch_size,
        num_epochs=num_epochs, eval_freq=eval_freq, eval_iter=eval_iter,
        allowed_max_length=allowed_max_length, n_train=len(train_data), n_val=len(val_data),
        first_val_batch=first_val_batch,
        tracking=tracking,
        reference_unchanged=all(torch.equal(p, reference_before[n])
                                for n, p in reference_model.named_parameters()),
        reference_has_grad=any(p.grad is not None for p in reference_model.parameters()),
    )
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


def bench_speed(args):
    """The speed ladder's reference at notebook ch05's shape (124M, context 256, batch 2,
    AdamW lr 4e-4, weight decay 0.1, the-verdict), the other side of
    llm_core/examples/bench_speed.rs. The modes are the book's ch05/10 scripts:
    `orig` is 00_orig.py's model and optimizer (the chapter's GPTModel, float32, AdamW);
    `opt` is 01_opt_single_gpu.py's (GPTModelFast: nn.LayerNorm, nn.GELU, one qkv
    layer, scaled_dot_product_attention; vocabulary 50,304; model.to(bfloat16);
    AdamW(fused=True); torch.compile), at this shape and batch instead of the script's
    context 1024 and batch 32; `opt-nocompile` is `opt` without torch.compile. Prints
    tokens/s after one warm-up step (two with torch.compile), the peak RSS and the loss
    over the training set afterwards."""
    cfg = dict(GPT_CONFIG_124M)
    train_loader, _ = verdict_loaders(cfg)
    torch.manual_seed(123)
    if args.mode == "orig":
        model = GPTModel(cfg)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.0004, weight_decay=0.1)
    else:
        model = GPTModelFast(dict(cfg, vocab_size=50304))
        model = model.to(torch.bfloat16)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.0004, weight_decay=0.1, fused=True)
        if args.mode == "opt":
            model = torch.compile(model)
    model.train()
    warmup = 2 if args.mode == "opt" else 1
    step, tokens, t0 = 0, 0, time.perf_counter()
    while step < args.steps:
        for x, y in train_loader:
            if step == args.steps:
                break
            if step == warmup:
                t0, tokens = time.perf_counter(), 0
            optimizer.zero_grad()
            loss = calc_loss_batch(x, y, model, "cpu")
            loss.backward()
            optimizer.step()
            tokens += x.numel()
            step += 1
    elapsed = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        loss = calc_loss_loader(train_loader, model, "cpu")
    m = args.mode.replace("-", "_")
    print(f"torch_speed_{m}_tok_s {tokens / elapsed:.1f}")
    print(f"torch_speed_{m}_loss {loss:.4f}")
    print(f"torch_speed_{m}_peak_rss_mb {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("figures")
    f.add_argument("--epochs", type=int, default=10)
    f.add_argument("--out")
    d = sub.add_parser("appendix-d")
    d.add_argument("--epochs", type=int, default=15)
    d.add_argument("--peak-lr", type=float, default=0.001)
    sub.add_parser("bench")
    sub.add_parser("matmul")
    o = sub.add_parser("train-oracle")
    o.add_argument("--out", required=True)
    o = sub.add_parser("instruct-oracle")
    o.add_argument("--out", required=True)
    o = sub.add_parser("lora-oracle")
    o.add_argument("--out", required=True)
    o = sub.add_parser("dpo-oracle")
    o.add_argument("--out", default="llm_core/tests/data/dpo_oracle.json")
    b = sub.add_parser("bench-lora")
    b.add_argument("--mode", choices=["full", "last_block", "lora"], default="lora")
    b.add_argument("--steps", type=int, default=5)
    b = sub.add_parser("bench-speed")
    b.add_argument("--mode", choices=["orig", "opt", "opt-nocompile"], default="orig")
    b.add_argument("--steps", type=int, default=50)
    args = p.parse_args()
    {"bench-speed": bench_speed, "figures": figures, "appendix-d": appendix_d, "bench": bench, "matmul": matmul_peak, "train-oracle": train_oracle,
     "instruct-oracle": instruct_oracle, "lora-oracle": lora_oracle, "dpo-oracle": dpo_oracle,
     "bench-lora": bench_lora}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
