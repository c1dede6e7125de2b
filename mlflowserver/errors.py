"""What the runtime's error answers say, over REST and gRPC alike: one bounded line, and the
refusal of a model version (models here are unversioned)."""

from __future__ import annotations

from kserve.errors import ModelNotFound

from mlflowserver.limits import short

# Longest error message a client gets (characters, one line).
MESSAGE_LIMIT = 512


def one_line(message: str) -> str:
    return short(" ".join(message.split()), MESSAGE_LIMIT)


class ModelVersionNotFound(ModelNotFound):
    def __init__(self, model_name: str, version: str):
        self.reason = (
            f"model '{short(model_name)}' has no version '{short(version)}': "
            "this server serves unversioned models; leave the version out"
        )


def refuse_version(model_name: str, version: str | None) -> None:
    if version:
        raise ModelVersionNotFound(model_name, version)
