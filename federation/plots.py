"""PNG plots of a run: accuracy and privacy spent per round, and upload bytes per client.

matplotlib with the Agg backend only (no display needed); each function writes one file and
returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend chosen first)
from matplotlib.ticker import MaxNLocator  # noqa: E402


def plot_accuracy_and_epsilon(rounds: Sequence[int], accuracy: Sequence[float], epsilon: Sequence[float],
                              path: Path, *, baseline_accuracy: float | None = None,
                              budget: float | None = None) -> Path:
    """Test accuracy (left axis) and the largest per-client ε spent so far (right axis) vs round."""
    figure, left = plt.subplots(figsize=(7, 4))
    left.plot(rounds, accuracy, marker="o", markersize=3, color="tab:blue", label="fedvault accuracy")
    if baseline_accuracy is not None:
        left.axhline(baseline_accuracy, color="tab:blue", linestyle="--", linewidth=1,
                     label=f"float32 FedAvg baseline ({baseline_accuracy:.3f})")
    left.set_xlabel("round")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_ylabel("test accuracy", color="tab:blue")
    left.set_ylim(0, 1)
    right = left.twinx()
    right.plot(rounds, epsilon, marker="s", markersize=3, color="tab:red", label="ε spent (max over clients)")
    if budget is not None:
        right.axhline(budget, color="tab:red", linestyle=":", linewidth=1, label=f"budget ε = {budget:g}")
    right.set_ylabel("ε spent", color="tab:red")
    right.set_ylim(bottom=0)
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    labels = left.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
    left.legend(handles, labels, loc="lower right", fontsize=8)
    left.set_title("Accuracy and privacy spent per round")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_upload_bytes(rounds: Sequence[int], bytes_per_client: Sequence[float], float32_bytes: float,
                      path: Path) -> Path:
    """Masked-input bytes uploaded per client per round, against sending the float32 update."""
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.bar(rounds, bytes_per_client, color="tab:green", label="fedvault upload per client (all stages)")
    axis.axhline(float32_bytes, color="black", linestyle="--", linewidth=1,
                 label=f"float32 update ({float32_bytes / 1024:.1f} KiB)")
    axis.set_xlabel("round")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel("bytes")
    axis.set_title("Uplink bytes per client")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
