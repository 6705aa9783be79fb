"""lstmkit: LSTM networks made practical — explicit gates, verified numerics, training craft."""

__version__ = "0.1.0"
