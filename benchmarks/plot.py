"""Draws the benchmarks' figures from their JSON files into one PNG.

    .venv/bin/python -m benchmarks.plot     # → benchmarks/results/benchmarks.png

A panel whose JSON file is missing is left out.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _control_plane(ax: Any, data: dict[str, Any]) -> None:
    runs = {"control plane\n(72 dpi)": data["ceiling"]}
    if "at_render_dpi" in data:
        runs[f"with render+crops\n({data['at_render_dpi'].get('dpi', 200)} dpi)"] = data[
            "at_render_dpi"
        ]
    roles = ["cpu", "gpu", "postgres", "redis", "storage", "submitter"]
    bottoms = [0.0] * len(runs)
    for role in roles:
        values = [run["cpu_ms_per_page"].get(role, 0.0) for run in runs.values()]
        ax.bar(list(runs), values, bottom=bottoms, label=role)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    for i, run in enumerate(runs.values()):
        ax.text(
            i, bottoms[i], f"{run['pages_per_s']} pages/s\n{run['regions_per_s']} regions/s",
            ha="center", va="bottom", fontsize=8,
        )  # fmt: skip
    ax.set_ylim(0, max(bottoms) * 1.3)
    ax.set_ylabel("CPU ms per page")
    ax.set_title(f"Control plane, no-cost engines, R={data['ceiling']['regions_per_page']}")
    ax.legend(fontsize=7, ncol=2)


def _stages(ax: Any, data: dict[str, Any]) -> None:
    modes = data["modes"]
    stages = [s for s in ("render", "layout", "text_layer", "queue_wait", "recognize", "record",
                          "assemble") if any(s in m["stages"] for m in modes.values())]  # fmt: skip
    width = 0.8 / (2 * len(modes))
    for j, (mode, result) in enumerate(modes.items()):
        for k, q in enumerate(("p50_ms", "p95_ms")):
            offset = (2 * j + k) * width - 0.4 + width / 2
            values = [result["stages"].get(s, {}).get(q, 0) for s in stages]
            ax.bar([i + offset for i in range(len(stages))], values, width,
                   label=f"{mode} {q[:3]}", alpha=1.0 if k == 0 else 0.55)  # fmt: skip
    ax.set_xticks(range(len(stages)), stages, rotation=30, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("ms")
    ax.set_title(f"Stage timings, {data['documents']} corpus pages")
    ax.legend(fontsize=7)


def _scale_out(ax: Any, data: dict[str, Any]) -> None:
    scale = data["scale_out"]
    values = [scale["one_per_role"]["pages_per_s"], scale["two_per_role"]["pages_per_s"]]
    ax.bar(["1 worker process\nper role", "2 worker processes\nper role"], values)
    for i, v in enumerate(values):
        ax.text(i, v, f"{v} pages/s", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, max(values) * 1.25)
    ax.set_ylabel("pages per second")
    ax.set_title(f"Scale-out (ratio {scale['ratio']}, one pool process each)")


def _kind(command: str) -> str:
    if "ForkPoolWorker" in command:
        role = re.search(r"celeryd: (\w+)@", command)
        return f"{role.group(1) if role else '?'} child"
    if command.startswith("celery worker"):
        return command.split()[-1] + " main"
    return "pagemill run"


def _memory(ax: Any, data: dict[str, Any]) -> None:
    labels = {
        "baseline": f"{data['baseline']['pages']} pages",
        "big": f"{data['big']['pages']} pages",
    }
    kinds: dict[str, dict[str, float]] = {}
    for key, label in labels.items():
        for proc in data[key]["processes"]:
            kind = _kind(proc["command"])
            row = kinds.setdefault(kind, {})
            row[label] = max(row.get(label, 0.0), proc["peak_rss_mib"])
    names = sorted(kinds)
    width = 0.38
    for j, label in enumerate(labels.values()):
        ax.bar([i + (j - 0.5) * width for i in range(len(names))],
               [kinds[n].get(label, 0) for n in names], width, label=label)  # fmt: skip
    ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
    ax.set_ylabel("peak RSS, MiB")
    ax.set_title("Memory per process: long document vs short")
    ax.legend(fontsize=7)


def _pipeline(ax: Any, runs: dict[str, dict[str, Any]]) -> None:
    modes = list(runs)
    queued = [runs[m]["pipeline_pages_per_second_wall"] for m in modes]
    loop = [runs[m]["sequential_pages_per_second"] for m in modes]
    ax.bar([i - 0.2 for i in range(len(modes))], queued, 0.4, label="pagemill run")
    ax.bar([i + 0.2 for i in range(len(modes))], loop, 0.4, label="plain loop")
    ax.set_xticks(range(len(modes)), [f"mode {m}" for m in modes])
    ax.set_yscale("log")
    ax.set_ylabel("pages per second")
    ax.set_title("Embedded run vs a plain loop, real engines")
    ax.legend(fontsize=7)


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[Any, Any]] = []
    if cp := _load("control-plane.json"):
        panels.append((_control_plane, cp))
        if "scale_out" in cp:
            panels.append((_scale_out, cp))
    if stages := _load("stage-timings.json"):
        panels.append((_stages, stages))
    if memory := _load("big-document-1000.json"):
        panels.append((_memory, memory))
    pipeline = {m: r for m in ("ocr", "auto") if (r := _load(f"pipeline-{m}.json"))}
    if pipeline:
        panels.append((_pipeline, pipeline))
    if not panels:
        raise SystemExit("no results to plot: run the benchmarks first")
    columns = 2
    rows = (len(panels) + 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(12, 4.2 * rows), squeeze=False)
    for ax, (draw, data) in zip(axes.flat, panels, strict=False):
        draw(ax, data)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle("pagemill benchmarks (2-core machine; benchmarks/results/*.json)")
    fig.tight_layout()
    out = RESULTS / "benchmarks.png"
    fig.savefig(out, dpi=110)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
