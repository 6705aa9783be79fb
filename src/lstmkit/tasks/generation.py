"""Text generation from a language model: greedy, sampling (temperature, top-k, top-p), beam search.

The model reads the prompt once, then one token at a time with its state carried (the LSTM never
re-reads the text). ``generate`` is a generator: it yields each new piece of text as soon as its
token is chosen, so a caller can stream it to a terminal (the CLI does).

Sampling, per step (as Hugging Face ``generate``): logits / temperature, keep the ``top_k``
most likely tokens, then the smallest set of those whose probability adds up to ``top_p``
(nucleus sampling, Holtzman et al. 2020), renormalise and draw with a seeded generator.
Beam search keeps the ``beam_size`` highest-scoring continuations (sum of log-probabilities).

``stop`` names one token (``"\\n"`` for characters, ``"<eos>"`` for words) that ends the
continuation; it is included in the output. A beam that produces it is finished and ranked by
``sum of log-probabilities / length ** length_penalty`` (Hugging Face's convention: 0 compares
raw sums and favours short continuations, larger values favour long ones). As in Hugging Face's
default, the search ends once ``beam_size`` continuations are finished and none of the running
beams scores better than the worst of them; else at ``max_new_tokens``, where running beams
compete with the finished ones under the same normalisation.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from lstmkit.data.tokenizers import Tokenizer
from lstmkit.nn.validation import check_choice
from lstmkit.tasks.language_model import LanguageModel

log = logging.getLogger(__name__)

STRATEGIES = ("sample", "greedy", "beam")


@dataclass(frozen=True)
class GenerationConfig:
    """How to continue a prompt; invalid values raise ``ValueError`` naming field and value."""

    max_new_tokens: int = 200  # tokens to generate (at least 1)
    strategy: str = "sample"  # "sample", "greedy" or "beam"
    temperature: float = 1.0  # sample: > 0; below 1 sharpens, above 1 flattens
    top_k: int = 0  # sample: keep the k most likely tokens; 0 = all
    top_p: float = 1.0  # sample: nucleus mass in (0, 1]; 1 = all
    beam_size: int = 4  # beam: continuations kept
    seed: int = 0  # sample: the draws are reproducible for a seed
    stop: str | None = None  # one token that ends the continuation (kept); None = none
    length_penalty: float = 1.0  # beam, in [-10, 10]: finished scores / length ** this

    def __post_init__(self) -> None:
        _check_int("max_new_tokens", self.max_new_tokens, 1)
        check_choice("strategy", self.strategy, STRATEGIES)
        temperature = self.temperature
        if not _is_real(temperature) or not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
        _check_int("top_k", self.top_k, 0)
        if not _is_real(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be a number in (0, 1], got {self.top_p!r}")
        _check_int("beam_size", self.beam_size, 1)
        _check_int("seed", self.seed, 0)
        if self.stop is not None and (not isinstance(self.stop, str) or not self.stop):
            raise ValueError(f"stop must be a non-empty string or None, got {self.stop!r}")
        penalty = self.length_penalty
        if not _is_real(penalty) or not math.isfinite(penalty) or abs(penalty) > 10:
            raise ValueError(f"length_penalty must be a number in [-10, 10], got {penalty!r}")


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """``logits`` (..., V) with every token outside the top-k / top-p set set to -inf."""
    out = logits.clone()
    if 0 < top_k < logits.shape[-1]:
        kept = torch.topk(logits, top_k, dim=-1).indices  # (..., k)
        mask = torch.ones_like(logits, dtype=torch.bool).scatter_(-1, kept, False)
        out = out.masked_fill(mask, -math.inf)
    if top_p < 1.0:
        # sort the logits, not the probabilities: equal probabilities can have unequal logits
        ranked, order = torch.sort(out, dim=-1, descending=True, stable=True)
        probs = torch.softmax(ranked, dim=-1)  # (..., V), most likely first
        mass_before = torch.cumsum(probs, dim=-1) - probs  # (..., V) mass of the likelier ones
        drop_sorted = mass_before >= top_p  # the most likely token is always kept
        drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
        out = out.masked_fill(drop, -math.inf)
    return out


def sample_next(
    logits: Tensor, config: GenerationConfig, generator: torch.Generator | None = None
) -> Tensor:
    """One token per row of ``logits`` (B, V) -> (B,), by ``config.strategy`` sample or greedy."""
    if config.strategy == "greedy":
        return logits.argmax(dim=-1)
    filtered = filter_logits(logits / config.temperature, config.top_k, config.top_p)
    probs = torch.softmax(filtered.float(), dim=-1)  # (B, V), zero outside the allowed set
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The prompt's ids; a prompt the vocabulary cannot express is a ``ValueError``."""
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt must be a non-empty string (e.g. a newline), got {prompt!r}")
    lacking = tokenizer.missing(prompt)
    if lacking and tokenizer.kind == "char":
        raise ValueError(
            f"the prompt has {len(lacking)} character(s) the vocabulary lacks: "
            f"{''.join(lacking[:20])!r}; use only characters seen in training"
        )
    if lacking:
        log.warning("prompt words read as unknown tokens: %s", lacking[:10])
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ValueError(f"the prompt {prompt!r} has no tokens; give some text (or a newline)")
    return ids


def stop_token_id(tokenizer: Tokenizer, stop: str | None) -> int | None:
    """The id of the ``stop`` token; text that is not exactly one known token is a
    ``ValueError``."""
    if stop is None:
        return None
    lacking = tokenizer.missing(stop)
    if lacking:
        raise ValueError(f"stop {stop!r} is not in the vocabulary (unknown: {lacking[:5]})")
    ids = tokenizer.encode(stop)
    if len(ids) != 1:
        raise ValueError(
            f"stop must be exactly one token of the vocabulary, got {stop!r}, "
            f"which encodes as {len(ids)} tokens"
        )
    return ids[0]


@torch.no_grad()
def generate_ids(
    model: LanguageModel,
    prompt_ids: list[int],
    config: GenerationConfig,
    stop_id: int | None = None,
) -> Iterator[int]:
    """Yield up to ``config.max_new_tokens`` token ids continuing ``prompt_ids``, one at a time,
    ending early after ``stop_id`` (see ``stop_token_id``)."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        prompt = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # (1, T)
        if config.strategy == "beam":
            yield from _beam_search(model, prompt, config, stop_id)
            return
        generator = torch.Generator(device=device).manual_seed(config.seed)
        log_probs, state = model.next_log_probs(prompt)  # (1, V)
        for produced in range(config.max_new_tokens):
            token = sample_next(log_probs, config, generator)  # (1,)
            token_id = int(token.item())
            yield token_id
            if token_id == stop_id:
                return
            if produced + 1 < config.max_new_tokens:
                log_probs, state = model.next_log_probs(token.view(1, 1), state)
    finally:
        model.train(was_training)


def _beam_search(
    model: LanguageModel, prompt: Tensor, config: GenerationConfig, stop_id: int | None
) -> Iterator[int]:
    log_probs, (h, c) = model.next_log_probs(prompt)  # (1, V); (L, 1, P), (L, 1, H)
    vocab = log_probs.shape[-1]
    width = min(config.beam_size, vocab)
    scores = log_probs.new_zeros(1)  # (K,) running sums of log-probabilities, best first
    sequences = prompt.new_empty(1, 0)  # (K, t) the running continuations
    finished: list[tuple[float, list[int]]] = []  # (normalised score, ids)

    def normalised(score: float, length: int) -> float:
        return score / length**config.length_penalty

    for step in range(config.max_new_tokens):
        length = step + 1
        total = (scores[:, None] + log_probs).flatten()  # (K * V,)
        wanted = width if stop_id is None else 2 * width  # enough to refill K after stops
        top, flat = torch.topk(total, min(total.numel(), wanted))
        beam, token = flat // vocab, flat % vocab  # which continuation, which next token
        keep = []
        for rank in range(top.numel()):
            if int(token[rank]) == stop_id:
                if rank < width:  # a stop among the K best candidates finishes its beam
                    ids = [*sequences[beam[rank]].tolist(), stop_id]
                    finished.append((normalised(float(top[rank]), length), ids))
            elif len(keep) < width:
                keep.append(rank)
        chosen = torch.tensor(keep, dtype=torch.long)
        scores, sequences = (
            top[chosen],
            torch.cat([sequences[beam[chosen]], token[chosen, None]], dim=1),
        )
        finished.sort(key=lambda item: item[0], reverse=True)
        del finished[width:]
        if not keep or length == config.max_new_tokens:
            break
        if len(finished) == width and finished[-1][0] >= normalised(float(scores[0]), length):
            break  # no running beam is ahead of the worst finished one
        state = (h[:, beam[chosen]], c[:, beam[chosen]])
        log_probs, (h, c) = model.next_log_probs(sequences[:, -1:], state)  # (K, V)
    running = [
        (normalised(float(s), sequences.shape[1]), sequences[i].tolist())
        for i, s in enumerate(scores)
    ]
    yield from max(finished + running, key=lambda item: item[0])[1]


def generate(
    model: LanguageModel, tokenizer: Tokenizer, prompt: str, config: GenerationConfig
) -> Iterator[str]:
    """Yield the continuation of ``prompt`` as text, piece by piece as tokens are chosen.

    Pieces are the growth of the decoded text, so a multi-byte character split over BPE tokens
    comes out whole once its last byte arrives.
    """
    ids = encode_prompt(tokenizer, prompt)
    stop_id = stop_token_id(tokenizer, config.stop)
    produced: list[int] = []
    emitted = ""
    for token in generate_ids(model, ids, config, stop_id):
        produced.append(token)
        text = tokenizer.decode(produced)
        if text.endswith("\ufffd"):
            continue  # an incomplete UTF-8 sequence: wait for its remaining bytes
        yield text[len(emitted) :]
        emitted = text
    text = tokenizer.decode(produced)
    if len(text) > len(emitted):
        yield text[len(emitted) :]
