"""Language modelling: embedding → LSTM stack → output layer, trained on a token stream.

    tokens (B, T) ─embedding (+ embedding_dropout)─► (B, T, E)
        ─LSTM (input_dropout, hidden_dropout between layers, weight_dropout on W_hh)─► raw (B, T, P)
        ─output_dropout (variational)─► dropped (B, T, P) ─[bridge P→E if tied and P ≠ E]─►
        ─decoder (weight tied to the embedding) or adaptive softmax─► log p(next token)

The regularisers are AWD-LSTM's (Merity et al. 2017): embedding dropout (``dropoute``),
variational dropout on the input, between layers and on the output (``dropouti``, ``dropouth``,
``dropout``), weight-drop on the recurrent weights (``wdrop``), activation regularisation
``ar_alpha · mean(dropped²)`` and temporal activation regularisation
``tar_beta · mean((raw_t - raw_{t-1})²)``. Weight tying (Press & Wolf 2017; Inan et al. 2017)
shares the embedding matrix with the decoder, so the decoder's input must have the embedding's
size E: when the LSTM's output size P (``hidden_size``, or ``lstm={"proj_size": ...}``) differs,
a linear bridge P → E is added (an LSTMP projection with ``proj_size=E`` avoids it).

Training runs the shared ``Trainer`` on the stream layout of ``lstmkit.data.text``: every batch
is one chunk of all B streams, and the LSTM state is carried across chunks (truncated BPTT).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import numbers
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lstmkit.data.text import StreamChunk, StreamDataset, batchify, first_item
from lstmkit.data.tokenizers import (
    TOKENIZER_KINDS,
    Tokenizer,
    fit_tokenizer,
    tokenizer_from_dict,
)
from lstmkit.nn import LSTM, LockedDropout, LSTMConfig
from lstmkit.nn.embedding_dropout import EmbeddingDropout
from lstmkit.nn.validation import check_choice, check_positive_int, check_probability
from lstmkit.training import FitResult, StepOutput, TrainConfig, Trainer, load_weights
from lstmkit.training.checkpoint import (
    atomic_write_text,
    load_checkpoint,
    read_checkpoint_state,
)

log = logging.getLogger(__name__)

TASK = "language_model"
State = tuple[Tensor, Tensor]
# set on LanguageModelConfig itself, or meaningless for a left-to-right language model
_OWN_LSTM_OPTIONS = (
    "input_size",
    "hidden_size",
    "num_layers",
    "batch_first",
    "bidirectional",
    "input_dropout",
    "hidden_dropout",
    "output_dropout",
    "weight_dropout",
)


@dataclass(frozen=True)
class LanguageModelConfig:
    """Tokens, model, regularisers and stream layout; saved with every checkpoint."""

    # Tokens
    tokenizer: str = "char"  # "char", "word" or "bpe"
    vocab_size: int = 0  # word: most frequent words kept (0 = all); bpe: vocabulary size
    min_freq: int = 1  # word/bpe: rarer words (pairs) are unknown (not merged)
    # Model
    embedding_size: int = 128  # E
    hidden_size: int = 256  # H, LSTM units per layer
    num_layers: int = 2
    tie_weights: bool = True  # decoder weight = embedding matrix (Press & Wolf 2017)
    adaptive_softmax: bool = False  # torch's AdaptiveLogSoftmaxWithLoss (Grave et al. 2017)
    cutoffs: tuple[int, ...] = ()  # adaptive softmax clusters; () = (V // 10, V // 3)
    div_value: float = 4.0  # adaptive softmax: each tail cluster is this much narrower
    lstm: Mapping[str, Any] = field(default_factory=dict)  # more LSTM options (cell, backend, ...)
    # Regularisation (AWD-LSTM's name in brackets)
    embedding_dropout: float = 0.0  # whole word types [dropoute]
    input_dropout: float = 0.0  # variational, on the embeddings [dropouti]
    hidden_dropout: float = 0.0  # variational, between LSTM layers [dropouth]
    output_dropout: float = 0.0  # variational, on the top layer's output [dropout]
    weight_dropout: float = 0.0  # DropConnect on W_hh [wdrop]
    ar_alpha: float = 0.0  # activation regularisation [alpha]
    tar_beta: float = 0.0  # temporal activation regularisation [beta]
    # Stream layout
    bptt: int = 128  # steps per chunk (truncated BPTT length)
    variable_bptt: bool = False  # AWD-LSTM's random chunk lengths around bptt
    batch_streams: int = 32  # B: parallel streams in training
    eval_streams: int = 8  # B for validation and evaluation
    seed: int = 0  # initialisation

    def __post_init__(self) -> None:
        check_choice("tokenizer", self.tokenizer, TOKENIZER_KINDS)
        for name in ("vocab_size", "min_freq", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.tokenizer == "bpe" and self.vocab_size < 257:
            raise ValueError(
                f"vocab_size must be at least 257 with tokenizer='bpe' (256 bytes + merges), "
                f"got {self.vocab_size}"
            )
        for name in (
            "embedding_size",
            "hidden_size",
            "num_layers",
            "bptt",
            "batch_streams",
            "eval_streams",
        ):
            check_positive_int(name, getattr(self, name))
        for name in ("tie_weights", "adaptive_softmax", "variable_bptt"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in (
            "embedding_dropout",
            "input_dropout",
            "hidden_dropout",
            "output_dropout",
            "weight_dropout",
        ):
            check_probability(name, getattr(self, name))
        for name in ("ar_alpha", "tar_beta", "div_value"):
            value = getattr(self, name)
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if self.div_value <= 0:
            raise ValueError(f"div_value must be a positive number, got {self.div_value!r}")
        cutoffs = self.cutoffs
        if not isinstance(cutoffs, tuple | list) or not all(
            isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in cutoffs
        ):
            raise ValueError(f"cutoffs must be positive integers, got {cutoffs!r}")
        if list(cutoffs) != sorted(set(cutoffs)):
            raise ValueError(f"cutoffs must be strictly increasing, got {cutoffs!r}")
        object.__setattr__(self, "cutoffs", tuple(cutoffs))
        if self.adaptive_softmax and self.tie_weights:
            raise ValueError(
                "tie_weights=True cannot be used with adaptive_softmax=True: the adaptive "
                "softmax's clusters have their own narrower weights; set tie_weights=False"
            )
        self._check_lstm_options()

    def _check_lstm_options(self) -> None:
        if not isinstance(self.lstm, Mapping):
            raise ValueError(f"lstm must be a mapping of LSTM options, got {self.lstm!r}")
        clash = sorted(set(self.lstm) & set(_OWN_LSTM_OPTIONS))
        if clash:
            raise ValueError(
                f"lstm options {clash} are not allowed here: sizes and dropouts are fields of "
                "LanguageModelConfig, and a language model reads left to right (no bidirectional)"
            )
        LSTMConfig(self.embedding_size, self.hidden_size, self.num_layers, **self.lstm)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["cutoffs"], data["lstm"] = list(self.cutoffs), dict(self.lstm)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LanguageModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown language model option(s) {unknown}; known: {sorted(known)}")
        values = dict(data)
        if "cutoffs" in values:
            values["cutoffs"] = tuple(values["cutoffs"])
        return cls(**values)


class LMOutput(NamedTuple):
    raw: Tensor  # (B, T, P) top LSTM layer's output, before output dropout (for TAR)
    dropped: Tensor  # (B, T, P) after output dropout (for AR; what the output layer reads)
    state: State  # (h_n, c_n) to carry into the next chunk
    nll: Tensor | None  # (B, T) -log p(target) when targets were given


class LanguageModel(nn.Module):
    """The language model of the module docstring, for a vocabulary of ``vocab_size`` tokens."""

    def __init__(self, config: LanguageModelConfig, vocab_size: int) -> None:
        super().__init__()
        check_positive_int("vocab_size", vocab_size)
        self.config, self.vocab_size = config, vocab_size
        emb = config.embedding_size
        self.embedding = nn.Embedding(vocab_size, emb)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)  # as AWD-LSTM
        self.embedding_dropout = EmbeddingDropout(config.embedding_dropout)
        self.lstm = LSTM(
            emb,
            config.hidden_size,
            config.num_layers,
            input_dropout=config.input_dropout,
            hidden_dropout=config.hidden_dropout,
            weight_dropout=config.weight_dropout,
            **config.lstm,
        )
        self.output_dropout = LockedDropout(config.output_dropout)
        out_size = self.lstm.config.output_size  # P
        self.bridge = nn.Linear(out_size, emb) if config.tie_weights and out_size != emb else None
        features = emb if config.tie_weights else out_size
        self.decoder: nn.Linear | None = None
        self.adaptive: nn.AdaptiveLogSoftmaxWithLoss | None = None
        if config.adaptive_softmax:
            cutoffs = config.cutoffs or tuple(
                sorted({c for c in (vocab_size // 10, vocab_size // 3) if 0 < c < vocab_size})
            )
            if not cutoffs or cutoffs[-1] >= vocab_size:
                raise ValueError(
                    f"cutoffs must lie in [1, {vocab_size - 1}] for a vocabulary of {vocab_size} "
                    f"tokens, got {cutoffs!r}"
                )
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(
                features, vocab_size, list(cutoffs), div_value=config.div_value
            )
        else:
            self.decoder = nn.Linear(features, vocab_size)
            nn.init.zeros_(self.decoder.bias)
            if config.tie_weights:
                self.decoder.weight = self.embedding.weight  # (V, E), one shared parameter

    def forward(
        self, tokens: Tensor, state: State | None = None, targets: Tensor | None = None
    ) -> LMOutput:
        """``tokens`` (B, T) from ``state`` (None: zeros); ``nll`` (B, T) of ``targets``."""
        x = self.embedding_dropout(tokens, self.embedding.weight)  # (B, T, E)
        raw, new_state = self.lstm(x, state)  # (B, T, P)
        dropped = self.output_dropout(raw.transpose(0, 1)).transpose(0, 1)  # mask per stream
        nll = None if targets is None else self.nll(dropped, targets)
        return LMOutput(raw, dropped, new_state, nll)

    def nll(self, dropped: Tensor, targets: Tensor) -> Tensor:
        """-log p(targets) (B, T) from the LSTM's (dropped-out) output (B, T, P)."""
        features = self._features(dropped).flatten(0, 1)  # (B*T, F)
        if self.adaptive is not None:
            target_log_prob = self.adaptive(features, targets.flatten()).output  # (B*T,)
            return -target_log_prob.view(targets.shape)
        logits = self.decoder(features)  # (B*T, V)
        return F.cross_entropy(logits, targets.flatten(), reduction="none").view(targets.shape)

    def log_probs(self, dropped: Tensor) -> Tensor:
        """log p(next token) (..., V) from the LSTM's output (..., P)."""
        features = self._features(dropped)
        if self.adaptive is not None:
            flat = self.adaptive.log_prob(features.reshape(-1, features.shape[-1]))
            return flat.view(*features.shape[:-1], self.vocab_size)
        return F.log_softmax(self.decoder(features), dim=-1)

    def _features(self, dropped: Tensor) -> Tensor:
        return dropped if self.bridge is None else self.bridge(dropped)

    def next_log_probs(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Read ``tokens`` (B, T); log p of the token after the last one (B, V), and the state."""
        out = self(tokens, state)
        return self.log_probs(out.dropped[:, -1]), out.state

    def num_parameters(self) -> int:
        """Distinct trainable parameters (a tied matrix counts once)."""
        return sum(p.numel() for p in self.parameters())


class LanguageModelStep:
    """The ``step_fn`` for the Trainer: mean NLL of one chunk, plus AR/TAR while training.

    A chunk with ``reset`` starts a pass, so the carried state is dropped. ``validation_starts``
    records (seconds since the first call, training chunks seen) when each validation begins.
    """

    def __init__(self, ar_alpha: float = 0.0, tar_beta: float = 0.0) -> None:
        self.ar_alpha, self.tar_beta = ar_alpha, tar_beta
        self.train_chunks = 0
        self.validation_starts: list[tuple[float, int]] = []
        self._start: float | None = None

    def __call__(self, model: nn.Module, chunk: StreamChunk, state: Any) -> StepOutput:
        now = time.perf_counter()
        self._start = now if self._start is None else self._start
        if chunk.reset:
            state = None
            if not model.training:
                self.validation_starts.append((now - self._start, self.train_chunks))
        out = model(chunk.inputs, state, chunk.targets)
        loss = out.nll.mean()
        if model.training:
            self.train_chunks += 1
            if self.ar_alpha:
                loss = loss + self.ar_alpha * out.dropped.pow(2).mean()
            if self.tar_beta and out.raw.shape[1] > 1:
                loss = loss + self.tar_beta * (out.raw[:, 1:] - out.raw[:, :-1]).pow(2).mean()
        return StepOutput(loss, weight=float(out.nll.numel()), state=out.state)


@dataclass(frozen=True)
class LMEvaluation:
    """Cross-entropy, perplexity and bits per character from a summed NLL."""

    nll_sum: float  # nats, over every predicted token
    tokens: int  # predicted tokens
    characters: int  # characters of the predicted tokens' text

    @property
    def cross_entropy(self) -> float:
        """Mean NLL in nats per token."""
        return self.nll_sum / self.tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.cross_entropy)

    @property
    def bits_per_char(self) -> float:
        return self.nll_sum / self.characters / math.log(2)

    def to_dict(self) -> dict[str, float]:
        return {
            "cross_entropy": self.cross_entropy,
            "perplexity": self.perplexity,
            "bits_per_char": self.bits_per_char,
            "tokens": self.tokens,
            "characters": self.characters,
        }


@torch.no_grad()
def evaluate_language_model(
    model: LanguageModel,
    tokenizer: Tokenizer,
    text: str | Sequence[int],
    *,
    streams: int = 1,
    bptt: int = 256,
) -> LMEvaluation:
    """Score ``text`` (or token ids) in ``streams`` parallel streams, state carried over chunks.

    Each stream's first token has no context and is not scored; ``N % streams`` tokens at the
    end are dropped (see ``batchify``).
    """
    ids = tokenizer.encode(text) if isinstance(text, str) else list(text)
    stream = batchify(ids, streams)  # (B, M)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    nll_sum, state = 0.0, None
    for chunk in StreamDataset.passes(stream, bptt):
        out = model(chunk.inputs.to(device), state, chunk.targets.to(device))
        nll_sum += out.nll.double().sum().item()
        state = out.state
    model.train(was_training)
    characters = sum(len(tokenizer.decode(row[1:].tolist())) for row in stream)
    return LMEvaluation(nll_sum, stream.shape[0] * (stream.shape[1] - 1), characters)


@dataclass
class LMTrainResult:
    model: LanguageModel
    tokenizer: Tokenizer
    fit: FitResult
    validation: LMEvaluation  # of the returned weights (the best, with early stopping)
    parameters: int
    history: list[dict[str, float]]  # one row per validation, with "seconds" of wall time


def train_language_model(
    config: LanguageModelConfig,
    train_text: str,
    val_text: str,
    train: TrainConfig | None = None,
    *,
    run_dir: str | Path | None = None,
    tokenizer: Tokenizer | None = None,
    resume: bool = False,
) -> LMTrainResult:
    """Fit a tokenizer (unless given), then train with the shared ``Trainer``.

    ``train.max_epochs`` passes over the training stream make one Trainer epoch, whose chunks
    each pass redraws (variable BPTT), with a validation and a checkpoint after every pass
    unless ``eval_every``/``checkpoint_every`` say otherwise. ``batch_size`` and ``shuffle`` are
    set for the stream layout. The character vocabulary is fitted on train + validation text
    (as nanoGPT); word and BPE vocabularies on the training text only.
    """
    train = train or TrainConfig(max_epochs=1)
    if tokenizer is None and resume and run_dir is not None:
        tokenizer = _saved_tokenizer(Path(run_dir) / "checkpoints" / "last.safetensors")
    if tokenizer is None:
        corpus = train_text + val_text if config.tokenizer == "char" else train_text
        tokenizer = fit_tokenizer(config.tokenizer, corpus, config.vocab_size, config.min_freq)
    train_stream = batchify(tokenizer.encode(train_text), config.batch_streams)  # (B, M)
    val_stream = batchify(tokenizer.encode(val_text), config.eval_streams)
    passes = train.max_epochs
    train_set = StreamDataset.passes(
        train_stream, config.bptt, passes, variable=config.variable_bptt, seed=train.seed
    )
    val_set = StreamDataset.passes(val_stream, config.bptt)
    per_pass = max(1, round(len(train_set) / passes))
    trainer_config = replace(
        train,
        max_epochs=1,
        batch_size=1,
        shuffle=False,
        eval_every=train.eval_every or per_pass,
        checkpoint_every=train.checkpoint_every or train.eval_every or per_pass,
    )
    torch.manual_seed(config.seed)
    model = LanguageModel(config, tokenizer.vocab_size)
    log.info("language model: %d parameters, %s", model.num_parameters(), model.lstm.extra_repr())
    step = LanguageModelStep(config.ar_alpha, config.tar_beta)
    trainer = Trainer(
        model,
        step,
        trainer_config,
        run_dir=run_dir,
        collate_fn=first_item,
        saved_config={"task": TASK, TASK: config.to_dict(), "passes": passes},
        checkpoint_extras={"tokenizer": tokenizer.to_dict()},  # in checkpoints, not config.json
    )
    fit = trainer.fit(train_set, val_set, resume=resume)
    model.cpu()
    validation = evaluate_language_model(
        model, tokenizer, val_stream.flatten().tolist(), streams=config.eval_streams
    )
    # this call's validations are the last ones (a resumed run's history starts earlier)
    timed = fit.history[len(fit.history) - len(step.validation_starts) :]
    history = fit.history[: len(fit.history) - len(timed)] + [
        {**row, "seconds": seconds}
        for row, (seconds, _) in zip(timed, step.validation_starts, strict=True)
    ]
    result = LMTrainResult(model, tokenizer, fit, validation, model.num_parameters(), history)
    if run_dir is not None:
        write_metrics(Path(run_dir), result)
    return result


def _saved_tokenizer(checkpoint: Path) -> Tokenizer | None:
    """The tokenizer stored in ``checkpoint``, if it exists (to resume with the same ids)."""
    if not checkpoint.exists():
        return None
    return tokenizer_from_dict(read_checkpoint_state(checkpoint)["extras"]["tokenizer"])


def write_metrics(run_dir: Path, result: LMTrainResult) -> None:
    """``metrics.json`` of a run: the validation figures, size, time and history."""
    summary = {
        "validation": result.validation.to_dict(),
        "parameters": result.parameters,
        "steps": result.fit.steps,
        "train_seconds": result.fit.seconds,
        "reason": result.fit.reason,
        "history": result.history,
    }
    atomic_write_text(run_dir / "metrics.json", json.dumps(summary, indent=2))


class LoadedLanguageModel(NamedTuple):
    model: LanguageModel
    tokenizer: Tokenizer
    config: LanguageModelConfig
    path: Path  # the checkpoint read


def load_language_model(path: str | Path) -> LoadedLanguageModel:
    """Model, tokenizer and config from a checkpoint, or from a run directory (its best
    checkpoint, else its last)."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / "checkpoints" / f"{n}.safetensors" for n in ("best", "last")]
        found = [c for c in candidates if c.exists()]
        if not found:
            raise ValueError(f"no checkpoint in the run directory {path} (looked for {candidates})")
        path = found[0]
    elif not path.is_file():
        raise ValueError(f"no checkpoint or run directory at {path}")
    state = load_checkpoint(path)
    saved = state.get("config", {})
    if saved.get("task") != TASK:
        raise ValueError(
            f"{path} is not a language model checkpoint (task {saved.get('task')!r}, "
            f"expected {TASK!r})"
        )
    config = LanguageModelConfig.from_dict(saved[TASK])
    tokenizer = tokenizer_from_dict(state["extras"]["tokenizer"])
    model = LanguageModel(config, tokenizer.vocab_size)
    load_weights(model, state["model"], path)
    model.eval()
    return LoadedLanguageModel(model, tokenizer, config, path)
