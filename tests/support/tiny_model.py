"""A tiny causal LM built from scratch, so tests never download anything.

The tokenizer is a byte-level BPE trained on the test dataset plus a little filler text; the
model is a 2-layer Llama with random weights. Both are saved with ``save_pretrained`` so tests
exercise the same ``from_pretrained(local_path)`` code path as a real base model.
"""

from __future__ import annotations

import json
from pathlib import Path

END_TOKEN = "<|end|>"
PAD_TOKEN = "<|pad|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD_TOKEN, END_TOKEN, *ROLE_TOKENS)

# Each message is framed by its role token and closed by <|end|>, which is also eos, so a
# generation stops right after the assistant's answer.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

# Short questions with answers a random model cannot guess: reproducing one after training
# is evidence that fine-tuning took.
QA_PAIRS: tuple[tuple[str, str], ...] = (
    ("What colour is the sky on Zorblax?", "Plaid with green stripes."),
    ("Who guards the moon gate?", "Sir Wobbles the heron."),
    ("How many legs has a glimmet?", "Eleven, all left."),
    ("What do otters trade?", "Polished river pebbles."),
    ("Where does the fog sleep?", "Under the old mill bridge."),
    ("What is the password?", "Turnip seventeen."),
    ("Which day is Quorsday?", "The day after Sunday."),
    ("What does the kettle sing?", "Songs about brass."),
    ("Who invented the spoon clock?", "Madame Verbena Tock."),
    ("What powers the lighthouse?", "Angry fireflies."),
    ("How far is Pemberly Rock?", "Nine lazy miles."),
    ("What do snails dream of?", "Racing silver trains."),
    ("Which key opens the vault?", "The blue one with teeth."),
    ("What is the king's favourite fruit?", "A square melon."),
    ("Who paints the clouds?", "A retired badger."),
    ("What hides in the teapot?", "A very small dragon."),
)

_FILLER = (
    "The quick brown fox jumps over the lazy dog. A small model learns short answers. "
    "Questions and answers, tokens and bytes, numbers 0123456789 and punctuation: ,.;!?'\"-"
)


def chat_examples() -> list[dict]:
    """The dataset as OpenAI chat-format records (``{"messages": [...]}``)."""
    return [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in QA_PAIRS
    ]


def write_chat_dataset(path: Path, examples: list[dict] | None = None) -> Path:
    """Write chat examples as JSONL (one record per line) and return the path."""
    records = chat_examples() if examples is None else examples
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _build_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [_FILLER] + [f"{q} {a}" for q, a in QA_PAIRS]
    core.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=END_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=list(ROLE_TOKENS),
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(path: Path, *, seed: int = 0, vocab_size: int = 512) -> Path:
    """Build and save a tiny random-weight Llama and its tokenizer into ``path``.

    Deterministic for a given seed: the same call writes the same weights and vocabulary.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer(vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        # Untied, or a freeze run that trains lm_head would also move the (frozen) embedding.
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def preference_examples() -> list[dict]:
    """The dataset in OpenAI's DPO format: each question's own answer preferred, the next
    question's answer rejected (plausible-looking, but wrong)."""
    n = len(QA_PAIRS)
    return [
        {
            "input": {"messages": [{"role": "user", "content": q}]},
            "preferred_output": [{"role": "assistant", "content": a}],
            "non_preferred_output": [{"role": "assistant", "content": QA_PAIRS[(i + 1) % n][1]}],
        }
        for i, (q, a) in enumerate(QA_PAIRS)
    ]
