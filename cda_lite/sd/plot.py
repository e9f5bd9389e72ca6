"""``python -m cda_lite.sd plot DIR``: the training curves of a run (``DIR/log.jsonl``) in one PNG —
each constraint's batch mean Ê r_i against its level, the multipliers λ_i, the path-wise KL and the
Lagrangian, against the optimiser step."""
from __future__ import annotations

import json
import os


def read_log(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "log.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"run_dir: no log.jsonl in {run_dir!r} (is it the --out of a training run?)")
    with open(path, encoding="utf8") as f:
        rows = [json.loads(s) for s in f if s.strip()]
    if not rows:
        raise ValueError(f"run_dir: {path!r} has no step yet")
    return rows


def _levels(run_dir: str) -> dict:
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        return {}
    from omegaconf import OmegaConf

    from cda_lite.sd.config import reward_name
    cfg = OmegaConf.load(path)
    return {reward_name(c.reward): (float(c.level), str(c.direction)) for c in cfg.get("constraints", [])}


def plot_run(run_dir: str, out: str | None = None) -> str:
    """Draw the curves of ``run_dir`` to ``out`` (default ``run_dir/curves.png``); returns the path."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cda_lite.sd.files import atomic_write_bytes

    rows = read_log(run_dir)
    steps = [r["step"] for r in rows]
    names = [k[2:-1] for k in rows[0] if k.startswith("E[")]
    levels = _levels(run_dir)
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    for n in names:
        line, = ax[0].plot(steps, [r[f"E[{n}]"] for r in rows], marker=".", label=n)
        if n in levels:
            lvl, d = levels[n]
            ax[0].axhline(lvl, color=line.get_color(), ls="--", lw=1, label=f"level {d} {lvl:g}")
        ax[1].plot(steps, [r[f"lam[{n}]"] for r in rows], marker=".", label=n)
    ax[0].set(title="batch mean Ê r_i (σ units where normalised)", xlabel="step")
    ax[1].set(title="multipliers λ_i", xlabel="step")
    ax[2].plot(steps, [r["kl"] for r in rows], marker=".", label="KL (path-wise)")
    ax[2].plot(steps, [r["loss"] for r in rows], marker=".", label="Lagrangian")
    ax[2].set(title="KL and loss", xlabel="step")
    for a in ax:
        a.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    out = out or os.path.join(run_dir, "curves.png")
    atomic_write_bytes(buf.getvalue(), out)
    return out
