"""scaling.md, scaling.csv and the scaling plot, from scaling.jsonl (pure arithmetic and rendering)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.report.render import markdown_table, pyplot
from bench.report.tables import sig3
from bench.store.atomic import save_figure, write_csv, write_text
from bench.studies.scaling.scaling import ScaleRecord

MIB = 2**20


def load(out: Path) -> list[ScaleRecord]:
    return [
        ScaleRecord.from_json(json.loads(line)) for line in (out / "scaling.jsonl").read_text().splitlines() if line
    ]


def efficiency(record: ScaleRecord, records: list[ScaleRecord]) -> float | None:
    """Throughput at N replicas over N x the same engine and model at one replica, from the same sweep."""
    one = next((r for r in records if (r.engine, r.model, r.replicas, r.status) == (record.engine, record.model, 1, "ok")),
               None)  # fmt: skip
    if record.status != "ok" or one is None:
        return None
    return record.throughput_img_s / (record.replicas * one.throughput_img_s)


def _exposed(r: ScaleRecord) -> str:
    """Exposed communication in ms with its interval; 'none within noise' when the interval includes 0."""
    if r.exposed_comm_s is None:
        return "—"
    if r.exposed_comm_low_s is None:
        return sig3(r.exposed_comm_s * 1e3)
    text = f"{sig3(r.exposed_comm_s * 1e3)} [{sig3(r.exposed_comm_low_s * 1e3)} to {sig3(r.exposed_comm_high_s * 1e3)}]"
    return text + (" (none within noise)" if r.exposed_comm_low_s <= 0 <= r.exposed_comm_high_s else "")


def write_scaling_report(out: Path, env: dict) -> Path:
    records = load(out)
    lines = [
        "# Data-parallel scaling",
        "",
        f"- **Machine**: {env.get('cpu_model')}, {env.get('cpu_cores')} cores; commit {env.get('git_commit')}; "
        f"`{env.get('command_line')}` at {env.get('time')}",
    ]
    if records and records[0].device == "cpu":
        lines.append(
            f"- **On a CPU these figures are not a claim about GPUs**: the replicas share {env.get('cpu_cores')} cores "
            f"({records[0].threads_per_replica} thread(s) each; the 1-replica baseline runs with one replica's share), "
            "and the gradients travel through loopback and shared memory, not NVLink or a network."
        )
    lines += [
        "- **Weak scaling**: the batch per replica is fixed; the global batch is replicas x that. Throughput is the "
        "whole job's (global batch x steps over the slowest replica's window); efficiency = img/s at N / (N x img/s "
        "at 1 replica), both from this sweep.",
        "",
    ]
    methods = sorted({r.method for r in records if r.method})
    memory = sorted({f"{r.engine}: {r.memory_source}" for r in records if r.memory_source})
    lines += [f"- {m}" for m in methods] + [f"- Peak memory per replica, {m}" for m in memory] + [""]
    csv_rows = []
    for model in dict.fromkeys(r.model for r in records):
        members = [r for r in records if r.model == model]
        rows = []
        for r in members:
            eff = efficiency(r, records)
            peaks = [p for p in r.peak_memory_bytes_per_replica if p]
            rows.append([
                r.engine, r.replicas, r.nodes, r.global_batch, r.strategy,
                f"{sig3(r.throughput_img_s)} [{sig3(r.throughput_low_img_s)}-{sig3(r.throughput_high_img_s)}]"
                if r.status == "ok" else r.status.upper(),
                sig3(r.step_s * 1e3) if r.step_s else "—",
                _exposed(r),
                f"{eff:.0%}" if eff is not None else "—",
                sig3(r.gradient_bytes / MIB),
                sig3(max(peaks) / MIB) if peaks else "—",
                (r.error or "")[:80],
            ])  # fmt: skip
            csv_rows.append([r.engine, model, r.replicas, r.nodes, r.global_batch, r.status, r.throughput_img_s,
                             r.step_s, r.no_exchange_step_s, r.exposed_comm_s, eff, r.gradient_bytes,
                             max(peaks) if peaks else None, ",".join(map(str, r.failed_ranks))])  # fmt: skip
        lines += [
            f"## {model}",
            "",
            markdown_table(
                rows,
                [
                    "engine",
                    "replicas",
                    "nodes",
                    "global batch",
                    "strategy",
                    "img/s [95% CI]",
                    "step ms",
                    "exposed comm ms [95% CI]",
                    "efficiency",
                    "gradient MiB/step",
                    "peak MiB/replica",
                    "error",
                ],
                numbers=True,
            ),  # fmt: skip
            "",
        ]
    plot = _plot(records, out)
    if plot:
        lines += [f"![scaling]({plot.name})", ""]
    write_csv(out / "scaling.csv", ["engine", "model", "replicas", "nodes", "global_batch", "status", "throughput_img_s",
                                    "step_s", "no_exchange_step_s", "exposed_comm_s", "efficiency", "gradient_bytes",
                                    "peak_memory_bytes_per_replica", "failed_ranks"], csv_rows)  # fmt: skip
    return write_text(out / "scaling.md", "\n".join(lines) + "\n")


def _plot(records: list[ScaleRecord], out: Path) -> Path | None:
    ok = [r for r in records if r.status == "ok"]
    if not ok:
        return None
    plt = pyplot()

    fig, (ax_rate, ax_eff) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key in dict.fromkeys((r.engine, r.model) for r in ok):
        series = sorted((r for r in ok if (r.engine, r.model) == key), key=lambda r: r.replicas)
        label = f"{key[1]} ({key[0]})"
        ax_rate.plot([r.replicas for r in series], [r.throughput_img_s for r in series], "o-", label=label)
        effs = [(r.replicas, efficiency(r, records)) for r in series]
        ax_eff.plot([n for n, e in effs if e is not None], [e for n, e in effs if e is not None], "o-", label=label)
    ax_rate.set_xlabel("replicas")
    ax_rate.set_ylabel("img/s (whole job)")
    ax_eff.set_xlabel("replicas")
    ax_eff.set_ylabel("scaling efficiency")
    ax_eff.axhline(1.0, color="grey", lw=0.5)
    ax_rate.legend(fontsize=7)
    fig.tight_layout()
    path = out / "scaling.png"
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
