"""`fastft push`: publish a run's adapter (or its merged checkpoint, or a GGUF file) on the Hugging Face Hub.

Everything that can be checked here is done first, into a staging folder: the exact files the upload sends, and a
model card (README.md) written from the run folder (its recipe, data statistics and metrics.json). The upload
itself is the folder sent as one commit; without a network or a token it ends in one line, the staging kept.
"""
import os
import shutil
from pathlib import Path

import yaml

from .. import __version__
from ..errors import FastftError
from ..models.adapters import base_name, read_adapter_config
from ..runtime.outputs import METRICS, RECIPE_FILE
from .report import DATA_STATS, _data_section, _results_section, _task_section, _usage_section, read_json

CARD = "README.md"
HUB = "hub"  # the default staging folder, in the run folder
# Written by the trainer, not part of a model: pickled TrainingArguments and PEFT's blank card (fastft writes its own).
LEFT_OUT = {"training_args.bin", CARD}
SAMPLES = Path(__file__).resolve().parents[2] / "data"  # fastft's own hand-written samples, in a source checkout


def default_staging(adapter: Path) -> Path:
    return Path(adapter).parent / HUB


def stage(adapter: Path, staging: Path, merged: Path | None = None, gguf: Path | None = None) -> list[str]:
    """Fill `staging` with what the upload sends; returns the file names. The run's own <run>/hub is fastft's and
    is staged afresh each time; a folder the user names must be new or empty."""
    adapter, staging = Path(adapter), Path(staging)
    base = base_name(read_adapter_config(adapter), None, adapter)
    if merged and gguf:
        raise FastftError("--merged and --gguf name two different uploads", hint="push one of them at a time")
    if merged and not (Path(merged) / "config.json").is_file():
        raise FastftError("no config.json: this is not a merged checkpoint", where=str(merged),
                          hint="pass the --out folder of `fastft merge`")
    if gguf and not (Path(gguf).is_file() and Path(gguf).read_bytes()[:4] == b"GGUF"):
        raise FastftError("not a GGUF file", where=str(gguf), hint="pass the file `fastft export --gguf` wrote")
    if staging == default_staging(adapter) and staging.is_dir():
        shutil.rmtree(staging)
    if staging.exists() and any(staging.iterdir()):
        raise FastftError("the staging folder is not empty", where=str(staging), hint="name a new or empty folder")
    staging.mkdir(parents=True, exist_ok=True)
    sources = [Path(gguf)] if gguf else [p for p in sorted(Path(merged or adapter).iterdir()) if p.is_file() and p.name not in LEFT_OUT]
    run_dir = adapter.parent
    sources += [run_dir / name for name in (RECIPE_FILE, METRICS) if (run_dir / name).is_file()]
    for source in sources:
        _link_or_copy(source, staging / source.name)
    kind = "gguf" if gguf else "merged" if merged else "adapter"
    (staging / CARD).write_text(model_card(run_dir, base, kind, Path(gguf).name if gguf else None), encoding="utf-8")
    return sorted(p.name for p in staging.iterdir())


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the filesystem allows one: a merged model or a GGUF file is not copied twice."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def model_card(run_dir: Path, base: str, kind: str, gguf_name: str | None) -> str:
    recipe_text = (run_dir / RECIPE_FILE).read_text(encoding="utf-8") if (run_dir / RECIPE_FILE).is_file() else ""
    recipe = yaml.safe_load(recipe_text) or {}
    metrics = read_json(run_dir / METRICS) or {}
    stats = read_json(run_dir / DATA_STATS) or {}
    library = {"adapter": "peft", "merged": "transformers", "gguf": "gguf"}[kind]
    front = yaml.safe_dump({"base_model": base, "library_name": library, "tags": ["fastft", "lora", kind]}, sort_keys=False)
    lora = recipe.get("lora", {})
    what = {"adapter": "a LoRA adapter", "merged": "the base model with its LoRA adapter merged in",
            "gguf": f"a GGUF file ({gguf_name}) of the merged model, for llama.cpp and Ollama"}[kind]
    sections = [
        f"---\n{front}---",
        f"# {recipe.get('experiment', run_dir.name)}\n\nThis repository holds {what}, fine-tuned from `{base}` with "
        f"fastft {__version__} (LoRA rank {lora.get('r', '?')}, alpha {lora.get('alpha', '?')}, "
        f"task {recipe.get('dataset', {}).get('task', '?')}).",
        _results_section(metrics) if metrics else "## Results\n\nThe run folder holds no metrics.json.",
        _task_section(metrics, run_dir),
        _usage_section(metrics),
        _data_section(stats),
        "## License and data\n\n" + _data_notice(stats) + f" The weights derive from `{base}`: its license and terms "
        "of use apply to them.",
        f"## Recipe\n\n```yaml\n{recipe_text.rstrip()}\n```" if recipe_text else "",
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _data_notice(stats: dict) -> str:
    paths = {numbers.get("path") for numbers in stats.values() if numbers.get("path")}
    ours = {p for p in paths if Path(p).resolve().is_relative_to(SAMPLES)}
    if paths and ours == paths:
        return ("The training data are fastft's own samples, hand-written for fastft (no public dataset and no "
                "personal data: names and numbers are placeholders such as #Person1#).")
    return ("The training data are the files listed under Data, not published here; their terms apply to this "
            "model." if paths else "The run folder does not say which data the model was trained on.")


def upload(staging: Path, repo: str, private: bool) -> str:
    """Send the staging folder to the Hub as one commit; returns the commit's address."""
    from huggingface_hub import HfApi, get_token

    if get_token() is None:
        raise FastftError("no Hugging Face token: the Hub takes uploads from logged-in users only", where=repo,
                          hint=f"run `hf auth login` or set HF_TOKEN; the files are staged in {staging}")
    try:
        api = HfApi()
        api.create_repo(repo, private=private, exist_ok=True)
        return api.upload_folder(folder_path=str(staging), repo_id=repo, commit_message="fastft push").commit_url
    except Exception as error:  # the network boundary: offline, no token, refused, unreachable
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FastftError(f"cannot upload to the Hugging Face Hub ({type(error).__name__}: {reason})", where=repo,
                          hint=f"check the network (and unset HF_HUB_OFFLINE); the files are staged in {staging}") from None
