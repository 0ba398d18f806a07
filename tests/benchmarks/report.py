"""Summaries, the Markdown page and the chart of one benchmark run."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

HERD_SIZES = (8, 32, 64)


def percentile(values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile of `values` (fraction 0.5 is the median)."""
    ordered = sorted(values)
    index = max(0, math.ceil(fraction * len(ordered)) - 1)
    return ordered[index]


@dataclass
class LatencyRow:
    name: str
    p50: float
    p90: float
    p99: float
    samples: int

    @classmethod
    def from_samples(cls, name: str, durations_ns: list[int]) -> LatencyRow:
        micros = [duration / 1000 for duration in durations_ns]
        return cls(
            name,
            percentile(micros, 0.50),
            percentile(micros, 0.90),
            percentile(micros, 0.99),
            len(micros),
        )


@dataclass
class HerdCell:
    """Every trial of one candidate at one herd size, pooled."""

    workers: int = 0
    duplicates: int = 0
    bind_failures: int = 0
    errors: int = 0
    pick_micros: list[float] = field(default_factory=list)

    def add(self, job: dict[str, Any]) -> None:
        results = job["results"]
        self.workers += job["workers"]
        self.errors += job["workers"] - sum(1 for r in results if "port" in r)
        ports = Counter(result["port"] for result in results if "port" in result)
        self.duplicates += sum(count - 1 for count in ports.values())
        self.bind_failures += sum(1 for r in results if "port" in r and not r["bound"])
        self.pick_micros.extend(r["pick_seconds"] * 1e6 for r in results if "port" in r)


def summarize_herds(
    jobs: list[dict[str, Any]], order: list[str]
) -> dict[str, dict[int, HerdCell]]:
    """Pool the jobs by candidate and herd size, candidates in the given order."""
    cells: dict[str, dict[int, HerdCell]] = {
        name: {} for name in order if any(job["candidate"] == name for job in jobs)
    }
    for job in jobs:
        by_size = cells.setdefault(job["candidate"], {})
        by_size.setdefault(job["workers"], HerdCell()).add(job)
    return cells


@dataclass
class FillRow:
    """Median time per claim in each part of a fill, in microseconds, over the rounds."""

    name: str
    held: int
    quarters: list[float]
    first_percent: float
    last_percent: float
    fds_per_claim: float
    rss_per_claim: float
    heap_per_claim: float

    @property
    def growth(self) -> float:
        return self.last_percent / self.first_percent

    @classmethod
    def from_rounds(cls, name: str, rounds: list[dict[str, Any]]) -> FillRow:
        def part(start: float, stop: float) -> float:
            """Median over the rounds of each round's median in this part of the fill."""
            medians = []
            for result in rounds:
                durations = result["durations"]
                low = int(start * len(durations))
                high = max(low + 1, int(stop * len(durations)))
                medians.append(statistics.median(durations[low:high]) / 1000)
            return float(statistics.median(medians))

        def per_claim(key: str) -> float:
            return float(statistics.median(result[key] for result in rounds))

        return cls(
            name,
            held=min(result["held"] for result in rounds),
            quarters=[part(quarter / 4, (quarter + 1) / 4) for quarter in range(4)],
            first_percent=part(0, 0.01),
            last_percent=part(0.99, 1.0),
            fds_per_claim=per_claim("fds_per_claim"),
            rss_per_claim=per_claim("rss_per_claim"),
            heap_per_claim=per_claim("heap_per_claim"),
        )


@dataclass
class Target:
    name: str
    measured: str
    passed: bool
    note: str = ""

    def add_note(self, note: str) -> None:
        self.note = f"{self.note}; {note}" if self.note else note

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "MISS"


@dataclass
class Extra:
    """Output of a benchmark script that other modules provide."""

    title: str
    rows: list[dict[str, object]] = field(default_factory=list)
    text: str = ""
    problem: str = ""


@dataclass
class Page:
    command: str
    machine: dict[str, str]
    latency: list[LatencyRow]
    herds: dict[str, dict[int, HerdCell]]
    fills: list[FillRow]
    targets: list[Target]
    settings: dict[str, object]
    notes: list[str] = field(default_factory=list)
    extras: list[Extra] = field(default_factory=list)
    profiles: dict[str, str] = field(default_factory=dict)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render_page(page: Page, chart_name: str) -> str:
    parts = [
        "# Benchmarks",
        "",
        "aioportclaim against the tools it replaces: what one claim costs, what",
        "happens when many processes pick ports at once, and what holding many",
        "claims costs. One run measures every candidate, interleaved, so that the",
        "targets below compare figures taken under the same machine load.",
        "",
        f"- Command: `{page.command}`",
        *(f"- {key}: {value}" for key, value in page.machine.items()),
        "",
        "Other jobs shared this machine during the run, so absolute numbers are",
        "noisy. Every target is therefore a ratio between candidates of the same run.",
        "",
        f"![Latency, herd and fill charts]({chart_name})",
        "",
        "## Targets",
        "",
        markdown_table(
            ["Target", "Measured", "Result", "Note"],
            [[t.name, t.measured, t.verdict, t.note] for t in page.targets],
        ),
        "",
        *render_latency(page),
        *render_herds(page),
        *render_fills(page),
        *render_extras(page),
        *render_notes(page),
        *render_profiles(page),
    ]
    return "\n".join(parts).rstrip() + "\n"


def render_latency(page: Page) -> list[str]:
    rows = [
        [row.name, number(row.p50), number(row.p90), number(row.p99), str(row.samples)]
        for row in page.latency
    ]
    return [
        "## Latency of one claim",
        "",
        "Microseconds to get a port and give it back, in one process. The",
        "floors and the minimal correct claim are plain synchronous Python;",
        "claim_port runs in one long-lived event loop per backend.",
        "",
        markdown_table(["Candidate", "p50 µs", "p90 µs", "p99 µs", "Samples"], rows),
        "",
    ]


def render_herds(page: Page) -> list[str]:
    header = ["Candidate"]
    for size in HERD_SIZES:
        header += [f"N={size} duplicates", f"N={size} bind failures"]
    header += ["N=64 pick p50 µs", "N=64 pick p99 µs"]
    rows = []
    for name, cells in page.herds.items():
        row = [name]
        for size in HERD_SIZES:
            cell = cells.get(size, HerdCell())
            failures = f"{cell.bind_failures}"
            if cell.errors:
                failures += f" (+{cell.errors} errors)"
            row += [f"{cell.duplicates} of {cell.workers}", failures]
        biggest = cells.get(HERD_SIZES[-1], HerdCell())
        if biggest.pick_micros:
            row += [
                number(percentile(biggest.pick_micros, 0.5)),
                number(percentile(biggest.pick_micros, 0.99)),
            ]
        else:
            row += ["-", "-"]
        rows.append(row)
    trials = page.settings.get("herd trials")
    return [
        "## Collisions under concurrent processes",
        "",
        f"N processes start together ({trials} trials per size), pick a port,",
        "wait 0-20 ms while the number is handed on, then bind it with",
        "SO_REUSEADDR and listen, as a server does. A duplicate is a port picked",
        "by more than one process of a trial; a bind failure is a bind that",
        "raised. claim_port and the two lock-file claims hold the bound socket",
        "throughout. A pick time runs from the moment a process returns from the",
        "common start to the port in hand. It includes preemption among the N",
        "processes while picking, but not the wait for a CPU before the pick.",
        "",
        markdown_table(header, rows),
        "",
    ]


def render_fills(page: Page) -> list[str]:
    rows = [
        [
            row.name,
            str(row.held),
            *(number(value) for value in row.quarters),
            number(row.first_percent),
            number(row.last_percent),
            f"{row.growth:.1f}x",
        ]
        for row in page.fills
    ]
    footprint_rows = [
        [
            row.name,
            f"{row.fds_per_claim:.2f}",
            f"{row.rss_per_claim / 1024:.1f}",
            f"{row.heap_per_claim / 1024:.1f}",
        ]
        for row in page.fills
    ]
    return [
        "## Filling a 2,000-port range",
        "",
        "One process claims every port of the window in turn and holds all",
        "earlier claims. Median microseconds per claim in each quarter of the",
        "fill, in its first and last 1 %, and the ratio of the last 1 % to the",
        "first.",
        "",
        markdown_table(
            [
                "Candidate",
                "Claims",
                "Q1",
                "Q2",
                "Q3",
                "Q4",
                "First 1 %",
                "Last 1 %",
                "Growth",
            ],
            rows,
        ),
        "",
        "## Descriptors and memory per held claim",
        "",
        "Measured in the fill above: open descriptors and resident memory with",
        "every claim held, minus the same before the fill, per claim. The Python",
        "heap comes from a second fill of a quarter of the window under",
        "tracemalloc. Kernel memory of sockets and open files is not included.",
        "",
        markdown_table(
            ["Candidate", "Descriptors", "Resident KiB", "Python heap KiB"],
            footprint_rows,
        ),
        "",
    ]


def render_extras(page: Page) -> list[str]:
    lines: list[str] = []
    for extra in page.extras:
        lines += [f"## {extra.title}", ""]
        if extra.problem:
            lines += [f"Not measured: {extra.problem}", ""]
        if extra.rows:
            header = list(dict.fromkeys(key for row in extra.rows for key in row))
            rows = [[str(row.get(key, "")) for key in header] for row in extra.rows]
            lines += [markdown_table(header, rows), ""]
        if extra.text:
            lines += ["```", extra.text.rstrip(), "```", ""]
    return lines


def render_notes(page: Page) -> list[str]:
    settings = ", ".join(f"{key}: {value}" for key, value in page.settings.items())
    return [
        "## Notes",
        "",
        f"- Settings: {settings}.",
        *(f"- {note}" for note in page.notes),
        "",
    ]


def render_profiles(page: Page) -> list[str]:
    lines: list[str] = []
    for title, text in page.profiles.items():
        lines += [f"## Profile: {title}", "", "```", text.rstrip(), "```", ""]
    return lines


def draw_chart(page: Page, path: Path) -> None:
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(14, 10))
    draw_latency(axes[0][0], page.latency)
    draw_herd_failures(axes[0][1], page.herds)
    draw_herd_latency(axes[1][0], page.herds)
    draw_fill(axes[1][1], page.fills)
    figure.suptitle(f"aioportclaim benchmarks, {page.machine.get('Date', '')}")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def draw_latency(axis: Any, rows: list[LatencyRow]) -> None:
    names = [row.name for row in rows]
    positions = range(len(rows))
    height = 0.27
    for offset, (label, values) in enumerate(
        (
            ("p50", [row.p50 for row in rows]),
            ("p90", [row.p90 for row in rows]),
            ("p99", [row.p99 for row in rows]),
        )
    ):
        axis.barh(
            [p + (offset - 1) * height for p in positions], values, height, label=label
        )
    axis.set_yticks(list(positions), names, fontsize=8)
    axis.invert_yaxis()
    axis.set_xscale("log")
    axis.set_xlabel("µs per claim (log scale)")
    axis.set_title("Latency of one claim")
    axis.legend(fontsize=8)


def draw_herd_failures(axis: Any, herds: dict[str, dict[int, HerdCell]]) -> None:
    names = list(herds)
    width = 0.8 / len(HERD_SIZES)
    for offset, size in enumerate(HERD_SIZES):
        values = [
            herds[name].get(size, HerdCell()).bind_failures
            + herds[name].get(size, HerdCell()).errors
            for name in names
        ]
        axis.bar(
            [i + offset * width for i in range(len(names))],
            values,
            width,
            label=f"N={size}",
        )
    axis.set_xticks(
        [i + width for i in range(len(names))],
        names,
        rotation=30,
        ha="right",
        fontsize=8,
    )
    axis.yaxis.get_major_locator().set_params(integer=True)
    axis.set_ylabel("failed binds and errors, all trials")
    axis.set_title("Failures when N processes pick at once")
    axis.legend(fontsize=8)


def draw_herd_latency(axis: Any, herds: dict[str, dict[int, HerdCell]]) -> None:
    names = [
        name for name, cells in herds.items() if cells.get(64, HerdCell()).pick_micros
    ]
    p50 = [percentile(herds[name][64].pick_micros, 0.5) for name in names]
    p99 = [percentile(herds[name][64].pick_micros, 0.99) for name in names]
    positions = range(len(names))
    axis.barh([p - 0.2 for p in positions], p50, 0.4, label="p50")
    axis.barh([p + 0.2 for p in positions], p99, 0.4, label="p99")
    axis.set_yticks(list(positions), names, fontsize=8)
    axis.invert_yaxis()
    axis.set_xscale("log")
    axis.set_xlabel("µs from the common start to a port (log scale)")
    axis.set_title("Pick time in a herd of 64 processes")
    axis.legend(fontsize=8)


def draw_fill(axis: Any, rows: list[FillRow]) -> None:
    labels = ["Q1", "Q2", "Q3", "Q4", "last 1 %"]
    for row in rows:
        axis.plot(labels, [*row.quarters, row.last_percent], marker="o", label=row.name)
    axis.set_yscale("log")
    axis.set_ylabel("median µs per claim (log scale)")
    axis.set_title("Filling 2,000 ports while holding every claim")
    axis.legend(fontsize=8)
