"""`fastft preview`: the training data exactly as the model will see it, trained tokens highlighted.

Only the tokenizer is loaded (the same way `fastft run` prepares it, chat tokens included), never model weights,
so a recipe's data, template and token limits can be checked in seconds before a run.
"""
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..config.loader import load_recipe
from ..data.encode import IGNORE_INDEX
from ..data.pipeline import Split, build_splits
from ..data.stats import named_splits, split_stats
from ..models.resolve import resolve_model

TRAINED_STYLE = "bold green"
MASKED_STYLE = "grey50"


def masked_text(tokenizer, record: dict) -> Text:
    """The decoded sequence, each run of trained or masked tokens decoded whole (a run never splits a character
    that the tokenizer spread over several tokens) and styled by whether it is trained."""
    text = Text()
    run, run_trained = [], None
    for token, label in zip(record["input_ids"], record["labels"]):
        trained = label != IGNORE_INDEX
        if run and trained != run_trained:
            text.append(tokenizer.decode(run), TRAINED_STYLE if run_trained else MASKED_STYLE)
            run = []
        run.append(token)
        run_trained = trained
    if run:
        text.append(tokenizer.decode(run), TRAINED_STYLE if run_trained else MASKED_STYLE)
    return text


def split_table(splits: dict[str, Split]) -> Table:
    """One column per split, one row per statistic (narrow enough for an 80-column terminal)."""
    table = Table(title="whole data set", show_header=True)
    table.add_column("")
    rows = {name: [] for name in ("examples", "kept", "dropped", "prompt truncated", "answer truncated", "tokens", "trained tokens", "max length")}
    for split_name, split in splits.items():
        table.add_column(split_name, justify="right")
        n = split_stats(split)
        trained = f"{n['trained_tokens']:,} ({100.0 * n['trained_tokens'] / max(n['tokens'], 1):.1f}%)"
        values = (n["rendered"], n["kept"], n["dropped"], n["prompt_truncated"], n["answer_truncated"], f"{n['tokens']:,}",
                  trained, n["max_length"])
        for row, value in zip(rows.values(), values):
            row.append(str(value))
    for name, values in rows.items():
        table.add_row(name, *values)
    return table


def show_examples(console: Console, tokenizer, split: Split, count: int) -> None:
    for record in split.dataset.select(range(min(count, len(split.dataset)))):
        trained = sum(1 for label in record["labels"] if label != IGNORE_INDEX)
        console.rule(f"{record['example_id']}: {len(record['input_ids'])} tokens, {trained} trained")
        console.print(masked_text(tokenizer, record), soft_wrap=True)


def preview(recipe_file, sets, count: int, console: Console) -> None:
    recipe = load_recipe(recipe_file, sets)
    resolved = resolve_model(recipe, lambda message: console.print(message, highlight=False))
    source, tokenizer = resolved.source, resolved.tokenizer
    train, evaluation = build_splits(recipe.dataset, tokenizer, recipe_file)
    d = recipe.dataset
    console.print(f"[bold]fastft preview[/bold] {recipe.experiment}: task {d.task}, format {d.layout}, tokenizer {source}, "
                  f"max {d.max_prompt_tokens} prompt + {d.max_answer_tokens} answer tokens", highlight=False)
    legend = Text("legend: ") + Text("trained", TRAINED_STYLE) + Text(" / ") + Text("masked (label -100)", MASKED_STYLE)
    console.print(legend)
    show_examples(console, tokenizer, train, count)
    splits = named_splits(train, evaluation)
    console.print(split_table(splits))
    for name, split in splits.items():
        for example_id, reason in split.stats.dropped[:5]:
            console.print(f"  {name}: dropped {example_id}: {reason}", highlight=False)
