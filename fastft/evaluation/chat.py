"""`fastft chat`: talk to a fine-tuned model turn by turn, each prompt rendered by the training template."""
from pathlib import Path

from ..data.formats import Example, Turn
from ..data.pipeline import build_encoder
from ..errors import FastftError
from ..training.outputs import RECIPE_FILE
from .generate import generate_texts, load_for_inference


def saved_recipe(adapter: Path) -> Path:
    """The resolved recipe the run saved beside its adapter folder."""
    path = Path(adapter).parent / RECIPE_FILE
    if not path.is_file():
        raise FastftError(f"no recipe given, and no {RECIPE_FILE} beside the adapter", where=str(path),
                          hint="pass the run's recipe: fastft chat --adapter DIR RECIPE")
    return path


class Conversation:
    """The turns so far. Chat-format recipes see the whole history, as a multi-turn training row would show it;
    the ### Instruction layout has room for one turn only, so there every line is a new single-turn prompt."""

    def __init__(self, model, tokenizer, encoder, gen_cfg):
        self.model, self.tokenizer, self.encoder, self.gen_cfg = model, tokenizer, encoder, gen_cfg
        self.keeps_history = encoder.renderer.format_type == "chat"
        self.turns: list[Turn] = []

    def prompt_for(self, text: str) -> Example:
        if self.keeps_history:
            return Example(id="chat", instruction=None, body="", answer=None, history=(*self.turns, Turn("user", text)))
        return Example(id="chat", instruction=text, body="", answer=None)

    def say(self, text: str) -> str:
        reply = generate_texts(self.model, self.tokenizer, self.encoder, [self.prompt_for(text)], self.gen_cfg)[0]
        if self.keeps_history:
            self.turns += [Turn("user", text), Turn("assistant", reply)]
        return reply

    def reset(self) -> None:
        self.turns = []


def open_conversation(recipe, adapter: Path, log=print) -> Conversation:
    model, tokenizer = load_for_inference(recipe, adapter, log)
    return Conversation(model, tokenizer, build_encoder(recipe.dataset, tokenizer), recipe.generation)


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
