"""Errors of the local backend, kept free of bedrock_mistral so the package stands alone.

::

    LocalBackendError
    ├── CheckpointError (ValueError)          a checkpoint that cannot be used as it is
    │   ├── CheckpointNotFoundError (FileNotFoundError)   a file the checkpoint needs is missing
    │   ├── UnsupportedArchitectureError      not a Mistral/Mixtral causal LM
    │   ├── ShapeMismatchError                a tensor's shape disagrees with the config
    │   ├── UnsupportedFormatVersionError     written by a newer bedrock-mistral
    │   ├── GGUFFormatError                   a truncated or corrupt GGUF file
    │   └── UnsupportedBlockTypeError         a GGUF tensor in a block type we do not decode
    ├── TokenizerError (ValueError)           no usable tokenizer
    └── DeviceError (ValueError)              a device we cannot run on here
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CheckpointNotFoundError",
    "DeviceError",
    "GGUFFormatError",
    "LocalBackendError",
    "ShapeMismatchError",
    "TokenizerError",
    "UnsupportedArchitectureError",
    "UnsupportedBlockTypeError",
    "UnsupportedFormatVersionError",
]


class LocalBackendError(Exception):
    """Base of every error raised by local_backend."""


class CheckpointError(LocalBackendError, ValueError):
    """The checkpoint (config or weights) cannot be used as it is."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A file the checkpoint needs is not on disk."""


class UnsupportedArchitectureError(CheckpointError):
    """The checkpoint is not a MistralForCausalLM / MixtralForCausalLM."""


class ShapeMismatchError(CheckpointError):
    """A tensor in the checkpoint does not have the shape its config implies."""


class UnsupportedFormatVersionError(CheckpointError):
    """A quantised checkpoint in a newer format version than this code reads."""

    def __init__(self, message: str, *, found: int, supported: int) -> None:
        super().__init__(message)
        self.found, self.supported = found, supported


class GGUFFormatError(CheckpointError):
    """A GGUF file that is truncated or corrupt (bad magic, offsets past its end, ...)."""


class UnsupportedBlockTypeError(CheckpointError):
    """A GGUF tensor stored in a GGML block type we do not decode."""

    def __init__(self, message: str, *, tensor: str, block_type: str) -> None:
        super().__init__(message)
        self.tensor, self.block_type = tensor, block_type


class TokenizerError(LocalBackendError, ValueError):
    """No usable SentencePiece tokenizer was found for this checkpoint."""


class DeviceError(LocalBackendError, ValueError):
    """The requested device is not one we run on, or not present on this machine."""
