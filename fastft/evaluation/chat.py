"""A conversation with a model, each prompt rendered by the training template."""
from pathlib import Path

from ..data.pipeline import build_encoder
from ..data.tasks import Example, Turn
from .generate import generate_texts, load_for_inference


class Conversation:
    """The turns so far. Chat-format recipes see the whole history, as a multi-turn training row would show it;
    the ### Instruction layout has room for one turn only, so there every line is a new single-turn prompt."""

    def __init__(self, model, tokenizer, encoder, gen_cfg):
        self.model, self.tokenizer, self.encoder, self.gen_cfg = model, tokenizer, encoder, gen_cfg
        self.keeps_history = encoder.renderer.layout == "chat"
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


def open_conversation(recipe, adapter: Path, notify=print) -> Conversation:
    model, tokenizer = load_for_inference(recipe, adapter, notify)
    return Conversation(model, tokenizer, build_encoder(recipe.dataset, tokenizer), recipe.generation)
