"""Time-series forecasting with an LSTM: the package's main job.

``Forecaster(ForecastConfig(...)).fit(frame)`` trains on DataFrames; ``predict``, ``evaluate``
(against the naive and seasonal-naive baselines), ``backtest``, ``save``/``load_from``; the CLI
is ``lstmkit forecast``.
"""

from lstmkit.tasks.forecasting.config import DataConfig, ForecastConfig
from lstmkit.tasks.forecasting.evaluation import backtest, evaluate
from lstmkit.tasks.forecasting.forecaster import Forecaster
from lstmkit.tasks.forecasting.models import ModelConfig

__all__ = ["DataConfig", "ForecastConfig", "Forecaster", "ModelConfig", "backtest", "evaluate"]
