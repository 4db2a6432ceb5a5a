"""One error hierarchy. Each error has a stable code, an HTTP status and a message that says how to fix it."""

from __future__ import annotations


class RagError(Exception):
    """Base of every error this product raises on purpose."""

    code = "rag_error"
    status = 500
    title = "Internal error"

    def __init__(self, message: str, *, detail: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or {}


class ConfigError(RagError):
    code = "config_invalid"
    title = "Invalid configuration"


class ModelNotFoundError(ConfigError):
    code = "model_not_found"
    title = "Model not found"


class ModelNotReadyError(RagError):
    code = "model_not_ready"
    status = 503
    title = "Models are still loading"


class ModelLoadFailedError(ModelNotReadyError):
    """Loading failed for good: retrying is useless until the settings are fixed and the server restarted."""

    code = "model_load_failed"
    title = "Model loading failed"
    retry_after = None


class InvalidRequestError(RagError):
    code = "invalid_request"
    status = 400
    title = "Invalid request"


class GenerationFailedError(RagError):
    """The model failed on one request (the rest of its batch goes on), or on a whole batch step."""

    code = "generation_failed"
    title = "Generation failed"


class StoreError(RagError):
    code = "store_error"
    title = "Vector store error"


class StoreUnavailableError(StoreError):
    code = "store_unavailable"
    status = 503
    title = "Vector store unavailable"
    retry_after = None


class IndexFileError(StoreError):
    """A saved search index is missing, damaged or older than the store: rebuild it from Chroma's records."""

    code = "index_file_invalid"
    title = "Saved search index unusable"


class EngineStoppedError(RagError):
    code = "engine_stopped"
    status = 503
    title = "Generation loop stopped"
    retry_after = None


class DocumentError(RagError):
    """A single document could not be read; the rest of the batch goes on."""

    code = "document_unreadable"
    status = 422
    title = "Document could not be read"


class UnsupportedFormatError(DocumentError):
    code = "unsupported_format"


class EmptyDocumentError(DocumentError):
    code = "empty_document"


class EncryptedDocumentError(DocumentError):
    code = "encrypted_document"


class OcrUnavailableError(DocumentError):
    code = "ocr_unavailable"


class FileTooLargeError(DocumentError):
    code = "file_too_large"


class ParseLimitError(DocumentError):
    """Parsing ran past its time or memory limit, or crashed its worker."""

    code = "parse_limit"


class StoreBusyError(RagError):
    code = "store_busy"
    status = 409
    title = "Another writer holds the store"


class NotFoundError(RagError):
    code = "not_found"
    status = 404
    title = "Not found"


class PathNotAllowedError(RagError):
    code = "path_not_allowed"
    status = 403
    title = "Path not allowed"


class UploadTooLargeError(RagError):
    code = "upload_too_large"
    status = 413
    title = "Upload too large"


class JobsClosedError(RagError):
    code = "shutting_down"
    status = 503
    title = "The server is shutting down"


class AuthenticationError(RagError):
    code = "invalid_api_key"
    status = 401
    title = "Authentication required"


class PermissionDeniedError(RagError):
    code = "admin_only"
    status = 403
    title = "Not allowed"


class CsrfError(PermissionDeniedError):
    """A state-changing request with the session cookie but without the page's CSRF token (or from another site)."""

    code = "csrf_failed"
    title = "Cross-site request refused"


class PayloadTooLargeError(RagError):
    code = "body_too_large"
    status = 413
    title = "Request body too large"


class RequestTimeoutError(RagError):
    code = "request_timeout"
    status = 408
    title = "Request timeout"


class TooManyConnectionsError(RagError):
    code = "too_many_connections"
    status = 429
    title = "Too many connections"


class RetryLaterError(RagError):
    """Refused for now; ``retry_after`` seconds is when trying again makes sense (the Retry-After header)."""

    retry_after = 5

    def __init__(self, message: str, *, retry_after: int | None = None, detail: dict | None = None) -> None:
        super().__init__(message, detail=detail)
        if retry_after is not None:
            self.retry_after = max(1, int(retry_after))


class RateLimitedError(RetryLaterError):
    code = "rate_limited"
    status = 429
    title = "Too many requests"


class ServerBusyError(RetryLaterError):
    code = "server_busy"
    status = 503
    title = "Server busy"


class PromptTooLongError(InvalidRequestError):
    code = "prompt_too_long"
    title = "Prompt too long"


class MaxTokensTooLargeError(InvalidRequestError):
    code = "max_tokens_too_large"
    title = "max_tokens above the limit"


class UpstreamUnavailableError(RetryLaterError):
    code = "upstream_unavailable"
    status = 503
    title = "Generation engine unavailable"


class IdentityProviderUnavailableError(RetryLaterError):
    """The OpenID Provider (auth.oidc.issuer) did not answer, or answered nonsense: sign-in and tokens wait for it."""

    code = "identity_provider_unavailable"
    status = 503
    title = "Sign-in provider unavailable"
    retry_after = 30
