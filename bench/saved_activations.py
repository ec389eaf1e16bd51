"""Bytes autograd keeps for the backward of one decoder layer, by op: fastft (its kernels; also with selective
checkpointing, which makes its fused MLP recompute gate and up) against transformers+PEFT.

    python bench/saved_activations.py --tag before   # then, after a change: --tag after

One decoder layer of Gemma 3 270M's shape (its config, random weights, sdpa attention, an input that requires grad
as a middle layer's does), LoRA r=16 / alpha 32 on the
seven projections, batch 2 x seq 1024, training mode, fp32, LoRA dropout 0 and 0.05. Every tensor saved for backward
while the layer runs is caught by torch.autograd.graph.saved_tensors_hooks; tensors sharing a storage count once
(the storage's bytes, charged to the first op that saved it); parameters (frozen weights, adapters) are not
activations and are left out. Each saved tensor is named by the module running when it was saved and by the autograd
node that holds it (found by walking the graph and unpacking every node's saved tensors).

Writes saved-activations.json (one entry per --tag, kept across runs) and saved-activations.md (all tags side by
side, the details of the last) under bench/results/<device>-<date>/.
"""
import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root in place of this folder, whose kernels.py
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # would shadow the `kernels` transformers imports

import torch  # noqa: E402

from bench.layer_model import gemma3_config, lora_config  # noqa: E402
from bench.machine import results_dir  # noqa: E402

BATCH, SEQ = 2, 1024
SYSTEMS = ("fastft", "fastft (selective)", "transformers+peft")  # selective: training.gradient_checkpointing
DROPOUTS = (0.0, 0.05)


class SavedLog:
    """Packs every saved tensor into an index, remembering the module path that was running when it was saved."""

    def __init__(self):
        self.tensors, self.modules, self.nodes = [], [], {}
        self.stack = ["(outside)"]
        self.node = None

    def pack(self, tensor):
        self.tensors.append(tensor)
        self.modules.append(self.stack[-1])
        return len(self.tensors) - 1

    def unpack(self, index):
        if self.node is not None:
            self.nodes.setdefault(index, self.node)
        return self.tensors[index]

    def watch(self, root: torch.nn.Module, prefix: str) -> list:
        """Forward hooks keeping self.stack = the module paths under root being run."""
        handles = []
        for name, module in root.named_modules():
            path = f"{prefix}.{name}" if name else prefix
            handles.append(module.register_forward_pre_hook(lambda *_, p=path: self.stack.append(p)))
            handles.append(module.register_forward_hook(lambda *_: self.stack.pop() and None))  # None: output kept
        return handles

    def name_nodes(self, output: torch.Tensor) -> None:
        """Walk the graph behind output; unpacking each node's saved tensors tells which node holds which index."""
        seen, todo = set(), [output.grad_fn]
        while todo:
            node = todo.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            self.node = type(node).__name__
            if hasattr(node, "saved_tensors"):  # a custom autograd.Function (fastft's kernels)
                node.saved_tensors  # noqa: B018 -- unpacks through the hook
            for attr in dir(node):
                if attr.startswith("_saved_"):
                    getattr(node, attr)  # unpacks through the hook
            todo += [fn for fn, _ in node.next_functions]
        self.node = None


def build(system: str, dropout: float):
    from peft import get_peft_model
    from transformers import Gemma3ForCausalLM

    torch.manual_seed(0)
    model = Gemma3ForCausalLM(gemma3_config(1))
    model = get_peft_model(model, lora_config(dropout=dropout))
    if system.startswith("fastft"):
        from fastft.patching import apply_kernels

        apply_kernels(model, checkpointing="selective" if system == "fastft (selective)" else False)
    return model.train()


def measure(system: str, dropout: float) -> dict:
    model = build(system, dropout)
    decoder = model.get_base_model().get_decoder()
    layer = decoder.layers[0]
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    log = SavedLog()
    handles = log.watch(layer, "layer")
    ids = torch.randint(0, model.config.vocab_size, (BATCH, SEQ), generator=torch.Generator().manual_seed(1))
    # An input that requires grad, as every layer but the first has: its input norm then saves it too.
    embeds = decoder.embed_tokens(ids).detach().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(log.pack, log.unpack):
        hidden = decoder(inputs_embeds=embeds, use_cache=False).last_hidden_state
    for handle in handles:
        handle.remove()
    log.name_nodes(hidden)
    return _table(log, params)


def _table(log: SavedLog, params: set) -> dict:
    """Unique storages saved inside the layer, grouped by (module, node), largest first."""
    groups = defaultdict(lambda: {"bytes": 0, "tensors": []})
    counted = set()
    for index, (tensor, module) in enumerate(zip(log.tensors, log.modules, strict=True)):
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if not module.startswith("layer") or key in params or key in counted or storage.nbytes() == 0:
            continue
        counted.add(key)
        group = groups[(module, log.nodes.get(index, "(not reached from the output)"))]
        group["bytes"] += storage.nbytes()
        group["tensors"].append(f"{str(tensor.dtype).removeprefix('torch.')}{list(tensor.shape)}")
    rows = [{"module": m, "node": n, **g} for (m, n), g in groups.items()]
    rows.sort(key=lambda row: -row["bytes"])
    return {"total_bytes": sum(row["bytes"] for row in rows), "rows": rows}


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def render(runs: dict) -> str:
    tags = list(runs)
    keys = [f"{system}, dropout {p}" for system in SYSTEMS for p in DROPOUTS]
    lines = ["# Saved activations of one decoder layer (bytes autograd keeps for backward)", "",
             f"Gemma 3 270M config, one decoder layer, fp32, batch {BATCH} x seq {SEQ}, sdpa attention, LoRA r=16 on "
             "7 projections, training mode; unique storages (a storage saved twice counts once), parameters left "
             "out. `python bench/saved_activations.py --tag TAG`.", "",
             "| system | " + " | ".join(f"{tag} (MiB)" for tag in tags) + " |",
             "|---|" + "---|" * len(tags)]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(_mib(runs[t][key]["total_bytes"]) if key in runs[t] else "-"
                                               for t in tags) + " |")
    last = runs[tags[-1]]
    for key in keys:
        if key not in last:
            continue
        lines += ["", f"## {key} ({tags[-1]}): {_mib(last[key]['total_bytes'])} MiB", "",
                  "| module | autograd node | MiB | tensors |", "|---|---|---|---|"]
        lines += [f"| {row['module']} | {row['node']} | {_mib(row['bytes'])} | {', '.join(row['tensors'])} |"
                  for row in last[key]["rows"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="now", help="the name of this measurement's column (e.g. before, after)")
    args = parser.parse_args(argv)
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "saved-activations.json"
    runs = json.loads(path.read_text())["runs"] if path.exists() else {}
    runs[args.tag] = {}
    for system in SYSTEMS:
        for dropout in DROPOUTS:
            result = measure(system, dropout)
            runs[args.tag][f"{system}, dropout {dropout}"] = result
            print(f"{system}, dropout {dropout}: {_mib(result['total_bytes'])} MiB", flush=True)
    meta = {"model": "Gemma 3 270M config, 1 layer", "batch": BATCH, "seq": SEQ, "dtype": "float32",
            "torch": torch.__version__}
    path.write_text(json.dumps({"settings": meta, "runs": runs}, indent=1) + "\n")
    (out / "saved-activations.md").write_text(render(runs))
    print(f"wrote {out / 'saved-activations.md'}")


if __name__ == "__main__":
    main()
