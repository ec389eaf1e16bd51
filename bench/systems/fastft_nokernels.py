"""fastft-nokernels: fastft's model and data with every kernel off, i.e. transformers' own forward with labels
(full [batch, seq, vocab] logits, then cross-entropy), driven by a plain transformers Trainer."""


def unavailable(cfg) -> str | None:
    return None


def build(cfg, data):
    from transformers import Trainer

    from .fastft_common import fastft_run

    return fastft_run(cfg, data, Trainer, kernels_on=False)
