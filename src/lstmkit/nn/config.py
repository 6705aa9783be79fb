"""``LSTMConfig``: every option of the LSTM layer, validated, and saved with each checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lstmkit.nn.validation import (
    check_bool,
    check_choice,
    check_nonnegative_int,
    check_positive_int,
    check_probability,
)

CELL_NAMES = ("lstm", "peephole", "layernorm", "cifg")
BACKEND_NAMES = ("auto", "reference", "fused", "kernel", "graphed", "compiled")


@dataclass(frozen=True)
class LSTMConfig:
    """Options of ``lstmkit.nn.LSTM``; invalid values raise ``ValueError`` on construction."""

    input_size: int  # features per time step of the input
    hidden_size: int  # size H of the memory cell and of every gate
    num_layers: int = 1  # stacked layers; each takes the previous one's output
    bidirectional: bool = False  # also run each layer backwards and concatenate
    proj_size: int = 0  # if > 0, project h_t to this size (LSTMP, as torch's proj_size)
    batch_first: bool = True  # input/output as (B, T, F) rather than (T, B, F)
    bias: bool = True  # learn the gate biases
    cell: str = "lstm"  # "lstm", "peephole", "layernorm" or "cifg"
    # Regularisation (all identity in eval mode except zoneout, which then mixes by its rate)
    dropout: float = 0.0  # between layers, fresh mask each step (as torch.nn.LSTM)
    hidden_dropout: float = 0.0  # between layers, one mask per sequence (variational)
    input_dropout: float = 0.0  # on the input sequence, one mask per sequence (variational)
    output_dropout: float = 0.0  # on the output sequence, one mask per sequence (variational)
    recurrent_dropout: float = 0.0  # on h_{t-1} before W_hh, one mask per sequence (Gal 2016)
    weight_dropout: float = 0.0  # DropConnect on W_hh, one mask per forward (Merity 2017)
    zoneout_cell: float = 0.0  # chance a cell unit keeps its previous value (Krueger 2017)
    zoneout_hidden: float = 0.0  # chance a hidden unit keeps its previous value
    # Initialisation
    forget_bias: float = 1.0  # forget-gate bias at init (Jozefowicz et al. 2015)
    chrono_init: int = 0  # if > 0, chrono init for dependencies up to this many steps
    # Execution
    backend: str = "auto"  # "auto", "kernel", "fused", "graphed", "compiled" or "reference"

    def __post_init__(self) -> None:
        check_positive_int("input_size", self.input_size)
        check_positive_int("hidden_size", self.hidden_size)
        check_positive_int("num_layers", self.num_layers)
        check_nonnegative_int("proj_size", self.proj_size)
        if self.proj_size >= self.hidden_size:
            raise ValueError(
                f"proj_size must be smaller than hidden_size ({self.hidden_size}), "
                f"got {self.proj_size}"
            )
        for name in ("bidirectional", "batch_first", "bias"):
            object.__setattr__(self, name, check_bool(name, getattr(self, name)))
        check_choice("cell", self.cell, CELL_NAMES)
        check_choice("backend", self.backend, BACKEND_NAMES)
        for name in self.rate_fields():
            check_probability(name, getattr(self, name))
        if isinstance(self.forget_bias, bool) or not isinstance(self.forget_bias, int | float):
            raise ValueError(f"forget_bias must be a number, got {self.forget_bias!r}")
        check_nonnegative_int("chrono_init", self.chrono_init)
        if self.chrono_init == 1:
            raise ValueError("chrono_init must be 0 (off) or at least 2 steps, got 1")
        if self.chrono_init and not self.bias:
            raise ValueError("chrono_init sets the gate biases, so it needs bias=True")

    @staticmethod
    def rate_fields() -> tuple[str, ...]:
        """Names of the dropout and zoneout rates."""
        return (
            "dropout",
            "hidden_dropout",
            "input_dropout",
            "output_dropout",
            "recurrent_dropout",
            "weight_dropout",
            "zoneout_cell",
            "zoneout_hidden",
        )

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Size of h_t in one direction: proj_size with a projection, else hidden_size."""
        return self.proj_size or self.hidden_size

    def replace(self, **changes: Any) -> LSTMConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LSTMConfig:
        """Rebuild from ``to_dict()`` output; unknown keys are an error that lists them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LSTMConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)
