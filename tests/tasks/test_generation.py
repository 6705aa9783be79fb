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
