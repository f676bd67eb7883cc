"""End-to-end training benchmark: sdbert's own loop against a plain PyTorch loop and Hugging Face ``Trainer``.

``python -m sdbert.bench --help``; what it measures and the committed tables are in BENCHMARKS.md.
"""
