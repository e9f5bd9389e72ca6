"""Write the "In this chapter" card (objectives, prerequisites, hardware, run time) under each
chapter's title. Idempotent: an existing card (the block between the two CARD markers) is replaced.

    python tools/chapter_cards.py book

Run times are wall-clock times of each chapter as a notebook test (nbval, profile ``fast``, one
torch thread, one chapter at a time, on a 2-core machine shared with other jobs; measured
2026-12-02); the build's own timings are on the execution statistics page.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

START, END = "% chapter card (tools/chapter_cards.py)", "% end of chapter card"

# chapter: (objectives, prerequisites, hardware, fast-profile run time)
CARDS = {
    "01": (["noise a Gaussian mixture in closed form and write its exact score and ideal ε-predictor",
            "write the DDPM and DDIM reverse steps from scratch and check them against the library",
            "train a small ε-network and measure how far its samples are from the data"],
           "Python, NumPy and a little PyTorch; Gaussian densities, Bayes' rule, expectations",
           "any CPU", "about 1 min"),
    "02": (["derive the reward-tilted distribution q·e^{λr}/Z as the solution of KL-regularised reward maximisation",
            "tilt a Gaussian and a mixture exactly, and read the reward–KL frontier off log Z",
            "check a tilt by self-normalised importance sampling, and see when that fails"],
           "{doc}`01_diffusion_2d` (mixtures); the KL divergence",
           "any CPU", "about 20 s"),
    "03": (["state constrained alignment (UR-A) and its Lagrangian dual",
            "find λ* by projected dual ascent and by a quasi-Newton solver, and read KKT conditions",
            "interpret λ* as the price of a level, and recognise infeasible levels"],
           "{doc}`02_reward_tilting`; Lagrange multipliers (convex duality helps, the chapter recalls it)",
           "any CPU", "about 25 s"),
    "04": (["run Algorithm 1: primal steps on a diffusion model, dual steps on λ",
            "compare the learned multipliers and samples with the exact answer of Chapter 3",
            "estimate the path-wise KL of a fine-tuned sampler and avoid two gradient traps"],
           "{doc}`03_constrained_alignment`; stochastic gradient descent in PyTorch",
           "any CPU", "about 2.5 min"),
    "05": (["solve the min–max composition (AND) exactly: the centre of the smallest enclosing circle",
            "measure the KL between two diffusion models with Lemma 2",
            "run Algorithms 2 and 3 and see where the dual-only version settles"],
           "{doc}`03_constrained_alignment` (duality) and {doc}`01_diffusion_2d` (ε-models)",
           "any CPU", "about 2.5 min"),
    "06": (["state the fair mixture (OR) problem and its maximal-entropy dual",
            "express a diffusion model's cross-entropy as a weighted denoising loss",
            "learn the mixture weights with diffusion models"],
           "{doc}`05_products_of_experts`",
           "any CPU", "about 1 min"),
    "07": (["compare training-free routes to the tilt: reward guidance, DAS (SMC), Diffusion Blend, MSDDA",
            "implement systematic resampling and measure each method's distance to the exact tilt",
            "explain the Jensen gap of blending scores and correct it with path weights"],
           "{doc}`02_reward_tilting` and {doc}`04_learning_constraints`",
           "any CPU", "about 1.5 min"),
    "08": (["train a small diffusers UNet on 8×8 digits on a CPU",
            "compare it with two models we can write down: the best Gaussian and the ideal denoiser",
            "define rewards on pictures and check their gradients"],
           "{doc}`01_diffusion_2d`; convolutional networks at the level of using diffusers",
           "any CPU (the pretrained checkpoint ships in data/)", "about 1.5 min"),
    "09": (["normalise rewards in units of the pretrained model",
            "run constrained alignment, AND composition and DAS on pictures",
            "read what the multipliers say when nothing is exact"],
           "{doc}`04_learning_constraints`, {doc}`05_products_of_experts`, {doc}`07_inference_time`, {doc}`08_digits`",
           "any CPU", "about 1 min"),
    "10": (["run the same primal–dual core on Stable Diffusion 1.5 with LoRA adapters",
            "normalise image rewards, estimate the KL to the frozen model and save a diffusers adapter",
            "know which of the paper's settings and numbers the code reproduces"],
           "{doc}`04_learning_constraints`, {doc}`09_images`",
           "CPU with a tiny random pipeline (profiles fast and full); the real runs need a CUDA GPU and the "
           "SD 1.5 weights (`CDA_DEVICE=cuda`)", "about 30 s"),
    "11": (["compose LoRA experts and prompt concepts with Algorithm 3 at SD scale",
            "keep sampling and KL measurement on one distribution",
            "compare with the inference-time rivals on images"],
           "{doc}`05_products_of_experts`, {doc}`07_inference_time`, {doc}`10_sd_constraints`",
           "CPU with a tiny random pipeline; the real runs need a CUDA GPU and the SD 1.5 weights "
           "(`CDA_DEVICE=cuda`)", "about 45 s"),
}


def card(key: str, times: dict[str, str]) -> str:
    objectives, prereq, hardware, runtime = CARDS[key]
    runtime = re.sub(r"\{(\d\d)\}", lambda m: times.get(m.group(1), "a few minutes"), runtime)
    lines = [START, "```{admonition} In this chapter", ":class: tip", "", "**You will be able to**", ""]
    lines += [f"- {o}" for o in objectives]
    lines += ["", f"**Prerequisites:** {prereq}.", "",
              f"**Hardware:** {hardware}. **Run time:** {runtime} under the `fast` profile (measured as a "
              "notebook test on two shared CPU cores; see {doc}`execution_statistics` for this build's "
              "times). Exercises are marked ★ to ★★★; see {doc}`syllabus`.", "```", END]
    return "\n".join(lines)


def apply(book: Path, times: dict[str, str] | None = None) -> list[Path]:
    times = times or {}
    changed = []
    for key in CARDS:
        (path,) = book.glob(f"{key}_*.md")
        text = path.read_text(encoding="utf-8")
        block = card(key, times)
        if START in text:
            new = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda m: block, text, flags=re.S)
        else:
            new = re.sub(r"(?m)^(# .+\n)\n", lambda m: m.group(1) + "\n" + block + "\n\n", text, count=1)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


if __name__ == "__main__":
    times = dict(arg.split("=", 1) for arg in sys.argv[2:])  # e.g. 04="about 3 min"
    print(apply(Path(sys.argv[1] if len(sys.argv) > 1 else "book"), times))
