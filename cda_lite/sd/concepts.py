"""Concept-composition metrics of Tables 1 and 4: score every image against every component prompt
and report per-prompt scores and the minimum over prompts ("min CLIP", "min BLIP").

An image of "a cat AND a dog" is only as good as its weakest concept, so each image gets
min_j s(image, prompt_j); the tables report the mean of that minimum over images (we also report the
minimum over prompts of the per-prompt means, which is never smaller). Scorers:

- CLIP score 100·cos (:class:`cda_lite.sd.rewards.CLIPScore`; the tables' "CLIP");
- :class:`Blip2ITM`: BLIP-2's image-text matching probability (``mode="itm"``, the ITM head's softmax
  of "match") or its contrastive cosine (``mode="itc"``), via ``transformers``'
  ``Blip2ForImageTextRetrieval`` (Salesforce/blip2-itm-vit-g). The paper reports "BLIP" in [0.2, 0.27];
  which of the two its code used is not recorded in our reference, so both are offered.

Tiny stand-ins: :func:`cda_lite.sd.tiny_rewards.tiny_clip_score`, :func:`~cda_lite.sd.tiny_rewards.tiny_blip2_itm`.
Chapter 11.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from cda_lite.sd.rewards import LazyScorer, clip_preprocess, follow, load_tokenizer
from cda_lite.sd.load import offline


class Blip2ITM(LazyScorer):
    """BLIP-2 image-text matching: ``itm`` = P(match) from the ITM head, ``itc`` = max over query tokens
    of cos(query embedding, text embedding). Images in [0, 1]; one prompt per image."""

    name, env, hub_id = "blip2_itm", "CDA_BLIP2_PATH", "Salesforce/blip2-itm-vit-g"
    max_length = 35

    def __init__(self, path=None, device=None, mode: str = "itm", tokenizer: str | None = None):
        if mode not in ("itm", "itc"):
            raise ValueError(f"mode must be 'itm' or 'itc', got {mode!r}")
        super().__init__(path, device)
        self.mode, self.tokenizer_path = mode, tokenizer

    def load(self):
        from transformers import Blip2ForImageTextRetrieval

        src, local = self._source()
        try:
            model = Blip2ForImageTextRetrieval.from_pretrained(src, local_files_only=local)
        except (OSError, ValueError) as e:
            self._fail(f"could not load Blip2ForImageTextRetrieval from {src!r}", e)
        tok = self.tokenizer_path or src
        self.tokenizer = load_tokenizer(tok, offline() or os.path.isdir(str(tok)), self, "BERT")
        return self._place(model.float().eval().requires_grad_(False))

    def score(self, images, prompts):
        m = self._model
        tok = self._tokens(prompts, self.max_length)
        px = clip_preprocess(images, m.config.vision_config.image_size).to(self.model_device)
        out = m(pixel_values=px, input_ids=tok.input_ids, attention_mask=tok.attention_mask,
                use_image_text_matching_head=self.mode == "itm")
        logits = out.logits_per_image
        s = logits.softmax(-1)[:, 1] if self.mode == "itm" else logits.diagonal()
        return s.to(images.dtype).to(images.device)


@dataclass
class ConceptScores:
    """Scores of n images against m component prompts."""

    prompts: list
    per_prompt: np.ndarray  # (n, m): s(image_i, prompt_j)

    @property
    def min_per_image(self) -> np.ndarray:
        """min_j s(image_i, prompt_j), (n,)."""
        return self.per_prompt.min(1)

    @property
    def mean_min(self) -> float:
        """Tables 1/4: mean over images of the minimum over prompts."""
        return float(self.min_per_image.mean())

    @property
    def prompt_means(self) -> np.ndarray:
        return self.per_prompt.mean(0)

    @property
    def min_of_means(self) -> float:
        """min_j mean_i s(image_i, prompt_j) (≥ :attr:`mean_min`)."""
        return float(self.prompt_means.min())

    @property
    def weakest_prompt(self) -> str:
        return self.prompts[int(np.argmin(self.prompt_means))]

    def summary(self) -> dict:
        return {"prompts": list(self.prompts), "prompt_means": self.prompt_means.tolist(),
                "mean_min": self.mean_min, "min_of_means": self.min_of_means}


@torch.no_grad()
def prompt_scores(scorer, images: torch.Tensor, prompts: list[str], batch: int | None = None) -> ConceptScores:
    """Score every image against every prompt with ``scorer(images, prompts_per_image)`` (CLIP, BLIP-2, or
    any prompt-aware reward). ``batch`` splits the images into chunks (memory)."""
    if isinstance(prompts, str) or len(prompts) < 1 or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts: expected a non-empty list of strings")
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError("images: expected a tensor (n, 3, H, W) in [0, 1]")
    n = images.shape[0]
    step = n if batch is None else int(batch)
    if step < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    follow(scorer, images.device)  # the scorer's networks where the images are
    cols = []
    for p in prompts:
        parts = [scorer(images[i:i + step], [p] * len(images[i:i + step])) for i in range(0, n, step)]
        cols.append(torch.cat([torch.as_tensor(x).reshape(-1) for x in parts]).double().cpu().numpy())
    return ConceptScores(list(prompts), np.stack(cols, 1))


def concept_metrics(images, prompts, scorers: dict, batch: int | None = None) -> dict[str, ConceptScores]:
    """:func:`prompt_scores` for several scorers, e.g. ``{"clip": CLIPScore(), "blip": Blip2ITM()}``."""
    return {name: prompt_scores(s, images, prompts, batch) for name, s in scorers.items()}


def prompt_sets(preset) -> list[list[str]]:
    """Tables 1/4's prompt sets: ``preset.n_sets`` random sets of ``len(preset.prompts)`` distinct prompts
    from ``preset.concept_pool``, drawn with ``preset.sets_seed`` (the same sets on every run); without a
    pool, the preset's own prompts."""
    if not preset.concept_pool:
        return [list(preset.prompts)]
    k, pool = len(preset.prompts), list(preset.concept_pool)
    if k > len(pool):
        raise ValueError(f"concept_pool: {len(pool)} prompts cannot make sets of {k}")
    rng = np.random.default_rng(preset.sets_seed)
    return [[pool[i] for i in rng.choice(len(pool), size=k, replace=False)] for _ in range(preset.n_sets)]


METHODS = ("combined prompt", "equal weights", "constrained")


def table_metrics(pipe, preset, scorers: dict, n_images: int = 4, seed: int = 0, progress: bool = False) -> dict:
    """Tables 1/4 over :func:`prompt_sets`: per set, Algorithm 3 on the prompt experts
    (:func:`cda_lite.sd.compose.run`), then ``n_images`` images per method from the same x_T — the combined
    prompt (" and "-joined), the equal-weight product, the constrained product — scored by every scorer
    (min over prompts per image, :class:`ConceptScores`). Returns the per-method means over sets and the sets."""
    from dataclasses import replace

    from tqdm.auto import tqdm

    from cda_lite.sampling import sample
    from cda_lite.sd import compose as C
    from cda_lite.sd import sampling as S
    from cda_lite.sd.device import pipe_device

    rows = []
    sched = S.schedule_of(pipe)
    for i, prompts in enumerate(tqdm(prompt_sets(preset), disable=not progress, desc="prompt sets")):
        q = replace(preset, prompts=prompts, seed=preset.seed + i)
        experts = C.PromptExperts(pipe, prompts, q.guidance)
        res = C.run(pipe, experts, q, keep_images=False)
        x_T = S.initial_latents(pipe, n_images, q.height, q.width, torch.Generator().manual_seed(seed + i),
                                device=pipe_device(pipe))
        combined = S.SDEps(pipe.unet, q.guidance).set_prompts(pipe, [" and ".join(prompts)] * n_images)
        models = dict(zip(METHODS, (combined, C.ProductEps(experts, np.full(len(prompts), 1 / len(prompts))),
                                    C.ProductEps(experts, res.lam))))
        row = {"prompts": prompts, "lam": res.lam.tolist()}
        for name, model in models.items():
            with torch.no_grad():
                z = sample(model, sched, x_T.shape, steps=q.sample_steps, eta=q.eta, x_T=x_T, seed=seed + i)
                images = S.decode(pipe, z)
            row[name] = {k: v.mean_min for k, v in concept_metrics(images, prompts, scorers).items()}
        rows.append(row)
    means = {m: {k: float(np.mean([r[m][k] for r in rows])) for k in scorers} for m in METHODS}
    return {"preset": preset.name, "sets": len(rows), "images_per_set": n_images, "mean_min": means, "per_set": rows}
