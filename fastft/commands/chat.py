"""`fastft chat`: talk to a fine-tuned model turn by turn, each prompt rendered by the training template."""
from pathlib import Path

from ..config.loader import load_recipe
from ..errors import FastftError
from ..evaluation.chat import Conversation, open_conversation
from ..models.adapters import read_adapter_config
from ..runtime.outputs import RECIPE_FILE


def saved_recipe(adapter: Path) -> Path:
    """The resolved recipe the run saved beside its adapter folder."""
    path = Path(adapter).parent / RECIPE_FILE
    if not path.is_file():
        raise FastftError(f"no recipe given, and no {RECIPE_FILE} beside the adapter", where=str(path),
                          hint="pass the run's recipe: fastft chat --adapter DIR RECIPE")
    return path


def chat_loop(conversation: Conversation, lines, reply, notice) -> None:
    """One user turn per line (a literal \\n in it becomes a line break); /reset clears the history, /exit stops.
    A turn the prompt budget cannot hold is reported and skipped, so the session goes on."""
    for line in lines:
        text = line.strip()
        if text == "/exit":
            return
        if text == "/reset":
            conversation.reset()
            notice("history cleared")
        elif text:
            try:
                reply(conversation.say(text.replace("\\n", "\n")))
            except FastftError as error:
                notice(str(error))


def chat(recipe_file: Path | None, sets, adapter: Path, lines, reply, notice) -> None:
    read_adapter_config(Path(adapter))  # a clear message for a wrong folder before looking beside it for a recipe
    recipe = load_recipe(recipe_file or saved_recipe(adapter), sets)
    conversation = open_conversation(recipe, adapter, notice)
    notice("chat: type a message; /reset clears the history, /exit ends")
    chat_loop(conversation, lines, reply, notice)
