"""The three patch formats the API server accepts, as pure functions on JSON values.

- JSON merge patch, RFC 7386.
- Strategic merge patch (built-in kinds only): lists with a ``patchMergeKey`` in the upstream Go
  types are merged element by element; the directives ``$patch: replace|delete|merge``,
  ``$deleteFromPrimitiveList/<field>`` and ``$setElementOrder/<field>`` (accepted, order not
  enforced) are understood. Merge keys from k8s.io/api ``types.go`` struct tags.
- JSON patch, RFC 6902 (add, remove, replace, move, copy, test).

None of them mutates its inputs.
"""

from __future__ import annotations

from typing import Any

# list field name -> patchMergeKey (k8s.io/api struct tags). ``ports`` is special-cased: a
# Service's spec.ports merge on ``port``, a container's ports on ``containerPort``.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "secrets": "name",  # ServiceAccount.secrets
}
# Lists of scalars with patchStrategy "merge": merged as sets.
MERGE_PRIMITIVE_LISTS = frozenset({"finalizers"})


class PatchError(ValueError):
    """The patch document is malformed (400)."""


class PatchConflict(ValueError):
    """The patch is well formed but cannot be applied (422): a failed ``test``, a bad path."""


def clone(value: Any) -> Any:
    """Deep copy of a JSON value; much faster than ``copy.deepcopy``."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


# --- RFC 7386 -------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return clone(patch)
    result = clone(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- strategic merge patch --------------------------------------------------------------------


def _merge_key(name: str, path: tuple[str, ...], kind: str) -> str | None:
    if name == "ports":
        return "port" if kind == "Service" and path == ("spec",) else "containerPort"
    return MERGE_KEYS.get(name)


def strategic_merge(original: Any, patch: Any, *, kind: str) -> Any:
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch must be a JSON object")
    return _sm_map(original if isinstance(original, dict) else {}, patch, (), kind)


def _sm_map(
    original: dict[str, Any], patch: dict[str, Any], path: tuple[str, ...], kind: str
) -> Any:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: clone(v) for k, v in patch.items() if k != "$patch"}
    result = clone(original)
    for key, value in patch.items():
        if key == "$patch" or key.startswith(("$setElementOrder/", "$retainKeys")):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            current = result.get(field)
            if isinstance(current, list) and isinstance(value, list):
                result[field] = [v for v in current if v not in value]
            continue
        if value is None:
            result.pop(key, None)
            continue
        current = result.get(key)
        if isinstance(value, dict):
            merged = _sm_map(
                current if isinstance(current, dict) else {}, value, (*path, key), kind
            )
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _sm_list(
                current if isinstance(current, list) else [], value, key, path, kind
            )
        else:
            result[key] = value
    return result


def _sm_list(
    original: list[Any], patch: list[Any], name: str, path: tuple[str, ...], kind: str
) -> list[Any]:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [clone(p) for p in patch if not (isinstance(p, dict) and "$patch" in p)]
    if name in MERGE_PRIMITIVE_LISTS:
        result: list[Any] = clone(original)
        result.extend(v for v in patch if v not in result)
        return result
    key = _merge_key(name, path, kind)
    if key is None:
        return [clone(p) for p in patch]
    result = list(clone(original))
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise PatchError(f"map: {item} does not contain declared merge key: {key}")
        index = next(
            (
                i
                for i, cur in enumerate(result)
                if isinstance(cur, dict) and cur.get(key) == item[key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
            continue
        if index is None:
            result.append({k: clone(v) for k, v in item.items() if k != "$patch"})
        else:
            merged = _sm_map(result[index], item, (*path, name), kind)
            if merged is None:
                del result[index]
            else:
                result[index] = merged
    return result


# --- RFC 6902 -------------------------------------------------------------------------------


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError(f"invalid JSON pointer: {path!r}")
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, *, for_add: bool) -> int:
    if for_add and token == "-":
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise PatchConflict(f"invalid array index: {token}")
    idx = int(token)
    limit = len(container) if for_add else len(container) - 1
    if idx > limit:
        raise PatchConflict(f"array index out of range: {idx}")
    return idx


def _parent(doc: Any, tokens: list[str]) -> Any:
    cur = doc
    for token in tokens[:-1]:
        if isinstance(cur, dict):
            if token not in cur:
                raise PatchConflict(f"missing path component: {token}")
            cur = cur[token]
        elif isinstance(cur, list):
            cur = cur[_index(cur, token, for_add=False)]
        else:
            raise PatchConflict(f"cannot traverse into a scalar at {token}")
    return cur


def _get_at(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchConflict(f"missing value at /{'/'.join(tokens)}")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, for_add=False)]
    raise PatchConflict("cannot index a scalar")


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, for_add=True), value)
    else:
        raise PatchConflict("cannot add to a scalar")
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise PatchConflict("cannot remove the whole document")
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchConflict(f"missing value at /{'/'.join(tokens)}")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, for_add=False))
    raise PatchConflict("cannot remove from a scalar")


def json_patch(target: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = clone(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid JSON patch operation: {op!r}")
        kind = op["op"]
        tokens = _pointer(op["path"])
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"operation {kind} needs a value")
        if kind == "add":
            doc = _add(doc, tokens, clone(op["value"]))
        elif kind == "remove":
            _remove(doc, tokens)
        elif kind == "replace":
            _get_at(doc, tokens)
            if not tokens:
                doc = clone(op["value"])
            else:
                _remove(doc, tokens)
                doc = _add(doc, tokens, clone(op["value"]))
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from"))
            if kind == "move":
                if tokens[: len(source)] == source and tokens != source:
                    raise PatchConflict("cannot move a value into one of its children")
                value = _remove(doc, source)
            else:
                value = clone(_get_at(doc, source))
            doc = _add(doc, tokens, value)
        elif kind == "test":
            if _get_at(doc, tokens) != op["value"]:
                raise PatchConflict(f"testing value /{'/'.join(tokens)} failed")
        else:
            raise PatchError(f"unexpected JSON patch operation: {kind}")
    return doc
