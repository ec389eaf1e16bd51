"""Bad data through `fastft run`: one clear message naming the file and row, exit code 2, nothing written."""
import json

import pytest
from click.testing import CliRunner

from fastft.cli import main
from tests.factories import REPO, tiny_bpe_tokenizer

QA = {"id": "q1", "context": "세종은 1446년에 훈민정음을 반포하였다.", "question": "반포한 해는?", "answer": "1446년"}
CHAT = {"messages": [{"role": "user", "content": "안녕?"}, {"role": "assistant", "content": "안녕하세요."}]}
# A Qwen3-style template whose generation prompt opens an empty <think> block: <think> is no token of this tokenizer.
THINK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n\n</think>\n\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    tiny_bpe_tokenizer().save_pretrained(folder)
    return folder


def jsonl(path, *rows, raw_lines=()):
    lines = [json.dumps(row, ensure_ascii=False) for row in rows] + list(raw_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(tmp_path, model_dir, dataset: str):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"_base_: {REPO / 'recipes/base/causal_lm.yaml'}\nexperiment: bad\nmodel: {{name: {model_dir}}}\n"
        f"dataset: {{{dataset}}}\noutput: {{dir: {tmp_path / 'out'}, logs_dir: {tmp_path / 'logs'}}}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["run", str(recipe)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.count("fastft error") == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "logs").exists()
    return " ".join(result.output.split())  # rich wraps long lines


def test_missing_file(tmp_path, tokenizer_dir):
    out = run(tmp_path, tokenizer_dir, f"task: qa, train: {tmp_path / 'nope.jsonl'}")
    assert f"dataset.train: file not found: {tmp_path / 'nope.jsonl'}" in out


def test_misspelled_column_suggests_the_closest(tmp_path, tokenizer_dir):
    row = {k if k != "question" else "qestion": v for k, v in QA.items()}
    path = jsonl(tmp_path / "t.jsonl", row)
    out = run(tmp_path, tokenizer_dir, f"task: qa, train: {path}")
    assert f"dataset.train: {path} lacks column(s) 'question' -> did you mean 'qestion'?" in out


def test_malformed_jsonl_line_names_file_and_line(tmp_path, tokenizer_dir):
    path = jsonl(tmp_path / "t.jsonl", QA, QA, raw_lines=['{"id": "q3", "context": "x",'])
    out = run(tmp_path, tokenizer_dir, f"task: qa, train: {path}")
    assert f"dataset.train: {path}, line 3: not valid JSON" in out


def test_empty_split(tmp_path, tokenizer_dir):
    train, dev = jsonl(tmp_path / "t.jsonl", QA), tmp_path / "dev.jsonl"
    dev.write_text("\n", encoding="utf-8")
    out = run(tmp_path, tokenizer_dir, f"task: qa, train: {train}, eval: {dev}")
    assert f"dataset.eval: {dev} has no rows" in out


def test_non_string_field_names_row_and_column(tmp_path, tokenizer_dir):
    path = jsonl(tmp_path / "t.jsonl", QA, {**QA, "id": "q2", "answer": 1446})
    out = run(tmp_path, tokenizer_dir, f"task: qa, train: {path}")
    assert f"dataset.train: {path}, line 2: column 'answer' holds int '1446', not text" in out


def test_chat_without_assistant_turn(tmp_path, tokenizer_dir):
    path = jsonl(tmp_path / "t.jsonl", CHAT, {"messages": [{"role": "user", "content": "듣고 있나요?"}]})
    out = run(tmp_path, tokenizer_dir, f"task: chat, train: {path}")
    assert f"dataset.train: {path}, line 2: the conversation has no assistant turn" in out


def test_template_needing_a_token_the_tokenizer_lacks(tmp_path):
    tokenizer = tiny_bpe_tokenizer()
    tokenizer.chat_template = THINK_TEMPLATE
    tokenizer.save_pretrained(tmp_path / "tok")
    out = run(tmp_path, tmp_path / "tok", f"task: chat, train: {jsonl(tmp_path / 't.jsonl', CHAT)}")
    assert "the chat template needs token(s) </think>, <think> that the tokenizer lacks" in out
