"""fastft: FastftTrainer (prompt-masked loss: LM head on labelled rows only) plus fastft's kernel patches."""


def unavailable(cfg) -> str | None:
    return None


def build(cfg, data):
    from fastft.training.trainer import FastftTrainer

    from .fastft_common import fastft_run

    return fastft_run(cfg, data, FastftTrainer, kernels_on=True)
