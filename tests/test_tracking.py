"""logging.report_to: [mlflow] / [wandb] on a tiny real run, read back through each tool's own files and client: the
run holds the resolved recipe, metrics.json's values and the report files, and Trainer's steps."""
import json

import pytest
import yaml
from click.testing import CliRunner

from fastft.cli import main
from tests.factories import recipe_for, tiny_llama_checkpoint

mlflow = pytest.importorskip("mlflow")
wandb = pytest.importorskip("wandb")

SHORT = ["--set", "training.max_steps=2", "--set", "training.logging_steps=1"]
RECORD = ["resolved_recipe.yaml", "metrics.json", "report.md", "training_curve.png"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_llama_checkpoint(tmp_path_factory.mktemp("base"))


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_PROJECT", "WANDB_DIR", "WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no W&B login or settings of the machine's user
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home"))
    monkeypatch.delenv("NETRC", raising=False)


def train(tmp_path, base, tracker):
    recipe = recipe_for(tmp_path, base)
    result = CliRunner().invoke(main, ["run", str(recipe), *SHORT, "--set", f"logging.report_to=[{tracker}]"])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "outputs" / "tiny"
    return run_dir, json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")), result.output


def test_mlflow_run_in_a_local_store_holds_the_metrics_recipe_and_report(tmp_path, base, clean_env, monkeypatch):
    monkeypatch.chdir(tmp_path / "..")  # not where the store goes: MLflow's default would put ./mlruns here
    run_dir, metrics, output = train(tmp_path, base, "mlflow")
    store = f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"
    assert f"in {store}" in output

    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("tiny")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tiny" and run.info.status == "FINISHED"
    numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    assert {"train_tokens_per_s", "peak_memory_gib", "eval_loss_after"} <= numeric.keys()
    assert {k: run.data.metrics[k] for k in numeric} == pytest.approx(numeric, rel=1e-12)
    # Trainer's steps, through transformers' MLflowCallback, in the same run.
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == [1, 2]
    recipe = yaml.safe_load((run_dir / "resolved_recipe.yaml").read_text(encoding="utf-8"))
    assert run.data.params["recipe.training.learning_rate"] == str(recipe["training"]["learning_rate"])
    assert run.data.params["recipe.model.name"] == recipe["model"]["name"]
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == sorted(RECORD)
    copy = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="metrics.json",
                                               tracking_uri=store, dst_path=str(tmp_path / "back"))
    assert json.loads(open(copy, encoding="utf-8").read()) == metrics
    assert (tmp_path / "outputs" / "mlruns").is_dir()


def wandb_offline_records(run_file):
    """(config, summary, history) replayed from an offline run's .wandb file. wandb 0.31 writes an offline run only
    there (no config.yaml or wandb-summary.json) and ships no Python reader: the file is LevelDB's log format (32 KiB
    blocks; each chunk a 7-byte header: CRC, length, kind 1 full / 2 first / 3 middle / 4 last) after a 7-byte W&B
    header, each record one of wandb's own protobuf Records."""
    import struct
    import zlib

    from wandb.proto import wandb_internal_pb2

    data, block = run_file.read_bytes(), 32768
    assert data[:4] == b":W&B"
    records, chunks, pos = [], [], 7
    while pos + 7 <= len(data):
        left = block - pos % block
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # the zero padding at a block's end
            pos += left
            continue
        chunks.append(data[pos + 7:pos + 7 + length])
        assert zlib.crc32(bytes([kind]) + chunks[-1]) == crc
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            records.append(record)
            chunks = []

    def name(item):
        return item.key or "/".join(item.nested_key)

    config, summary, history = {}, {}, []
    for record in records:
        kind = record.WhichOneof("record_type")
        updates = {"run": record.run.config, "config": record.config, "summary": record.summary}.get(kind)
        updates = updates.update if updates is not None else []
        target = summary if kind == "summary" else config
        target.update({name(item): json.loads(item.value_json) for item in updates})
        if kind == "history":
            history.append({name(item): json.loads(item.value_json) for item in record.history.item})
    return config, summary, history


def test_wandb_offline_run_holds_the_metrics_recipe_and_report(tmp_path, base, clean_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir, metrics, output = train(tmp_path, base, "wandb")
    [offline] = (run_dir / "wandb").glob("offline-run-*")
    assert f"(offline) in {offline / 'files'}" in output

    wandb.teardown()  # the service process writes the run file: ended, it has written all of it
    config, summary, history = wandb_offline_records(next(offline.glob("run-*.wandb")))
    # W&B's summary takes one level of names: metrics.json's sections (phases_s, task scores) arrive as "section.key"
    expected = {}
    for key, value in metrics.items():
        expected.update({f"{key}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {key: value})
    assert {k: summary[k] for k in expected} == expected
    assert config["recipe"] == yaml.safe_load((run_dir / "resolved_recipe.yaml").read_text(encoding="utf-8"))
    # Trainer's steps, through transformers' WandbCallback, in the same run.
    assert [h["train/global_step"] for h in history if "train/loss" in h] == [1, 2]
    for name in RECORD:
        assert (offline / "files" / name).read_bytes() == (run_dir / name).read_bytes()


def test_wandb_without_login_or_offline_mode_says_how(tmp_path, base, clean_env):
    """In a process of its own: wandb keeps the settings of its first run in a process for the next ones."""
    import os
    import subprocess
    import sys

    recipe = recipe_for(tmp_path, base)
    command = [sys.executable, "-m", "fastft", "run", str(recipe), *SHORT, "--set", "logging.report_to=[wandb]"]
    result = subprocess.run(command, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr
    assert ("fastft error logging.report_to: W&B cannot start a run: No API key configured. Use `wandb login` to log in.\n"
            "  fix: run `wandb login`, or set WANDB_MODE=offline to keep the run in the run folder and `wandb sync` "
            "it later\n") in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs" / "tiny" / "final_model").exists()  # stopped before training
