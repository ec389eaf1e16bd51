"""From recipe to tokenized train/eval datasets, with the statistics the start-up summary reports."""
from dataclasses import dataclass
from pathlib import Path

from ..errors import FastftError
from .encode import EncodeStats, Encoder
from .formats import TaskFormat, get_format
from .render import Renderer
from .sources import check_columns, check_strings, load_rows, resolve_data_path


@dataclass
class Split:
    dataset: object  # datasets.Dataset with input_ids, labels, example_id
    stats: EncodeStats
    path: Path


def build_encoder(dataset_cfg, tokenizer) -> Encoder:
    renderer = Renderer(tokenizer, dataset_cfg.format_type, dataset_cfg.system_prompt)
    return Encoder(renderer, dataset_cfg.max_prompt_tokens, dataset_cfg.max_answer_tokens)


def build_splits(dataset_cfg, tokenizer, recipe_file: Path | None, progress=None) -> tuple[Split, Split | None]:
    task = get_format(dataset_cfg.task, dataset_cfg.columns)
    encoder = build_encoder(dataset_cfg, tokenizer)
    train = _build_split(
        task, encoder, dataset_cfg.train, "dataset.train", recipe_file,
        dataset_cfg.max_train_samples, dataset_cfg.instruction_augmentation, progress,
    )
    evaluation = None
    if dataset_cfg.eval:
        # Evaluation data is never augmented: its loss must stay comparable across runs.
        evaluation = _build_split(task, encoder, dataset_cfg.eval, "dataset.eval", recipe_file, dataset_cfg.max_eval_samples, False, progress)
    return train, evaluation


def _build_split(task: TaskFormat, encoder: Encoder, value: str, label: str, recipe_file, limit, augment, progress) -> Split:
    import datasets

    path = resolve_data_path(value, recipe_file)
    rows = load_rows(path, label)
    check_columns(rows, task.required_columns(), path, label)
    if limit:
        rows = rows.select(range(min(limit, len(rows))))
    instructions = task.instructions if augment else task.instructions[:1]
    stats, encoded = EncodeStats(), []
    text_columns = list(task.columns.values())
    iterator = progress(rows, desc=f"Tokenizing {label}") if progress else rows
    for index, row in enumerate(iterator):
        check_strings(row, text_columns, task.row_id(row, index), path, label)
        for instruction in instructions or (None,):
            record = encoder.encode(task.build(row, index, instruction), stats)
            if record is not None:
                encoded.append(record)
    if not encoded:
        reasons = sorted({reason for _, reason in stats.dropped})
        raise FastftError(
            f"{label}: none of the {stats.total} examples in {path} can be trained ({'; '.join(reasons)})",
            hint="check the answer column and the token limits dataset.max_prompt_tokens / max_answer_tokens",
        )
    return Split(datasets.Dataset.from_list(encoded), stats, path)
