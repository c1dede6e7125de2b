"""V2 infer bodies as kserve requests: JSON through a depth-bounded parse, binary-extension bodies
through kserve's parser; a malformed body is InvalidInput (400) naming the problem, never the
body's values."""

from __future__ import annotations

import json
import struct

import orjson
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.infer_type import InferRequest
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from pydantic import ValidationError

from mlflowserver.limits import short


def describe_validation_errors(errors) -> str:
    """Where and why a body is not an InferenceRequest, without the body's values."""
    errors = list(errors)
    # The V2 route accepts Union[InferenceRequest, bytes]: the "bytes" branch error is noise.
    relevant = [e for e in errors if "bytes" not in (e.get("loc") or ())[1:2]] or errors
    problems = []
    for err in relevant[:5]:
        loc = [str(p) for p in (err.get("loc") or ()) if p not in ("body", "InferenceRequest")]
        if err.get("type") == "json_invalid":
            cause = (err.get("ctx") or {}).get("error")
            where = loc[0] if loc else "?"
            problems.append(f"malformed JSON at position {where}" + (f" ({cause})" if cause else ""))
        else:
            problems.append(f"{'.'.join(loc) or 'body'}: {err.get('msg', 'invalid')}")
    return "invalid request body: " + "; ".join(problems)


def json_request(body: bytes) -> InferenceRequest:
    """A JSON body as an InferenceRequest; InvalidInput naming the problem.

    orjson first (fast); what it refuses goes to the stdlib parser, which also takes the ``NaN``
    and ``Infinity`` Python clients write, and names the problem. Nesting deeper than the stdlib
    parser's recursion limit is a RecursionError there (a 500 through FastAPI): refused here.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = _stdlib_json(body)
    try:
        return InferenceRequest.model_validate(document)
    except ValidationError as exc:
        raise InvalidInput(describe_validation_errors(exc.errors())) from None
    except RecursionError:
        raise InvalidInput(DEEP_JSON_MESSAGE) from None


DEEP_JSON_MESSAGE = "invalid request body: JSON nested too deeply"


def _stdlib_json(body: bytes):
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"invalid request body: malformed JSON at position {exc.pos} ({exc.msg})"
        ) from None
    except UnicodeDecodeError:
        raise InvalidInput("invalid request body: not UTF-8 text") from None
    except RecursionError:
        raise InvalidInput(DEEP_JSON_MESSAGE) from None


BYTES_PREFIX_MESSAGE = (
    "binary request: a BYTES element's 4-byte length prefix runs past the end of its binary data"
)


def binary_request(body: bytes, json_length: str, model_name: str) -> InferRequest:
    """A binary-extension body (JSON part, then tensor bytes) through kserve's parser; 400 if malformed."""
    try:
        length = int(json_length)
    except ValueError:
        length = -1
    if not 0 < length <= len(body):
        raise InvalidInput(
            f"the {INFERENCE_CONTENT_LENGTH_HEADER} header must be the length of the JSON part "
            f"(1 to {len(body)} bytes), got '{short(json_length)}'"
        )
    try:
        return InferRequest.from_bytes(body, length, model_name)
    except InferenceError:  # kserve's UTF-8 failure message quotes the value
        raise InvalidInput("binary request: BYTES data are not valid UTF-8") from None
    except struct.error:  # kserve's BYTES decoder reads past the buffer
        raise InvalidInput(BYTES_PREFIX_MESSAGE) from None
    except RecursionError:
        raise InvalidInput(DEEP_JSON_MESSAGE) from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput(
            "binary request: the JSON part must be an InferenceRequest whose inputs' "
            "binary_data_size, datatype and shape match the binary data"
        ) from None
