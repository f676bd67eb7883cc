"""Fail fast when the Hugging Face hub cannot be reached.

Without this, ``datasets``/``transformers`` retry an unreachable hub for 40 s and more, printing a
warning per retry. :func:`require_hub` probes the hub once per process with a short timeout (through
the same proxy settings the libraries use); when the probe fails it switches the libraries to offline
mode, so they answer from the HF cache at once, and the caller's one-line error names the offline
options. A proxy that answers garbage counts as unreachable.
"""

from __future__ import annotations

import functools
import logging
import os

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 4.0
TRUE = {"1", "true", "yes", "on"}
#: the offline ways to run, for every "hub unreachable" message
OFFLINE_OPTIONS = (
    "work offline with the embedded model and data (model=minilm; dataset.source=embedded: imdb, snli, bbc_news), "
    "local folders (model.name_or_path=/path/saved_with_save_pretrained, dataset.source=/path/to/dir), or "
    "HF_HUB_OFFLINE=1 with the files already in the HF cache"
)


def offline_requested() -> bool:
    return any(os.environ.get(k, "").strip().lower() in TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@functools.cache
def unreachable_reason() -> str | None:
    """None when the hub answers; else why not (probed once per process, ``PROBE_TIMEOUT_S`` at most)."""
    if offline_requested():
        return "HF_HUB_OFFLINE=1 is set"
    from huggingface_hub import constants, get_session

    url = f"{constants.ENDPOINT.rstrip('/')}/api/models?limit=1"
    try:  # the client huggingface_hub itself uses: the same proxy settings, no retries
        response = get_session().get(url, timeout=PROBE_TIMEOUT_S, follow_redirects=True)
    except Exception as err:  # connection refused, timeout, DNS, a proxy that answers garbage ...
        return f"{type(err).__name__}: {' '.join(str(err).split())[:100] or 'no answer'}"
    if response.status_code >= 500 or response.status_code == 407:  # what the libraries would retry
        return f"HTTP {response.status_code} from {url}"
    if response.is_success:
        try:
            response.json()
        except ValueError:
            return f"{url} did not answer like the hub (a proxy or captive portal?)"
    # a 4xx is an answer: the libraries get the same at once, without retrying
    return None


def go_offline() -> None:
    """Switch huggingface_hub, transformers and datasets to offline mode for the rest of this process."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True
    try:
        import datasets.config

        datasets.config.HF_HUB_OFFLINE = True
        datasets.config.HF_DATASETS_OFFLINE = True
    except ImportError:  # pragma: no cover
        pass


def require_hub() -> str | None:
    """Probe the hub once; when unreachable, go offline (only the HF cache is used) and return why."""
    reason = unreachable_reason()
    if reason is not None and not offline_requested():
        log.info("the Hugging Face hub is unreachable (%s); using the local HF cache only", reason)
    if reason is not None:
        go_offline()
    return reason
