"""The Stable Diffusion rung: LoRA constrained alignment (Algorithm 1) and LoRA composition
(Algorithm 3) on SD 1.5, with a tiny random pipeline that runs the same code on CPU.

``import cda_lite`` never imports this package; ``import cda_lite.sd`` imports diffusers,
transformers and peft lazily through the submodules:

- :mod:`cda_lite.sd.load` — SD 1.5 from the hub or a local folder (clear error without weights)
- :mod:`cda_lite.sd.tiny` — :func:`tiny_pipeline`, a few-MB random SD pipeline for tests and CPU
- :mod:`cda_lite.sd.lora` — peft LoRA on the attention projections; diffusers-format save/load
- :mod:`cda_lite.sd.sampling` — the ε-model wrapper (CFG, fixed prompt embeddings) and decoding
- :mod:`cda_lite.sd.rewards` — the reward scorers (weight-free; CLIP, PickScore, aesthetic, HPSv2,
  ImageReward, MPS from local checkpoints or the hub)
- :mod:`cda_lite.sd.registry` — every reward by name (:func:`get_reward`, :func:`normalizer`)
- :mod:`cda_lite.sd.convert` — the published checkpoint layouts (open_clip, ImageReward) → transformers
- :mod:`cda_lite.sd.tiny_rewards` — tiny random stand-ins of every scorer, through the real loaders
- :mod:`cda_lite.sd.concepts` — min-over-prompts CLIP / BLIP-2 ITM metrics (Tables 1, 4)
- :mod:`cda_lite.sd.train` — constrained LoRA alignment through :class:`cda_lite.align.PrimalDualTrainer`
- :mod:`cda_lite.sd.distributed` — training runs on accelerate: several processes, mixed precision,
  TensorBoard, validation grids
- :mod:`cda_lite.sd.config` — training configuration files (YAML/JSON, ``--set``), rewards of one's own
- :mod:`cda_lite.sd.plot` — training curves of a run to PNG; :mod:`cda_lite.sd.files` — umask-honouring writes
- :mod:`cda_lite.sd.compose` — product of LoRA adapters / prompts by Algorithm 3
- :mod:`cda_lite.sd.inference` — DAS over latents and Diffusion Blend over adapters (Chapter 7's samplers)
- :mod:`cda_lite.sd.device` — the device/dtype policy (noise, timesteps, tokens, rewards; bf16/TF32 on CUDA)
- :mod:`cda_lite.sd.calibration` — our KLs vs the public code's: the derived dual steps and KL weight
- :mod:`cda_lite.sd.provenance` — every preset value marked paper / derived / guess / ours (Chapter 10's table)
- :mod:`cda_lite.sd.presets` — one config per paper experiment (fig3, fig4, table2, fig5, table1, table4,
  das, blend) and the published numbers (``data/published/khalafi2025.json``)

Chapters 10 and 11; ``python -m cda_lite.sd train|compose|sample --preset NAME [--tiny] --out DIR``,
``python -m cda_lite.sd train --config FILE.yaml --out DIR``, ``python -m cda_lite.sd plot DIR``.
"""
