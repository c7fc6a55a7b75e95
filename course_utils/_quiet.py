"""Silence one harmless warning: transformers suggests torchvision for image processors that
Stable Diffusion does not use (the course deliberately does not install torchvision)."""

import logging


class _NoTorchvisionHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision" not in record.getMessage()


def quiet_torchvision_hint() -> None:
    from transformers.utils import logging as tlogging

    tlogging.get_logger("transformers")  # makes sure the library's handler exists
    for handler in logging.getLogger("transformers").handlers:
        if not any(isinstance(f, _NoTorchvisionHint) for f in handler.filters):
            handler.addFilter(_NoTorchvisionHint())
