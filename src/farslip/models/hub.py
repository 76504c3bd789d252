"""Checkpoint files from the Hugging Face hub, through ``huggingface_hub`` and its cache.

``hf_hub_download`` honours HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE / HF_ENDPOINT itself; this
module adds the registry names, a copy into a folder of the user's choosing, and an error that
says what is missing and how to get it when the hub cannot be reached. The ``farslip download``
command over :func:`download` is in :mod:`farslip.cli`.
"""
from __future__ import annotations

import logging
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from ..atomic import atomic_write
from .registry import HF_HUB, get_spec, list_names

log = logging.getLogger(__name__)


class CheckpointNotAvailable(RuntimeError):
    """A checkpoint is neither cached nor downloadable right now."""


def parse_hf_hub(spec: str) -> tuple[str, str]:
    """``hf-hub:owner/repo/path/in/repo.pt`` -> (``owner/repo``, ``path/in/repo.pt``)."""
    body = spec[len(HF_HUB):] if spec.startswith(HF_HUB) else spec
    parts = body.strip("/").split("/")
    if len(parts) < 3:
        raise ValueError(f"expected hf-hub:OWNER/REPO/FILE, got {spec!r}")
    return "/".join(parts[:2]), "/".join(parts[2:])


OFFLINE_HINT = "offline? set HF_HUB_OFFLINE=1 to use the local cache only, without the wait"


class _RetryNotice(logging.Filter):
    """Replaces huggingface_hub's per-retry warnings (two lines per attempt, printed twice once the
    root logger has a handler too) by one line of ours that says how to skip the wait."""

    def __init__(self, repo_id: str, filename: str) -> None:
        super().__init__()
        self.what = f"{repo_id}/{filename}"
        self.reason: Optional[str] = None
        self.told = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if " thrown while requesting " in message:
            self.reason = message.split(" thrown while requesting ")[0].strip("'")
            return False
        if message.startswith("Retrying in "):
            if not self.told:
                self.told = True
                log.warning("cannot reach the Hugging Face hub for %s (%s); huggingface_hub retries for about "
                            "25 s (%s)", self.what, self.reason or "no connection", OFFLINE_HINT)
            return False
        return True


@contextmanager
def _retry_notice(repo_id: str, filename: str) -> Iterator[None]:
    hub_logger = logging.getLogger("huggingface_hub.utils._http")
    notice = _RetryNotice(repo_id, filename)
    hub_logger.addFilter(notice)
    try:
        yield
    finally:
        hub_logger.removeFilter(notice)


def hub_file(repo_id: str, filename: str, *, cache_dir: Optional[str] = None, revision: Optional[str] = None) -> str:
    """Local path of ``repo_id/filename``: from the hub cache, downloading it when allowed."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        with _retry_notice(repo_id, filename):
            return hf_hub_download(repo_id, filename, cache_dir=cache_dir, revision=revision)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, OSError) as err:
        from huggingface_hub import constants

        where = cache_dir or constants.HF_HUB_CACHE
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else " (set HF_HUB_OFFLINE=1 to skip the network wait next time)"
        raise CheckpointNotAvailable(
            f"{repo_id}/{filename} is not in the Hugging Face cache at {where} and could not be "
            f"downloaded{offline}: {type(err).__name__}: {err}\n"
            f"Get it on a machine with internet access with `farslip download {repo_id}/{filename}` "
            f"(or `hf download {repo_id} {filename}`) and copy the cache folder here (set HF_HUB_CACHE), "
            f"or pass the file itself with --pretrained /path/to/{Path(filename).name}."
        ) from err


def download(name: str, to: Optional[str] = None, *, cache_dir: Optional[str] = None) -> str:
    """Fetch a registry name (``FarSLIP2-ViT-B-16``) or ``owner/repo/file``; optionally copy into ``to``.

    Returns the path of the file (the copy when ``to`` is given). The copy is atomic.
    """
    spec = get_spec(name)
    if spec is not None:
        if spec.repo is None:
            raise ValueError(f"{name} comes from open_clip ({spec.source}); open_clip downloads it itself")
        repo_id, filename = spec.repo, spec.filename
    else:
        try:
            repo_id, filename = parse_hf_hub(name)
        except ValueError:
            raise ValueError(f"unknown checkpoint {name!r}; known names: {', '.join(list_names())}, "
                             f"or OWNER/REPO/FILE") from None
    path = hub_file(repo_id, filename, cache_dir=cache_dir)
    if to is None:
        return path
    dest_dir = Path(to)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / Path(filename).name

    def copy(handle) -> None:
        with open(path, "rb") as source:
            shutil.copyfileobj(source, handle, 1 << 22)

    return str(atomic_write(dest, copy))

