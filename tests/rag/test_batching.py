"""Dynamic batching on a small random Llama (the architecture of SmolLM2, Llama and Mistral): the same tokens as
``model.generate`` for each request alone, requests joining mid-way, cancellation, the bounded queue, and a
request that fails without harming the others in its batch."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from transformers import LlamaForCausalLM

from rag import errors
from rag.batching import BatchScheduler
from rag.errors import ServerBusyError
from tests.fakes import tiny_llama_config

NO_EOS: list[int] = []  # random weights: let every request run to max_new_tokens


@pytest.fixture(scope="module")
def tiny_llama():
    torch.manual_seed(0)
    config = tiny_llama_config(256)
    # float64: batched and single runs then agree to far below any gap between the top two logits.
    return LlamaForCausalLM(config).to(torch.float64).eval()


def alone(model, prompt: list[int], n: int) -> list[int]:
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    return out[0, len(prompt) :].tolist()


PROMPTS = [[5, 17, 42], [9, 8, 7, 6, 5, 4, 3, 2, 1], [100, 3, 77, 45, 200, 12, 13, 99, 250, 31, 64, 2]]


def test_batched_greedy_tokens_equal_generate_for_each_request_alone(tiny_llama):
    scheduler = BatchScheduler(tiny_llama, NO_EOS, max_batch=4, max_queue=4)
    try:
        expected = [alone(tiny_llama, p, 24) for p in PROMPTS]
        streams = [scheduler.submit(PROMPTS[0], 24), scheduler.submit(PROMPTS[1], 12)]
        first = [next(streams[0]) for _ in range(5)]  # the third joins while the others are mid-way
        streams.append(scheduler.submit(PROMPTS[2], 24))
        got = [first + list(streams[0]), list(streams[1]), list(streams[2])]
        assert got == [expected[0], expected[1][:12], expected[2]]
        assert scheduler.load_info() == {"active": 0, "queued": 0, "slots": 4}
        # Several steps ran with more than one request in the batch: fewer steps than tokens.
        assert scheduler.steps < 24 + 12 + 24
    finally:
        scheduler.stop()


def test_sampling_is_reproducible_with_a_seed(tiny_llama):
    scheduler = BatchScheduler(tiny_llama, NO_EOS, max_batch=4, max_queue=0)
    try:
        runs = [list(scheduler.submit(PROMPTS[0], 16, temperature=0.9, top_p=0.9, seed=7)) for _ in range(2)]
        assert runs[0] == runs[1] and len(runs[0]) == 16
        other = list(scheduler.submit(PROMPTS[0], 16, temperature=0.9, top_p=0.9, seed=8))
        assert other != runs[0]
    finally:
        scheduler.stop()


def test_end_of_sequence_stops_a_request(tiny_llama):
    tokens = alone(tiny_llama, PROMPTS[1], 10)
    stop_at = tokens[3]
    scheduler = BatchScheduler(tiny_llama, [stop_at], max_batch=2, max_queue=0)
    try:
        assert list(scheduler.submit(PROMPTS[1], 10)) == tokens[: tokens.index(stop_at)]
    finally:
        scheduler.stop()


def test_a_full_queue_refuses_at_once_and_a_cancelled_request_frees_its_place(tiny_llama):
    scheduler = BatchScheduler(tiny_llama, NO_EOS, max_batch=1, max_queue=1)
    try:
        cancel = threading.Event()
        running = scheduler.submit(PROMPTS[0], 400, cancel=cancel)
        next(running)
        waiting = scheduler.submit(PROMPTS[1], 3)
        started = time.monotonic()
        with pytest.raises(ServerBusyError) as refused:
            scheduler.submit(PROMPTS[2], 3)
        assert time.monotonic() - started < 0.5 and refused.value.retry_after >= 1
        assert "llm.max_batch" in str(refused.value)
        assert scheduler.load_info() == {"active": 1, "queued": 1, "slots": 1}
        cancel.set()  # e.g. the client went away
        deadline = time.monotonic() + 1.0
        while scheduler.load_info()["active"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(list(waiting)) == 3  # the waiting request got the freed place
        assert scheduler.load_info()["active"] == 0
    finally:
        scheduler.stop()


def test_models_with_sliding_window_caches_are_not_batched(tiny_llama):
    from transformers import MistralConfig, MistralForCausalLM

    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4}
    assert BatchScheduler.supports(tiny_llama)
    assert BatchScheduler.supports(MistralForCausalLM(MistralConfig(**small, sliding_window=None)))
    assert not BatchScheduler.supports(MistralForCausalLM(MistralConfig(**small, sliding_window=4096)))


def outcome(stream) -> tuple[list[int], Exception | None]:  # noqa: ANN001
    """The tokens a stream gave, and the error that ended it (None when it ended normally)."""
    tokens: list[int] = []
    try:
        for token in stream:
            tokens.append(token)
    except Exception as exc:  # noqa: BLE001 - what ended it is what the test looks at
        return tokens, exc
    return tokens, None


@pytest.fixture
def poisoned_row(tiny_llama):
    """A fault in one request's row of a batched decode step: NaN logits for the row whose next position is
    ``POISONED_POSITION``, so that request's sampling raises inside torch while the other rows are fine."""
    seen = {}

    def positions(_module, _args, kwargs):  # noqa: ANN001, ANN202
        seen["positions"] = kwargs.get("position_ids")

    def poison(_module, _args, logits):  # noqa: ANN001, ANN202
        if seen["positions"] is None or logits.shape[0] == 1:  # only in a step the batch shares
            return logits
        rows = seen["positions"][:, -1] == POISONED_POSITION
        if rows.any():
            logits = logits.clone()
            logits[rows] = float("nan")
        return logits

    hooks = [
        tiny_llama.register_forward_pre_hook(positions, with_kwargs=True),
        tiny_llama.lm_head.register_forward_hook(poison),
    ]
    yield tiny_llama
    for hook in hooks:
        hook.remove()


POISONED_POSITION = 6  # the 4th decode step of a 3-token prompt; a 12-token prompt starts past it


def test_a_fault_in_one_request_of_a_running_batch_fails_that_request_only(poisoned_row):
    scheduler = BatchScheduler(poisoned_row, NO_EOS, max_batch=4, max_queue=4)
    try:
        expected = alone(poisoned_row, PROMPTS[2], 24)
        healthy = scheduler.submit(PROMPTS[2], 24)
        first = [next(healthy)]
        faulty = scheduler.submit(PROMPTS[0], 24, temperature=0.8, seed=3)  # joins the running batch
        faulty_tokens, error = outcome(faulty)
        rest, healthy_error = outcome(healthy)
        assert healthy_error is None and first + rest == expected  # streamed to its end, token for token
        assert len(faulty_tokens) == 4  # its first token, then three decode steps before its row went bad
        assert isinstance(error, errors.GenerationFailedError) and "other requests were not affected" in str(error)
        assert isinstance(error.__cause__, RuntimeError)  # torch's own complaint about the NaN row, for the log
        assert list(scheduler.submit(PROMPTS[1], 5)) == alone(poisoned_row, PROMPTS[1], 5)  # the loop goes on
        assert scheduler.load_info() == {"active": 0, "queued": 0, "slots": 4}
    finally:
        scheduler.stop()


def test_a_request_whose_prefill_fails_harms_no_one_else(tiny_llama):
    scheduler = BatchScheduler(tiny_llama, NO_EOS, max_batch=4, max_queue=4)
    try:
        expected = alone(tiny_llama, PROMPTS[1], 20)
        healthy = scheduler.submit(PROMPTS[1], 20)
        first = [next(healthy) for _ in range(3)]
        # A token id past the vocabulary: the model's embedding lookup raises in this request's prefill.
        broken, error = outcome(scheduler.submit([5, 10_000, 7], 8))
        rest, healthy_error = outcome(healthy)
        assert healthy_error is None and first + rest == expected
        assert broken == [] and isinstance(error, errors.GenerationFailedError)
    finally:
        scheduler.stop()


def test_a_seed_torch_cannot_take_is_refused_and_harms_no_one(tiny_llama):
    """The issue's request: temperature 0.7 with seed 2**64 once failed every request in the batch."""
    scheduler = BatchScheduler(tiny_llama, NO_EOS, max_batch=4, max_queue=4)
    try:
        expected = alone(tiny_llama, PROMPTS[2], 20)
        healthy = scheduler.submit(PROMPTS[2], 20)
        first = [next(healthy) for _ in range(3)]
        try:
            refused = outcome(scheduler.submit(PROMPTS[0], 8, temperature=0.7, seed=2**64))[1]
        except Exception as exc:  # noqa: BLE001 - refused at once is what is expected
            refused = exc
        rest, healthy_error = outcome(healthy)
        assert healthy_error is None and first + rest == expected
        assert isinstance(refused, errors.InvalidRequestError) and refused.detail["param"] == "seed"
        assert str(2**64 - 1) in str(refused)  # says what range to use
        assert len(list(scheduler.submit(PROMPTS[0], 8, temperature=0.7, seed=2**64 - 1))) == 8
    finally:
        scheduler.stop()
