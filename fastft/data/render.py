"""Turn an Example into prompt pieces and answer text, for training and generation alike.

The prompt is rendered once, with private-use sentinels around the text that may be cut (the body, or a chat's
turns) and around earlier assistant turns (trained), then split at the sentinels into Pieces. The template's
text before the first cuttable piece (BOS, system turn, instruction) and after the last one (the generation
header) is never cut. The training sequence is the generation prompt plus the answer and its end-of-turn token,
so train and inference prompts cannot drift apart.
"""
import re
from dataclasses import dataclass

from ..errors import FastftError
from .chat_templates import END_OF_TURN_TOKENS, template_for
from .tasks import Example

_CUT, _CUT_END, _TRAIN, _TRAIN_END = "\ue000", "\ue001", "\ue002", "\ue003"  # never in real text
_REGION = re.compile(f"({_CUT}.*?{_CUT_END}|{_TRAIN}.*?{_TRAIN_END})", re.S)
_PROBE = "\ue004ANSWER\ue004"
# Turn markers a template writes: <|im_start|>, <start_of_turn>, <bos>, </think>, ...
_MARKER = re.compile(r"</?\|?[A-Za-z][\w-]*\|?>")


@dataclass(frozen=True)
class Piece:
    text: str
    trained: bool = False  # earlier assistant turns of a chat
    cuttable: bool = False  # may lose tokens from its left when the prompt is over budget


class Renderer:
    def __init__(self, tokenizer, layout: str, system_prompt: str | None = None):
        self.tokenizer = tokenizer
        self.layout = layout
        self.system_prompt = system_prompt
        self.template = template_for(tokenizer) if layout == "chat" else None
        self.end_token = self._chat_end_token() if layout == "chat" else tokenizer.eos_token
        if not self.end_token:
            raise FastftError(
                "the tokenizer has no end-of-sequence token, so the model could never learn to stop",
                hint="use a tokenizer with an eos_token, or layout: chat with a chat template",
            )

    def prompt_pieces(self, example: Example) -> list[Piece]:
        if self.layout == "chat":
            text = self._render_chat(self._messages(example), add_generation_prompt=True)
        elif example.history:
            raise FastftError("a multi-turn chat cannot be written in the ### Instruction layout", where="dataset.layout",
                              hint="use layout: chat with task: chat")
        else:
            text = self._render_instruction(example)
        return self._split(text)

    def answer_text(self, example: Example) -> str:
        """The trained text: the answer and the end-of-turn token, nothing after it."""
        return example.answer + self.end_token

    def _messages(self, example: Example) -> list[dict]:
        if example.history:
            turns = [{"role": t.role, "content": t.content if t.role == "system" else self._mark(t)} for t in example.history]
        else:
            body = f"{_CUT}{example.body}{_CUT_END}" if example.body else ""
            content = f"{example.instruction}\n\n{body}" if example.instruction and body else example.instruction or body
            turns = [{"role": "user", "content": content}]
        # A conversation's own system turn wins over the recipe's system_prompt.
        has_system = turns[0]["role"] == "system"
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt and not has_system else []
        return system + turns

    @staticmethod
    def _mark(turn) -> str:
        return f"{_TRAIN}{turn.content}{_TRAIN_END}" if turn.role == "assistant" else f"{_CUT}{turn.content}{_CUT_END}"

    def _split(self, text: str) -> list[Piece]:
        """Sentinel regions become cuttable pieces; template text between two regions is cuttable too, text before
        the first and after the last is not. An earlier assistant turn's piece takes the end token that follows it."""
        parts = _REGION.split(text)  # text, region, text, region, ..., text
        pieces: list[Piece] = []
        for index, part in enumerate(parts):
            if index % 2:
                pieces.append(Piece(part[1:-1], trained=part[0] == _TRAIN, cuttable=True))
                continue
            if pieces and pieces[-1].trained:
                if not part.startswith(self.end_token):
                    raise FastftError(f"the chat template does not close an earlier assistant turn with {self.end_token!r}",
                                      hint="use a template that ends every assistant turn with its end-of-turn token")
                pieces[-1] = Piece(pieces[-1].text + self.end_token, trained=True, cuttable=True)
                part = part[len(self.end_token):]
            pieces.append(Piece(part, cuttable=0 < index < len(parts) - 1))
        return [piece for piece in pieces if piece.text]

    def _render_chat(self, messages: list[dict], add_generation_prompt: bool) -> str:
        from jinja2 import TemplateError

        try:
            return self.tokenizer.apply_chat_template(
                messages, chat_template=self.template, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        except TemplateError as exc:  # templates reject what they cannot render, e.g. a system turn
            roles = "/".join(m["role"] for m in messages)
            raise FastftError(f"the chat template refused a {roles} conversation: {exc}",
                              hint="drop dataset.system_prompt or system turns if the model has no system role") from None

    def _chat_end_token(self) -> str:
        """The token the template closes an assistant turn with, found by rendering a probe answer."""
        # No system turn: some official templates (Gemma 1/2, CodeGemma) refuse one.
        probe = [{"role": "user", "content": "x"}, {"role": "assistant", "content": _PROBE}]
        rendered = self._render_chat(probe, add_generation_prompt=False)
        self._check_markers(rendered + self._render_chat(probe[:1], add_generation_prompt=True))
        after = rendered.split(_PROBE, 1)[1]
        for token in (*END_OF_TURN_TOKENS, self.tokenizer.eos_token):
            if token and after.startswith(token):
                return token
        raise FastftError(
            f"the chat template ends an assistant turn with {after[:30]!r}, not a known end-of-turn token",
            hint="set layout: instruction, or give the tokenizer a chat template that ends turns with a special token",
        )

    def _check_markers(self, rendered: str) -> None:
        """A turn marker missing from the vocabulary would be trained as a string of ordinary sub-word pieces."""
        vocab = self.tokenizer.get_vocab()
        missing = sorted({marker for marker in _MARKER.findall(rendered) if marker not in vocab})
        if missing:
            raise FastftError(
                f"the chat template needs token(s) {', '.join(missing)} that the tokenizer lacks",
                where="model.name",
                hint="use the model's own tokenizer and template, or layout: instruction",
            )

    def _render_instruction(self, example: Example) -> str:
        bos = self.tokenizer.bos_token or ""
        system = f"{self.system_prompt}\n\n" if self.system_prompt else ""
        parts = [f"{bos}{system}### Instruction:\n{example.instruction}\n\n"]
        if example.body:
            parts.append(f"### Input:\n{_CUT}{example.body}{_CUT_END}\n\n")
        parts.append("### Response:\n")
        return "".join(parts)
