"""A small, seeded training run used by the resume and distributed tests (run as a script).

python train_toy.py --run-dir DIR [--resume] [--slow] [--optim sgd] --out weights.safetensors
"""

import argparse
import time

import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from lstmkit.nn import LSTM
from lstmkit.training import OptimConfig, StepOutput, TrainConfig, Trainer


class Toy(nn.Module):
    def __init__(self, dropout: bool) -> None:
        super().__init__()
        options = dict(input_dropout=0.2, recurrent_dropout=0.2) if dropout else {}
        self.lstm = LSTM(3, 8, **options)
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.lstm(x)[1][0][-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--slow", type=float, default=0.0, help="seconds to sleep per step")
    parser.add_argument("--optim", default="adamw")
    parser.add_argument("--dropout", action="store_true")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--checkpoint-every", type=int, default=5)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    data_rng = torch.Generator().manual_seed(123)
    x = torch.randn(320, 6, 3, generator=data_rng)
    y = x.sum(dim=(1, 2)).unsqueeze(-1) / 6
    torch.manual_seed(0)
    model = Toy(args.dropout)

    def step(model, batch, state):
        if args.slow:
            time.sleep(args.slow)
        xb, yb = batch
        return StepOutput(F.mse_loss(model(xb), yb), weight=len(xb))

    config = TrainConfig(
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        checkpoint_every=args.checkpoint_every,
        optim=OptimConfig(name=args.optim, lr=0.05),
    )
    trainer = Trainer(model, step, config, run_dir=args.run_dir)
    trainer.fit(
        TensorDataset(x[:256], y[:256]), TensorDataset(x[256:], y[256:]), resume=args.resume
    )
    if trainer.ctx.is_main:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)


if __name__ == "__main__":
    main()
