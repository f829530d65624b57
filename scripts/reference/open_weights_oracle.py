"""Fixtures for llm_core's Llama 3.2 and Qwen3 support: a tiny byte-level BPE
tokenizer, two tiny random models saved the way the Hugging Face hub ships them,
and what transformers and the book's package compute with them.

Everything is made offline and seeded (nothing is downloaded); running it twice
writes the same bytes. In --out it writes:

- tokenizer.json: byte-level BPE (~400 tokens incl. the 256-byte alphabet) trained
  on the paragraphs below, then the Qwen and Llama 3 special tokens;
- llama3/: config.json (the layout of meta-llama/Llama-3.2-1B-Instruct's), config.v5.json
  (as transformers 5 writes it), generation_config.json, model.safetensors
  (LlamaForCausalLM, Llama-3 RoPE scaling, tied embeddings);
- qwen3/: the same for Qwen3ForCausalLM (Qwen/Qwen3-0.6B's layout, head_dim != hidden/heads,
  untied lm_head), weights in shards with model.safetensors.index.json;
- oracle.safetensors: input_ids and, per model, logits, rope_cos/rope_sin, greedy and
  chunked_logits (see main());
- chat_oracle.json: the book's Qwen3Tokenizer chat wrapping and Llama 3 ChatFormat ids.

    $LLM_RS_CACHE/bench-venv/bin/python scripts/reference/open_weights_oracle.py \
        --out llm_core/tests/data/open_weights
"""
import argparse
import json
import os
import shutil

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import AddedToken, Tokenizer, decoders, models  # noqa: E402
from tokenizers import pre_tokenizers, processors, trainers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM  # noqa: E402

from llms_from_scratch.llama3 import ChatFormat  # noqa: E402
from llms_from_scratch.qwen3 import Qwen3Tokenizer  # noqa: E402

TRAIN_TEXT = """\
I had always thought Jack Gisburn rather a cheap genius--though a good fellow enough--so it
was no great surprise to me to hear that, in the height of his glory, he had dropped his
painting, married a rich widow, and established himself in a villa on the Riviera.
The model reads a sequence of tokens and predicts the next one. Each token is turned into a
vector, the vectors pass through a stack of transformer blocks, and the last layer gives a
score for every word in the vocabulary. Attention lets every position look at the positions
before it; the feed forward network then works on each position on its own.
Large language models are trained on a great deal of text. After pretraining they can be
finetuned to follow instructions: the user asks a question, the assistant answers it, and
the system message tells the assistant how to behave. You are a helpful assistant.
What is the capital of France? The capital of France is Paris. How are you today? I am
fine, thank you. Please write a short poem about the sea, the wind and the rain.
Numbers like 1, 2, 3, 10, 42 and 2024 appear in text too, as do symbols such as (), [], {},
<, >, |, #, @ and the newline between lines.
"""
SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>",
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eot_id|>",
]
CHAT_MESSAGES = [
    "Hello, how are you?",
    "Write two lines.\nThis is the second line.",
    "Grüße, 世界",
    "Please <think> about it, then answer.",
]
LLAMA_SYSTEM = "You answer in one short sentence."
INPUT_IDS = [
    [72, 283, 101, 300, 45, 9, 350],
    [300, 17, 256, 88, 271, 199, 64],
]


def make_tokenizer(vocab_size=400):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TRAIN_TEXT.splitlines(keepends=True), trainer=trainer)
    learned = tok.get_vocab_size()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    ids = {s: tok.token_to_id(s) for s in SPECIALS}
    assert list(ids.values()) == list(range(learned, learned + len(SPECIALS))), ids
    return tok, ids


def init_weights(model, seed):
    """Larger weights than transformers' init so logits are O(1-10) and every
    norm weight differs from 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied weights are listed once
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def hub_config_llama(c, vocab_size, ids):
    """config.json in the layout of meta-llama/Llama-3.2-1B-Instruct (transformers 4.x)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": ids["<|begin_of_text|>"],
        "eos_token_id": [ids["<|end_of_text|>"], ids["<|eot_id|>"]],
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "hidden_size": c.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": c.intermediate_size,
        "max_position_embeddings": c.max_position_embeddings,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": c.num_attention_heads,
        "num_hidden_layers": c.num_hidden_layers,
        "num_key_value_heads": c.num_key_value_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_scaling": {
            "factor": 32.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        "rope_theta": 500000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "transformers_version": "4.45.0.dev0",
        "use_cache": True,
        "vocab_size": vocab_size,
    }


def hub_config_qwen3(c, vocab_size, ids):
    """config.json in the layout of Qwen/Qwen3-0.6B (transformers 4.51); like the hub
    file, rope_theta is written as an integer."""
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "hidden_size": c.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": c.intermediate_size,
        "max_position_embeddings": c.max_position_embeddings,
        "max_window_layers": c.num_hidden_layers,
        "model_type": "qwen3",
        "num_attention_heads": c.num_attention_heads,
        "num_hidden_layers": c.num_hidden_layers,
        "num_key_value_heads": c.num_key_value_heads,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.51.0",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
    }


def save_model(model, out_dir, hub_cfg, **save_kwargs):
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True, **save_kwargs)
    os.replace(os.path.join(out_dir, "config.json"), os.path.join(out_dir, "config.v5.json"))
    write_json(os.path.join(out_dir, "config.json"), hub_cfg)


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def model_oracle(model, prefix, input_ids, head_dim):
    """The tensors of one model; checks its cached paths against the plain forward."""
    model.eval()
    t = {}
    with torch.no_grad():
        logits = model(input_ids, use_cache=False).logits
        t[f"{prefix}.logits"] = logits.contiguous()

        pos = torch.arange(16)[None, :]
        cos, sin = model.model.rotary_emb(torch.zeros(1, 16, head_dim), pos)
        t[f"{prefix}.rope_cos"] = cos[0].contiguous()
        t[f"{prefix}.rope_sin"] = sin[0].contiguous()

        model.generation_config.eos_token_id = None
        model.generation_config.bos_token_id = None
        model.generation_config.pad_token_id = 0
        prompt = input_ids[:1]
        greedy = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12,
                                do_sample=False, use_cache=True, eos_token_id=None, pad_token_id=0)
        assert greedy.shape == (1, input_ids.shape[1] + 12), greedy.shape
        t[f"{prefix}.greedy"] = greedy.contiguous()
        # the same with no cache, by hand
        seq = prompt
        for _ in range(12):
            nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
        assert torch.equal(seq, greedy), (seq, greedy)

        first = model(input_ids[:, :4], use_cache=True)
        rest = model(input_ids[:, 4:], past_key_values=first.past_key_values, use_cache=True)
        t[f"{prefix}.chunked_logits"] = rest.logits.contiguous()
        diff = (rest.logits - logits[:, 4:]).abs().max().item()
        assert diff < 1e-4, diff
    print(f"{prefix}_max_abs_logits {logits.abs().max().item():.4f}")
    print(f"{prefix}_logits_std {logits.std().item():.4f}")
    print(f"{prefix}_chunked_vs_full_max_diff {diff:.3e}")
    print(f"{prefix}_greedy {' '.join(str(int(i)) for i in greedy[0])}")
    return t


class LlamaTokenizerAdapter:
    """What the book's llama3.ChatFormat asks of a tokenizer, over tokenizers.Tokenizer."""

    def __init__(self, tok, special_ids):
        self.tok = tok
        self.special = {s: special_ids[s] for s in SPECIALS[5:]}

    def encode(self, text, allowed_special=None):
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids):
        return self.tok.decode(ids, skip_special_tokens=False)


def chat_oracle(tok_path, tok, special_ids):
    records = []
    settings = [(True, True, True), (True, True, False), (True, False, False),
                (False, False, False)]
    for message in CHAT_MESSAGES:
        for chat, gen_prompt, thinking in settings:
            q = Qwen3Tokenizer(tokenizer_file_path=tok_path, apply_chat_template=chat,
                               add_generation_prompt=gen_prompt, add_thinking=thinking)
            ids = q.encode(message)
            records.append({
                "family": "qwen3", "message": message, "apply_chat_template": chat,
                "add_generation_prompt": gen_prompt, "add_thinking": thinking,
                "text": q._wrap_chat(message) if chat else message,
                "ids": ids, "decoded": q.decode(ids),
            })
    fmt = ChatFormat(LlamaTokenizerAdapter(tok, special_ids))
    for message in CHAT_MESSAGES[:3]:
        for system in (None, LLAMA_SYSTEM):
            ids = fmt.encode(message, system_message=system)
            records.append({
                "family": "llama3", "message": message, "system": system, "ids": ids,
                "text": tok.decode(ids, skip_special_tokens=False),
            })
    return {"vocab_size": tok.get_vocab_size(), "special_ids": special_ids, "records": records}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="llm_core/tests/data/open_weights")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)

    tok, special_ids = make_tokenizer()
    tok_path = os.path.join(args.out, "tokenizer.json")
    tok.save(tok_path)
    tok = Tokenizer.from_file(tok_path)
    n_tok = tok.get_vocab_size()
    model_vocab = (n_tok + 15) // 16 * 16
    print(f"tokenizer_vocab_size {n_tok}")
    print(f"model_vocab_size {model_vocab}")
    print(f"special_ids {json.dumps(special_ids)}")

    input_ids = torch.tensor(INPUT_IDS, dtype=torch.int64)
    assert input_ids.max().item() < min(special_ids.values())
    tensors = {"input_ids": input_ids}

    llama_cfg = LlamaConfig(
        vocab_size=model_vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
        rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        max_position_embeddings=256, tie_word_embeddings=True, attention_bias=False,
        mlp_bias=False, bos_token_id=special_ids["<|begin_of_text|>"],
        eos_token_id=[special_ids["<|end_of_text|>"], special_ids["<|eot_id|>"]],
        attn_implementation="eager",
    )
    torch.manual_seed(123)
    llama = LlamaForCausalLM(llama_cfg).float()
    init_weights(llama, 123)
    save_model(llama, os.path.join(args.out, "llama3"),
               hub_config_llama(llama_cfg, model_vocab, special_ids))
    tensors.update(model_oracle(llama, "llama3", input_ids, 16))

    qwen_cfg = Qwen3Config(
        vocab_size=model_vocab, hidden_size=64, head_dim=32, intermediate_size=96,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
        rope_theta=1000000.0, rope_scaling=None, max_position_embeddings=256,
        max_window_layers=2, tie_word_embeddings=False, attention_bias=False,
        use_sliding_window=False, sliding_window=None,
        bos_token_id=special_ids["<|endoftext|>"], eos_token_id=special_ids["<|im_end|>"],
        attn_implementation="eager",
    )
    torch.manual_seed(321)
    qwen = Qwen3ForCausalLM(qwen_cfg).float()
    init_weights(qwen, 321)
    save_model(qwen, os.path.join(args.out, "qwen3"),
               hub_config_qwen3(qwen_cfg, model_vocab, special_ids), max_shard_size="200KB")
    tensors.update(model_oracle(qwen, "qwen3", input_ids, 32))

    # one metadata key: safetensors writes several in hash order, not the same bytes each run
    save_file(tensors, os.path.join(args.out, "oracle.safetensors"),
              metadata={"vocab_size": str(n_tok)})
    write_json(os.path.join(args.out, "chat_oracle.json"), chat_oracle(tok_path, tok, special_ids))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
