"""Write a run's rows: JSON, the Markdown report and the plots."""
import json
from pathlib import Path

from .measure import with_mfu
from .plots import plot_vs_seq_len
from .report import markdown


def write_outputs(rows: list[dict], meta: dict, out: Path, stem: str, json_path: Path | None = None) -> list[Path]:
    rows = [with_mfu(row, meta["peak_flops"]) for row in rows]
    text = json.dumps({"meta": meta, "rows": rows}, indent=1)
    paths = [out / f"{stem}.json", out / f"{stem}.md"]
    paths[0].write_text(text, encoding="utf-8")
    paths[1].write_text(markdown(rows, meta), encoding="utf-8")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(rows, indent=1), encoding="utf-8")  # the format: a list of rows
        paths.append(json_path)
    paths += plot_vs_seq_len(rows, out, stem)
    for path in paths:
        print(f"wrote {path}")
    return paths
