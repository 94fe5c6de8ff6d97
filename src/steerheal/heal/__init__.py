"""Heal: distil steered completions into a fresh LoRA with a divergence barrier to a reference."""
