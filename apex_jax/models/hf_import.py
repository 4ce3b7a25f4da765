"""`import transformers` without its "PyTorch was not found" notice.

apex-jax runs every model in JAX and uses transformers only for tokenizers (and config
classes), which need no PyTorch; without torch installed, transformers' first import logs
"PyTorch was not found. Models won't be available and only tokenizers, configuration and
file/data utilities can be used." on every command. `transformers()` imports it with a filter
on the "transformers" logger that drops that one message, for the duration of the import only:
transformers' other messages, and that notice for code that imports transformers itself first,
are untouched.
"""

from __future__ import annotations

import logging
import sys
from types import ModuleType

TORCH_NOTICE = "PyTorch was not found"


class _DropTorchNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(TORCH_NOTICE)


def transformers() -> ModuleType:
    """The `transformers` module, imported without its PyTorch-backend notice (see above)."""
    if "transformers" in sys.modules:
        return sys.modules["transformers"]
    logger = logging.getLogger("transformers")  # the library's root logger, where the notice is logged
    drop = _DropTorchNotice()
    logger.addFilter(drop)
    try:
        import transformers as module  # heavy: imported on first use, with the notice filtered
    finally:
        logger.removeFilter(drop)
    return module
