"""Errors carrying TF Serving's status codes: `ServingError` (raised inside the server, shared by its
gRPC and REST front ends) and `ServingClientError` (raised by both clients).

Example:
    >>> from serving.errors import ServingError, Code
    >>> e = ServingError(Code.NOT_FOUND, "Servable not found for request: Latest(foo)")
    >>> e.code.name, e.http_status
    ('NOT_FOUND', 404)
"""

import grpc

Code = grpc.StatusCode

# tensorflow_serving/model_servers/http_server.cc ToHTTPStatusCode().
_HTTP_STATUS = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}

_BY_NUMBER = {c.value[0]: c for c in Code}

# HTTP status -> gRPC code name, for REST clients. 413 is this server's answer to a body over
# --rest_api_max_body_bytes (the gRPC equivalent is RESOURCE_EXHAUSTED, "message larger than max").
HTTP_TO_CODE_NAME = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                     409: "ABORTED", 411: "INVALID_ARGUMENT", 413: "RESOURCE_EXHAUSTED", 429: "RESOURCE_EXHAUSTED",
                     499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE",
                     504: "DEADLINE_EXCEEDED"}


class ServingClientError(Exception):
    """A failed client call (gRPC or REST): `code` is the gRPC status code name (``"NOT_FOUND"``, ...),
    `http_status` the HTTP status for REST calls (None over gRPC)."""

    def __init__(self, code, message, http_status=None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status


def code_from_number(number):
    """grpc.StatusCode for a numeric (absl / tf.errors) status code."""
    return _BY_NUMBER.get(int(number), Code.UNKNOWN)


class ServingError(Exception):
    """A request failure with a gRPC status code and a message for the client."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self):
        return _HTTP_STATUS.get(self.code, 500)

    def __repr__(self):
        return f"ServingError({self.code.name}, {self.message!r})"


def invalid(msg):
    return ServingError(Code.INVALID_ARGUMENT, msg)


def from_exception(exc):
    """Map any exception raised while serving to a ServingError."""
    from serving.codec import CodecError

    if isinstance(exc, ServingError):
        return exc
    if isinstance(exc, CodecError):
        return ServingError(Code.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, RecursionError):  # input nested too deeply for some converter: still the client's doing
        return ServingError(Code.INVALID_ARGUMENT, "Request is nested too deeply")
    try:
        import tensorflow as tf

        if isinstance(exc, tf.errors.OpError):
            # Strip TF's multi-line graph context; keep the first paragraph.
            msg = (exc.message or str(exc)).strip().split("\n\n")[0]
            return ServingError(code_from_number(exc.error_code), msg.split("\n")[0] if len(msg) > 2000 else msg)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, (ValueError, TypeError)):
        return ServingError(Code.INVALID_ARGUMENT, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, MemoryError):
        return ServingError(Code.RESOURCE_EXHAUSTED, "Out of memory while serving the request")
    return ServingError(Code.INTERNAL, f"{type(exc).__name__}: {exc}")
