"""``metav1.Status`` failures, shaped and worded like the real API server's."""

from __future__ import annotations

from typing import Any

from rotator_sandbox.kubeapi.resources import ResourceType


class ApiError(Exception):
    """A failure the server answers with a ``Status`` object."""

    def __init__(
        self, code: int, reason: str, message: str, *, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            doc["details"] = self.details
        doc["code"] = self.code
        return doc


def _details(rt: ResourceType, name: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": rt.plural}
    if rt.group:
        details["group"] = rt.group
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{rt.qualified()} "{name}" not found', details=_details(rt, name)
    )


def namespace_not_found(namespace: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'namespaces "{namespace}" not found',
        details={"name": namespace, "kind": "namespaces"},
    )


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{rt.qualified()} "{name}" already exists',
        details=_details(rt, name),
    )


def conflict(rt: ResourceType, name: str, why: str | None = None) -> ApiError:
    why = why or (
        "the object has been modified; please apply your changes to the latest version "
        "and try again"
    )
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified()} "{name}": {why}',
        details=_details(rt, name),
    )


def invalid(rt: ResourceType, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """422 Invalid: ``Kind.group "name" is invalid: field: message``."""
    kind = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    text = ", ".join(f"{fld}: {msg}" for fld, msg in causes)
    details: dict[str, Any] = {
        "name": name,
        "kind": rt.kind,
        "causes": [
            {"reason": "FieldValueInvalid", "message": msg, "field": fld} for fld, msg in causes
        ],
    }
    if rt.group:
        details["group"] = rt.group
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {text}', details=details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def unsupported_patch(accepted: list[str]) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        + ", ".join(accepted),
    )


def method_not_allowed(method: str) -> ApiError:
    return ApiError(
        405,
        "MethodNotAllowed",
        f"the server does not allow this method on the requested resource ({method})",
    )


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def path_not_found(path: str) -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", details={})
