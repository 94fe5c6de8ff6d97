"""Unsupervised discovery of steerable directions (DESIGN.md section 9, seed 001).

`prompts` (the project's prompt set that leaves the assistant register), `divergence` (a
small low-rank write trained to move the output away from base while staying confident, and
the direction read off it), `melbo` (fixed-norm orthogonal biases that maximise a later
layer's change), `judge` (local embedding judge, optional OpenAI-compatible endpoint),
`score` (linearity score with nulls, dose-response) and `catalogue` (JSON + HTML).
"""
