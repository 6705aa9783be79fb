"""The LSTM itself: cells with explicit gates, their variants, and the layer that runs them."""

from lstmkit.nn.backends import BackendChoice, select_backend
from lstmkit.nn.cell import Gates, LSTMCell, LSTMState
from lstmkit.nn.config import LSTMConfig
from lstmkit.nn.convert import from_torch, to_torch
from lstmkit.nn.dropout import LockedDropout, WeightDrop, Zoneout
from lstmkit.nn.init import init_cell_
from lstmkit.nn.recurrent import LSTM, GateTrace, LSTMTrace
from lstmkit.nn.streaming import StreamingLSTM
from lstmkit.nn.variants import CELLS, CIFGLSTMCell, LayerNormLSTMCell, PeepholeLSTMCell

__all__ = [
    "CELLS",
    "LSTM",
    "BackendChoice",
    "CIFGLSTMCell",
    "GateTrace",
    "Gates",
    "LSTMCell",
    "LSTMConfig",
    "LSTMState",
    "LSTMTrace",
    "LayerNormLSTMCell",
    "LockedDropout",
    "PeepholeLSTMCell",
    "StreamingLSTM",
    "WeightDrop",
    "Zoneout",
    "from_torch",
    "init_cell_",
    "select_backend",
    "to_torch",
]
