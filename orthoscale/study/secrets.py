"""Credentials never leave the process: URIs with user:password@ and key=value secrets are redacted
before anything is printed, stored or logged (params, tags, artifacts, trial configs)."""
from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<secret>[^@\s/]+)@", re.I)
_KEYVALUE = re.compile(r"(?i)(?P<key>(?:password|passwd|pwd|token|secret|api[_-]?key|access[_-]?key)=)"
                       r"(?P<secret>[^&\s'\",;]+)")
MASK = "***"


def redact(value):
    """The same structure with every credential replaced by ***."""
    if isinstance(value, str):
        value = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", value)
        return _KEYVALUE.sub(lambda m: f"{m['key']}{MASK}", value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return value


def split_credentials(uri: str) -> tuple[str, dict[str, str]]:
    """(URI without user:password@, the MLflow environment variables that carry them instead), so
    the client never prints or stores them: ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``."""
    m = _USERINFO.search(uri)
    if not m:
        return uri, {}
    from urllib.parse import unquote

    clean = uri[:m.start()] + m["scheme"] + uri[m.end():]
    return clean, {"MLFLOW_TRACKING_USERNAME": unquote(m["user"]), "MLFLOW_TRACKING_PASSWORD": unquote(m["secret"])}
