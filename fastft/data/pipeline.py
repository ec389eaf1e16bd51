"""From recipe to tokenized train/eval datasets, with the statistics the start-up summary reports."""
from dataclasses import dataclass
from pathlib import Path

from ..errors import FastftError
from .encode import Encoder, EncodeStats
from .packing import pack
from .render import Renderer
from .sources import Source, check_columns, check_strings, load_rows, resolve_data_path
from .tasks import Example, RowError, Task, get_task


@dataclass
class Split:
    dataset: object  # datasets.Dataset with input_ids, labels, example_id
    stats: EncodeStats
    path: Path
    examples: list[Example] | None = None  # the eval split's examples as read, which in-training generation scores


def build_encoder(dataset_cfg, tokenizer) -> Encoder:
    renderer = Renderer(tokenizer, dataset_cfg.layout, dataset_cfg.system_prompt)
    return Encoder(renderer, dataset_cfg.max_prompt_tokens, dataset_cfg.max_answer_tokens)


def build_task(dataset_cfg) -> Task:
    task = get_task(dataset_cfg.task, dataset_cfg.columns)
    if dataset_cfg.instruction_augmentation and len(task.instructions) < 2:
        raise FastftError(
            f"instruction augmentation needs instruction phrasings, and task {dataset_cfg.task!r} takes its prompt from the data",
            where="dataset.instruction_augmentation",
            hint="turn it off, or use a task with phrasings: summary, qa, classification",
        )
    return task


def open_split(task: Task, value: str, label: str, recipe_file, limit, answers: bool = True) -> Source:
    """`answers=False` opens a file to predict on, whose rows need only the prompt's columns."""
    source = load_rows(resolve_data_path(value, recipe_file), label)
    check_columns(source, task.required_columns() if answers else task.prompt_columns())
    if limit and limit < len(source.rows):
        source.rows = source.rows.select(range(limit))
    return source


def examples(task: Task, source: Source, augment: bool, progress_bar=None, predicting: bool = False):
    """An Example for every row, once per instruction phrasing when augmenting; answers optional when predicting."""
    build = task.build_for_prediction if predicting else task.build
    instructions = (task.instructions if augment else task.instructions[:1]) or (None,)
    text_columns = task.text_columns()
    rows = progress_bar(source.rows, desc=f"Tokenizing {source.label}") if progress_bar else source.rows
    for index, row in enumerate(rows):
        check_strings(source, row, index, text_columns)
        for instruction in instructions:
            try:
                yield build(row, index, instruction)
            except RowError as exc:
                raise FastftError(f"{source.where(index)}: {exc}", hint=exc.hint) from None


def build_splits(dataset_cfg, tokenizer, recipe_file: Path | None, progress_bar=None) -> tuple[Split, Split | None]:
    task = build_task(dataset_cfg)
    encoder = build_encoder(dataset_cfg, tokenizer)
    train_source = open_split(task, dataset_cfg.train, "dataset.train", recipe_file, dataset_cfg.max_train_samples)
    eval_source = None
    if dataset_cfg.eval:  # opened before encoding anything, so a bad eval file fails fast
        eval_source = open_split(task, dataset_cfg.eval, "dataset.eval", recipe_file, dataset_cfg.max_eval_samples)
    pack_to = dataset_cfg.max_prompt_tokens + dataset_cfg.max_answer_tokens if dataset_cfg.packing else None
    train = encode_split(task, encoder, train_source, dataset_cfg.instruction_augmentation, progress_bar, pack_to)
    # Evaluation data is never augmented (its loss must stay comparable across runs) nor packed (packing
    # leaves the loss unchanged, and unpacked rows keep per-example ids for inspection).
    evaluation = encode_split(task, encoder, eval_source, False, progress_bar, keep_examples=True) if eval_source else None
    return train, evaluation


def encode_split(task: Task, encoder: Encoder, source: Source, augment: bool, progress_bar=None, pack_to: int | None = None,
                 keep_examples: bool = False) -> Split:
    import datasets

    stats, encoded, read = EncodeStats(), [], []
    for example in examples(task, source, augment, progress_bar):
        read.append(example)
        record = encoder.encode(example, stats)
        if record is not None:
            encoded.append(record)
    if not encoded:
        reasons = sorted({reason for _, reason in stats.dropped})
        raise FastftError(
            f"{source.label}: none of the {stats.total} examples in {source.path} can be trained ({'; '.join(reasons)})",
            hint="check the answer column and the token limits dataset.max_prompt_tokens / max_answer_tokens",
        )
    rows = datasets.Dataset.from_list(pack(encoded, pack_to) if pack_to else encoded)
    return Split(rows, stats, source.path, read if keep_examples else None)
