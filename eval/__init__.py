"""Evaluation: answer parsing and metrics as pure functions (`eval.parse`, `eval.metrics`), scoring of prediction
files (`eval.score`), the run's pictures (`eval.figures`), batched generation and the evaluation jobs
(`eval.generate`, `eval.runner`), and the terminal demo (`eval.chat`). Import as `from eval.x import y`, never
`import eval`.
"""
