"""What apply_kernels did: patched layers counted per kind, and one line per reason something stayed plain."""
from collections import Counter
from dataclasses import dataclass, field

KINDS = ("lora", "mlp", "rms_norm", "rope", "attention")
_WHAT = {
    "lora": "lora_linear on {n} LoRA projections",
    "mlp": "lora_mlp on {n} MLP blocks",
    "rms_norm": "rms_norm on {n} RMSNorm modules",
    "rope": "apply_rope in {n} attention layers",
    "attention": "block-skipping CPU attention in {n} attention layers",
}


@dataclass
class PatchReport:
    family: str = "unknown"
    counts: Counter = field(default_factory=Counter)
    # (kind, reason) -> names of the modules that stayed on the plain path for that reason
    fallbacks: dict = field(default_factory=dict)
    turned_off: list = field(default_factory=list)  # off in the recipe
    checked_off: list = field(default_factory=list)  # off because the self-check failed them
    checks: list = field(default_factory=list)  # the self-check's lines
    notes: list = field(default_factory=list)

    def uses(self, kind: str) -> bool:
        """Whether this run uses fastft's kernel for `kind` (a kernels.<kind> switch) where the model allows."""
        return kind not in self.turned_off and kind not in self.checked_off

    def patched(self, kind: str) -> None:
        self.counts[kind] += 1

    def plain(self, kind: str, name: str, reason: str) -> None:
        # PEFT's wrapper adds base_model.model. to every name; the rest is the transformers module path
        self.fallbacks.setdefault((kind, reason), []).append(name.removeprefix("base_model.model."))

    def lines(self) -> list[str]:
        """The start-up summary's lines: one for what was patched, then one per kind off and per fallback reason."""
        done = [_WHAT[k].format(n=self.counts[k]) for k in KINDS if self.counts[k]]
        out = [f"{self.family}: " + ("; ".join(done) if done else "no layers patched")]
        out += [f"{kind}: off in the recipe (kernels.{kind}: false)" for kind in self.turned_off]
        out += self.checks
        for (kind, reason), names in self.fallbacks.items():
            where = names[0] if len(names) == 1 else f"{len(names)} modules, first {names[0]}"
            out.append(f"{kind}: plain path for {where}: {reason}")
        return out + self.notes
