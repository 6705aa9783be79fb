"""Generation: the top-k / top-p property, seeded reproducibility, greedy and exact beam search,
streaming, and clear errors for bad settings and prompts."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lstmkit.data.tokenizers import CharTokenizer, WordTokenizer
from lstmkit.tasks.generation import (
    GenerationConfig,
    filter_logits,
    generate,
    generate_ids,
    sample_next,
    stop_token_id,
)
from lstmkit.tasks.language_model import LanguageModel, LanguageModelConfig

TOKENIZER = CharTokenizer(list("\n abcdefgh"))


@pytest.fixture(scope="module")
def model() -> LanguageModel:
    torch.manual_seed(0)
    config = LanguageModelConfig(embedding_size=8, hidden_size=16, num_layers=2)
    model = LanguageModel(config, TOKENIZER.vocab_size)
    with torch.no_grad():  # a peaky model, so that search strategies disagree
        model.decoder.weight.mul_(30.0)
    return model.eval()


def allowed_tokens(logits: np.ndarray, top_k: int, top_p: float, slack: float = 1e-9) -> set:
    """Reference: the k largest, then the smallest prefix (by probability) reaching top_p."""
    order = np.argsort(-logits, kind="stable")
    if 0 < top_k < len(logits):
        order = order[:top_k]
    probs = np.exp(logits[order] - logits[order].max())
    probs /= probs.sum()
    mass_before = np.cumsum(probs) - probs
    return {int(t) for t, m in zip(order, mass_before, strict=True) if m < top_p + slack}


@settings(max_examples=80, deadline=None)
@given(
    logits=st.lists(st.floats(-8, 8, allow_nan=False), min_size=2, max_size=12, unique=True),
    top_k=st.integers(0, 12),
    top_p=st.floats(0.01, 1.0),
    temperature=st.floats(0.2, 3.0),
    seed=st.integers(0, 2**31),
)
def test_sampling_never_leaves_the_top_k_top_p_set(logits, top_k, top_p, temperature, seed):
    config = GenerationConfig(temperature=temperature, top_k=top_k, top_p=top_p)
    scaled = np.array(logits, dtype=np.float64) / temperature
    allowed = allowed_tokens(scaled, top_k, top_p)
    rows = torch.tensor([logits] * 200, dtype=torch.float64)  # 200 draws at once
    draws = sample_next(rows, config, torch.Generator().manual_seed(seed))
    assert set(draws.tolist()) <= allowed
    kept = torch.isfinite(filter_logits(rows[0] / temperature, top_k, top_p))
    assert set(torch.nonzero(kept).flatten().tolist()) <= allowed
    assert kept.any()


def test_filters_keep_exactly_the_expected_set():
    logits = torch.tensor([math.log(p) for p in (0.5, 0.3, 0.15, 0.05)])
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [True, True, False, False]
    assert torch.isfinite(filter_logits(logits, top_p=0.7)).tolist() == [True, True, False, False]
    assert torch.isfinite(filter_logits(logits, top_p=0.4)).tolist() == [True, False, False, False]
    assert torch.isfinite(filter_logits(logits, top_p=0.9)).tolist() == [True, True, True, False]


def test_seeded_generation_is_reproducible(model):
    config = GenerationConfig(max_new_tokens=40, seed=7)
    first = "".join(generate(model, TOKENIZER, "ab", config))
    assert first == "".join(generate(model, TOKENIZER, "ab", config))
    assert len(first) == 40
    other = "".join(generate(model, TOKENIZER, "ab", GenerationConfig(max_new_tokens=40, seed=8)))
    assert other != first


def test_greedy_is_top_k_one_and_beam_of_one(model):
    prompt = TOKENIZER.encode("ab")
    greedy = list(generate_ids(model, prompt, GenerationConfig(20, strategy="greedy")))
    top1 = list(generate_ids(model, prompt, GenerationConfig(20, top_k=1, seed=3)))
    beam1 = list(generate_ids(model, prompt, GenerationConfig(20, strategy="beam", beam_size=1)))
    assert greedy == top1 == beam1


def sequence_log_prob(model, prompt, continuation):
    ids = torch.tensor([prompt + continuation])
    out = model(ids[:, :-1], targets=ids[:, 1:])
    return -out.nll[0, len(prompt) - 1 :].sum().item()


def test_beam_search_with_a_full_beam_is_exhaustive(model):
    prompt = TOKENIZER.encode("ha")
    config = GenerationConfig(max_new_tokens=2, strategy="beam", beam_size=TOKENIZER.vocab_size)
    beam = list(generate_ids(model, prompt, config))
    scores = {
        pair: sequence_log_prob(model, prompt, list(pair))
        for pair in itertools.product(range(TOKENIZER.vocab_size), repeat=2)
    }
    best = max(scores, key=scores.get)
    assert scores[tuple(beam)] == pytest.approx(scores[best], abs=1e-5)


def test_tokens_are_streamed_one_piece_at_a_time(model):
    config = GenerationConfig(max_new_tokens=12, seed=1)
    pieces = list(generate(model, TOKENIZER, "a", config))
    ids = list(generate_ids(model, TOKENIZER.encode("a"), config))
    assert len(pieces) == 12 and all(len(p) == 1 for p in pieces)
    assert "".join(pieces) == TOKENIZER.decode(ids)
    assert model.training is False  # the mode is restored


def test_generation_settings_are_checked():
    cases = [
        ({"top_p": 0.0}, "top_p must be a number in \\(0, 1\\], got 0.0"),
        ({"top_p": 1.5}, "top_p must be a number in \\(0, 1\\], got 1.5"),
        ({"temperature": 0.0}, "temperature must be a number > 0, got 0.0"),
        ({"temperature": -1.0}, "temperature must be a number > 0, got -1.0"),
        ({"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1, got 0"),
        ({"top_k": -1}, "top_k must be an integer >= 0, got -1"),
        ({"strategy": "nucleus"}, "strategy must be one of 'sample', 'greedy', 'beam'"),
    ]
    for changes, message in cases:
        with pytest.raises(ValueError, match=message):
            GenerationConfig(**changes)


def test_prompts_the_vocabulary_cannot_express_are_errors(model):
    config = GenerationConfig(max_new_tokens=3)
    with pytest.raises(ValueError, match="the prompt has 2 character\\(s\\) the vocabulary lacks"):
        next(generate(model, TOKENIZER, "abXZ", config))
    with pytest.raises(ValueError, match="prompt must be a non-empty string"):
        next(generate(model, TOKENIZER, "", config))
    words = WordTokenizer(["<unk>", "<eos>", "a"])
    with pytest.raises(ValueError, match="the prompt ' ' has no tokens"):
        next(generate(model, words, " ", config))


@pytest.mark.parametrize("strategy", ["sample", "greedy"])
def test_a_stop_token_ends_the_continuation_where_it_first_appears(model, strategy):
    full = GenerationConfig(max_new_tokens=60, strategy=strategy, seed=5)
    text = "".join(generate(model, TOKENIZER, "ab", full))
    stop = next(c for c in text if text.index(c) > 0)  # a token that first appears later
    stopped = GenerationConfig(max_new_tokens=60, strategy=strategy, seed=5, stop=stop)
    assert "".join(generate(model, TOKENIZER, "ab", stopped)) == text[: text.index(stop) + 1]


def best_by_enumeration(model, prompt, stop_id, max_new, penalty):
    """Every continuation of at most ``max_new`` tokens that ends at its first stop or at
    ``max_new``, scored as beam search ranks finished ones: log p / length ** penalty."""
    best, best_score = None, -math.inf
    vocab = range(TOKENIZER.vocab_size)
    for length in range(1, max_new + 1):
        for seq in itertools.product(vocab, repeat=length):
            if stop_id in seq[:-1] or (length < max_new and seq[-1] != stop_id):
                continue
            score = sequence_log_prob(model, prompt, list(seq)) / length**penalty
            if score > best_score:
                best, best_score = list(seq), score
    return best


@pytest.mark.parametrize("penalty", [0.0, 1.0, 3.0])
def test_beam_search_with_a_stop_ranks_finished_beams_by_length_penalty(model, penalty):
    prompt = TOKENIZER.encode("ha")
    first = next(generate_ids(model, prompt, GenerationConfig(1, strategy="greedy")))
    stop = TOKENIZER.decode([first])  # the likeliest first token: stopping competes
    config = GenerationConfig(
        max_new_tokens=2,
        strategy="beam",
        beam_size=TOKENIZER.vocab_size,  # a full beam is exhaustive over two steps
        stop=stop,
        length_penalty=penalty,
    )
    beam = list(generate_ids(model, prompt, config, stop_id=first))
    assert beam == best_by_enumeration(model, prompt, first, 2, penalty)
    assert "".join(generate(model, TOKENIZER, "ha", config)) == TOKENIZER.decode(beam)


def test_length_penalty_moves_beam_search_between_short_and_long(model):
    prompt = TOKENIZER.encode("ha")
    first = next(generate_ids(model, prompt, GenerationConfig(1, strategy="greedy")))
    lengths = {
        penalty: len(
            list(
                generate_ids(
                    model,
                    prompt,
                    GenerationConfig(8, strategy="beam", beam_size=3, length_penalty=penalty),
                    stop_id=first,
                )
            )
        )
        for penalty in (0.0, 10.0)
    }
    assert lengths[0.0] == 1  # raw sums: the likeliest first token is a stop, and it ends there
    assert lengths[10.0] > 1


def test_stop_settings_are_checked(model):
    with pytest.raises(ValueError, match="stop must be a non-empty string or None, got ''"):
        GenerationConfig(stop="")
    with pytest.raises(
        ValueError, match="length_penalty must be a number in \\[-10, 10\\], got nan"
    ):
        GenerationConfig(length_penalty=float("nan"))
    with pytest.raises(ValueError, match="length_penalty must be a number in .* got 500"):
        GenerationConfig(length_penalty=500)
    with pytest.raises(ValueError, match="stop must be exactly one token .* 'ab', which encodes"):
        next(generate(model, TOKENIZER, "a", GenerationConfig(stop="ab")))
    with pytest.raises(ValueError, match="stop 'Z' is not in the vocabulary"):
        next(generate(model, TOKENIZER, "a", GenerationConfig(stop="Z")))
    words = WordTokenizer(["<unk>", "<eos>", "a"])
    assert stop_token_id(words, "<eos>") == stop_token_id(words, "\n") == words.eos_id
    with pytest.raises(ValueError, match="stop 'zz' is not in the vocabulary"):
        stop_token_id(words, "zz")
