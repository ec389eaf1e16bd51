"""TensorBoard event files in the run folder, whichever of logging.tensorboard / report_to asked for them."""
from pathlib import Path

TENSORBOARD = "tensorboard"


def wants_tensorboard(logging_cfg) -> bool:
    return logging_cfg.tensorboard or TENSORBOARD in logging_cfg.report_to


def tensorboard_callback(output_dir: Path):
    from transformers.integrations import TensorBoardCallback

    callback = TensorBoardCallback()
    # transformers 5 takes no logging_dir argument: left alone the writer goes to <checkpoints>/runs/<date>.
    callback.logging_dir = str(output_dir / TENSORBOARD)
    return callback
