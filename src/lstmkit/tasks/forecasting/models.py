"""Forecasting networks built on ``lstmkit.nn.LSTM``; each maps a window batch to quantiles.

Every model reads the dict a ``WindowDataset`` yields and returns (B, H, C, Q): H horizon
steps, C target channels, Q quantiles (Q = 1 for a point forecast).

- ``direct``: an LSTM encodes the input window; one linear head emits all H steps at once.
- ``autoregressive``: the encoder's state seeds a decoder LSTM that forecasts one step at a
  time, feeding each point forecast back in (recursive decoding).
- ``segment``: the SegRNN design (Lin et al. 2023) with an LSTM: the input is cut into segments
  of ``segment_len`` steps, each embedded as one token; the decoder starts every output segment
  in parallel from the encoder state with a position (+ channel) embedding (parallel multi-step
  forecasting). Channels share weights (channel independence).

        input (L steps)  |seg|seg|seg|seg|      -> 4 tokens -> LSTM -> h
        output (H steps) |pos1|pos2|            -> h ⟶ LSTM step each (in parallel) -> segment

Inputs are normalised per window (``normalization``): "revin" (instance normalisation with a
learnable affine map, Kim et al. 2022), "last" (subtract the last value), or "none"; outputs
are mapped back exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lstmkit.nn import LSTM, LSTMConfig
from lstmkit.nn.dropout import Dropout
from lstmkit.nn.validation import check_choice, check_positive_int, check_probability
from lstmkit.tasks.forecasting.decoding import decode_step

MODEL_KINDS = ("direct", "autoregressive", "segment")
NORMALIZATIONS = ("revin", "last", "none")


@dataclass(frozen=True)
class ModelConfig:
    """The forecasting network."""

    kind: str = "direct"  # "direct", "autoregressive" or "segment"
    hidden_size: int = 64  # LSTM units
    num_layers: int = 1  # stacked LSTM layers
    dropout: float = 0.0  # before the output head
    segment_len: int = 12  # segment model: steps per segment (divides input_len and horizon)
    normalization: str = "revin"  # per-window input normalisation: "revin", "last", "none"
    lstm: Mapping[str, Any] = field(default_factory=dict)  # more LSTM options (cell, dropouts)

    def __post_init__(self) -> None:
        check_choice("model.kind", self.kind, MODEL_KINDS)
        check_positive_int("model.hidden_size", self.hidden_size)
        check_positive_int("model.num_layers", self.num_layers)
        check_probability("model.dropout", self.dropout)
        check_positive_int("model.segment_len", self.segment_len)
        check_choice("model.normalization", self.normalization, NORMALIZATIONS)
        if not isinstance(self.lstm, Mapping):
            raise ValueError(f"model.lstm must be a mapping of LSTM options, got {self.lstm!r}")
        fixed = {
            "input_size",
            "hidden_size",
            "num_layers",
            "batch_first",
            "bidirectional",
            "proj_size",
        }
        reserved = fixed & set(self.lstm)
        if reserved:
            raise ValueError(
                f"model.lstm must not set {sorted(reserved)}: the forecasting models fix them "
                "(use model.hidden_size and model.num_layers)"
            )
        options = {f.name for f in dataclasses.fields(LSTMConfig)} - fixed
        unknown = sorted(set(self.lstm) - options)
        if unknown:
            raise ValueError(
                f"unknown LSTM option(s) in model.lstm: {unknown}; known: {sorted(options)}"
            )
        LSTMConfig(1, self.hidden_size, self.num_layers, **self.lstm)  # validates the options


@dataclass(frozen=True)
class Shapes:
    """Sizes the data fixes: window lengths and feature counts."""

    input_len: int
    horizon: int
    n_targets: int
    n_past: int  # covariates seen over the input window (past and known-future ones)
    n_future: int  # known-future covariates over the horizon
    n_static: int
    quantiles: tuple[float, ...] = ()  # empty: point forecast

    @property
    def n_outputs(self) -> int:
        return max(1, len(self.quantiles))


class WindowNorm(nn.Module):
    """Per-window, per-channel normalisation of the target history, and its exact inverse."""

    def __init__(self, kind: str, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.kind, self.eps = kind, eps
        if kind == "revin":  # gain = exp(log_gain) > 0 keeps the quantile order through inverse
            self.log_gain = nn.Parameter(torch.zeros(channels))
            self.shift = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x (B, L, C) -> normalised x, (centre, scale) each (B, 1, C)."""
        if self.kind == "none":
            return x, (torch.zeros_like(x[:, :1]), torch.ones_like(x[:, :1]))
        if self.kind == "last":
            centre = x[:, -1:].detach()
            return x - centre, (centre, torch.ones_like(centre))
        centre = x.mean(dim=1, keepdim=True).detach()
        scale = (x.var(dim=1, keepdim=True, unbiased=False) + self.eps).sqrt().detach()
        return (x - centre) / scale * self.log_gain.exp() + self.shift, (centre, scale)

    def inverse(self, y: Tensor, stats: tuple[Tensor, Tensor]) -> Tensor:
        """y (B, H, C, Q) back to the input's scale."""
        centre, scale = (s.unsqueeze(-1) for s in stats)  # (B, 1, C, 1)
        if self.kind == "revin":
            y = (y - self.shift[:, None]) / self.log_gain.exp()[:, None]
        return y * scale + centre


def monotone_quantiles(raw: Tensor) -> Tensor:
    """Non-crossing quantiles: the first output, then positive increments (softplus) on top."""
    if raw.shape[-1] == 1:
        return raw
    steps = nn.functional.softplus(raw[..., 1:])
    return torch.cat([raw[..., :1], raw[..., :1] + steps.cumsum(dim=-1)], dim=-1)


class DirectForecaster(nn.Module):
    """LSTM encoder over the window; a linear head emits all H steps (and quantiles) at once."""

    def __init__(self, config: ModelConfig, shapes: Shapes) -> None:
        super().__init__()
        self.shapes = shapes
        c = shapes.n_targets
        self.norm = WindowNorm(config.normalization, c)
        self.encoder = _lstm(config, c + shapes.n_past + shapes.n_static)
        self.dropout = Dropout(config.dropout)
        head_in = config.hidden_size + shapes.horizon * shapes.n_future + shapes.n_static
        self.head = nn.Linear(head_in, shapes.horizon * c * shapes.n_outputs)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        s = self.shapes
        x, stats = self.norm(batch["past_target"])  # (B, L, C)
        enc_in = _with_features(x, batch["past_covariates"], batch["static"])
        _, (h_n, _) = self.encoder(enc_in)
        parts = [h_n[-1], batch["future_covariates"].flatten(1), batch["static"]]
        raw = self.head(self.dropout(torch.cat(parts, dim=-1)))
        raw = raw.view(-1, s.horizon, s.n_targets, s.n_outputs)
        return self.norm.inverse(monotone_quantiles(raw), stats)


class AutoregressiveForecaster(nn.Module):
    """Encoder-decoder: the decoder forecasts one step at a time from its own previous output."""

    def __init__(self, config: ModelConfig, shapes: Shapes) -> None:
        super().__init__()
        self.shapes = shapes
        c = shapes.n_targets
        self.norm = WindowNorm(config.normalization, c)
        self.encoder = _lstm(config, c + shapes.n_past + shapes.n_static)
        self.decoder = _lstm(config, c + shapes.n_future + shapes.n_static)
        self.dropout = Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, c * shapes.n_outputs)
        self.point = shapes.quantiles.index(0.5) if shapes.quantiles else 0

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        s = self.shapes
        x, stats = self.norm(batch["past_target"])  # (B, L, C)
        _, state = self.encoder(_with_features(x, batch["past_covariates"], batch["static"]))
        previous = x[:, -1:]  # (B, 1, C) the last observed value, normalised
        steps = []
        for k in range(s.horizon):
            future = batch["future_covariates"][:, k : k + 1]  # (B, 1, F)
            out, state = self.decoder(_with_features(previous, future, batch["static"]), state)
            raw = self.head(self.dropout(out[:, 0])).view(-1, 1, s.n_targets, s.n_outputs)
            step = monotone_quantiles(raw)  # (B, 1, C, Q)
            steps.append(step)
            previous = step[..., self.point]  # feed the point forecast back in
        return self.norm.inverse(torch.cat(steps, dim=1), stats)


class SegmentForecaster(nn.Module):
    """SegRNN with an LSTM: segment tokens in, parallel multi-step segment decoding out."""

    def __init__(self, config: ModelConfig, shapes: Shapes) -> None:
        super().__init__()
        w = config.segment_len
        for name, length in (("input_len", shapes.input_len), ("horizon", shapes.horizon)):
            if length % w:
                raise ValueError(f"model.segment_len ({w}) must divide {name} ({length})")
        if shapes.n_past or shapes.n_future or shapes.n_static:
            raise ValueError(
                "the segment model reads only the target history; remove the "
                "covariates or use model.kind='direct' or 'autoregressive'"
            )
        if config.hidden_size % 2:
            raise ValueError(
                f"the segment model splits hidden_size between position and "
                f"channel embeddings, so it must be even; got {config.hidden_size}"
            )
        self.shapes, self.w = shapes, w
        d, c = config.hidden_size, shapes.n_targets
        self.norm = WindowNorm(config.normalization, c)
        self.embed = nn.Sequential(nn.Linear(w, d), nn.ReLU())
        self.encoder = LSTM(d, d, config.num_layers, **config.lstm)
        self.position = nn.Parameter(torch.randn(shapes.horizon // w, d // 2))
        self.channel = nn.Parameter(torch.randn(c, d // 2))
        self.dropout = Dropout(config.dropout)
        self.head = nn.Linear(d, w * shapes.n_outputs)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        s, w = self.shapes, self.w
        x, stats = self.norm(batch["past_target"])  # (B, L, C)
        b, c = x.shape[0], s.n_targets
        segments = x.permute(0, 2, 1).reshape(b * c, s.input_len // w, w)  # (B*C, n, w)
        _, (h_n, c_n) = self.encoder(self.embed(segments))  # (layers, B*C, d)
        m = s.horizon // w
        queries = torch.cat(
            [
                self.position.unsqueeze(0).expand(c, -1, -1),  # (C, m, d/2)
                self.channel.unsqueeze(1).expand(-1, m, -1),  # (C, m, d/2)
            ],
            dim=-1,
        )  # (C, m, d)
        state = (h_n.view(-1, b, c, h_n.shape[-1]), c_n.view(-1, b, c, c_n.shape[-1]))
        out = decode_step(self.encoder, queries, state)  # (B, C, m, d), one step per segment
        raw = self.head(self.dropout(out.reshape(b * c * m, -1)))  # (B*C*m, w*Q)
        raw = raw.view(b, c, m * w, s.n_outputs).permute(0, 2, 1, 3)  # (B, H, C, Q)
        return self.norm.inverse(monotone_quantiles(raw), stats)


MODELS: dict[str, type[nn.Module]] = {
    "direct": DirectForecaster,
    "autoregressive": AutoregressiveForecaster,
    "segment": SegmentForecaster,
}


def build_model(config: ModelConfig, shapes: Shapes) -> nn.Module:
    return MODELS[config.kind](config, shapes)


def _lstm(config: ModelConfig, input_size: int) -> LSTM:
    """An LSTM of the configured size and options reading ``input_size`` features per step."""
    return LSTM(input_size, config.hidden_size, config.num_layers, **config.lstm)


def _with_features(x: Tensor, covariates: Tensor, static: Tensor) -> Tensor:
    """Concatenate per-step covariates and the (repeated) static features to x (B, T, C)."""
    parts = [x]
    if covariates.shape[-1]:
        parts.append(covariates)
    if static.shape[-1]:
        parts.append(static.unsqueeze(1).expand(-1, x.shape[1], -1))
    return torch.cat(parts, dim=-1) if len(parts) > 1 else x
