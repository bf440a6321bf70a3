"""Where a destination is: a local folder or an S3-compatible bucket, one value shared by the
server (what it stores and shows of a destination) and the agent (what it opens).

A destination is stored on the server as a ``type`` and a ``settings`` object (cbs-api.md §9):

- ``LOCAL``: ``{"path": "/srv/backup"}`` (an absolute folder on the agent's machine);
- ``S3``: ``{"bucket": "b", "prefix": "p/q", "endpoint": "http://host:8333", "region":
  "us-east-1"}``; ``prefix`` and ``endpoint`` may be ``""`` (the bucket's top; AWS itself).
  Credentials are never part of it: the agent takes them from its own config or the standard
  AWS environment variables and shared credentials file (``destinations.s3``). A settings key
  that looks like a secret is refused (:func:`require_no_secrets`).

:func:`parse_destination` reads what a person types (``/srv/backup``, ``s3://bucket/prefix``
with ``--s3-endpoint URL`` and ``--s3-region R``); :meth:`DestinationAddress.from_settings`
reads what the server keeps. Both raise ``InvalidInput`` with a one-line message and a hint.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from opencbs.errors import InvalidInput

__all__ = [
    "DEFAULT_S3_REGION",
    "LOCAL",
    "S3",
    "S3_SCHEME",
    "DestinationAddress",
    "S3Location",
    "is_s3_url",
    "parse_destination",
    "require_no_secrets",
]

#: Destination types (the ``Type`` of ``DestinationList``, cbs-api.md §9).
LOCAL = "LOCAL"
S3 = "S3"
#: How a person writes an S3 destination: ``s3://bucket/prefix``.
S3_SCHEME = "s3://"
#: The region signed for when none is given (what AWS and most S3-compatible servers accept).
DEFAULT_S3_REGION = "us-east-1"

#: Bucket names as S3 allows them for new buckets (3-63 lowercase letters, digits, dots,
#: hyphens; starting and ending with a letter or digit), plus underscores and capitals that
#: older buckets and S3-compatible servers accept.
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
#: Settings keys the server refuses for any destination: credentials stay on the agent.
_SECRET_KEY = re.compile(
    r"secret|pass_?w(or)?d|token|credential|access_?key|api_?key|private_?key|^auth", re.I
)
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_S3_HINT = "write an S3 destination as s3://BUCKET/PREFIX (the prefix may be left out)"


def is_s3_url(text: str) -> bool:
    """Whether ``text`` names an S3 destination (starts with ``s3://``, any case)."""
    return text[: len(S3_SCHEME)].lower() == S3_SCHEME


def _clean_prefix(prefix: str) -> str:
    """A prefix without leading/trailing slashes; each component a valid object-name part (no
    empty component, none starting with ``.``, no backslash or NUL). Raises ``InvalidInput``."""
    prefix = prefix.strip("/")
    if not prefix:
        return ""
    for part in prefix.split("/"):
        if not part or part.startswith(".") or "\\" in part or _CONTROL.search(part):
            raise InvalidInput(
                f"invalid S3 prefix {prefix!r}: each part must be non-empty, not start with "
                "'.', and hold no backslash or control character",
                _S3_HINT,
            )
    if len(prefix) > 512:
        raise InvalidInput(f"S3 prefix too long ({len(prefix)} characters, at most 512)")
    return prefix


def _clean_endpoint(endpoint: str) -> str:
    """``""`` or an ``http(s)://host[:port][/path]`` URL without a trailing slash. Raises
    ``InvalidInput``."""
    endpoint = endpoint.strip()
    if not endpoint:
        return ""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(
            f"invalid S3 endpoint {endpoint!r}",
            "give --s3-endpoint as http://HOST:PORT or https://HOST (the S3 server's URL)",
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidInput(
            f"invalid S3 endpoint {parts.scheme}://{parts.hostname}…: no credentials, query "
            "or fragment in it",
            "give credentials in the agent's config or the AWS environment variables",
        )
    return endpoint.rstrip("/")


@dataclass(frozen=True, slots=True)
class S3Location:
    """A bucket (and a prefix in it) on an S3-compatible server: ``endpoint`` (``""``: AWS),
    ``region`` (signing region), ``bucket``, ``prefix`` (``""`` or ``a/b``, no slashes at the
    ends). Build it with :meth:`parse` or :meth:`from_settings` (both check every part)."""

    bucket: str
    prefix: str = ""
    endpoint: str = ""
    region: str = DEFAULT_S3_REGION

    @property
    def url(self) -> str:
        """``s3://bucket/prefix`` (``s3://bucket`` for the top of the bucket)."""
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def key(self) -> str:
        """The identity of this location (the agent's record of accepted destinations):
        ``s3://bucket/prefix`` and, with an endpoint, ``@endpoint``."""
        return f"{self.url}@{self.endpoint}" if self.endpoint else self.url

    def __str__(self) -> str:
        """How messages name it: ``s3://bucket/prefix`` and ``at ENDPOINT`` when given."""
        return f"{self.url} at {self.endpoint}" if self.endpoint else self.url

    def settings(self) -> dict[str, Any]:
        """The server's settings object of an ``S3`` destination (module docstring)."""
        return {
            "bucket": self.bucket,
            "prefix": self.prefix,
            "endpoint": self.endpoint,
            "region": self.region,
        }

    @classmethod
    def parse(
        cls, url: str, *, endpoint: str | None = None, region: str | None = None
    ) -> S3Location:
        """``s3://bucket[/prefix]`` with the endpoint URL and region given beside it. Raises
        ``InvalidInput`` naming what is wrong."""
        if not is_s3_url(url):
            raise InvalidInput(f"not an S3 destination: {url!r}", _S3_HINT)
        bucket, _, prefix = url[len(S3_SCHEME) :].partition("/")
        return cls.checked(bucket, prefix, endpoint or "", region or "")

    @classmethod
    def checked(cls, bucket: str, prefix: str, endpoint: str, region: str) -> S3Location:
        """A location from its parts, each checked (``region`` ``""``: the default). Raises
        ``InvalidInput``."""
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise InvalidInput(
                f"invalid S3 bucket name {bucket!r}: 3-63 letters, digits, dots, hyphens or "
                "underscores, starting and ending with a letter or digit",
                _S3_HINT,
            )
        region = region.strip() or DEFAULT_S3_REGION
        if not _REGION.match(region):
            raise InvalidInput(f"invalid S3 region {region!r}", "e.g. --s3-region eu-central-1")
        return cls(bucket, _clean_prefix(prefix), _clean_endpoint(endpoint), region)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> S3Location:
        """The location of an ``S3`` destination's settings (module docstring). Raises
        ``InvalidInput``."""
        parts = {k: settings.get(k, "") for k in ("bucket", "prefix", "endpoint", "region")}
        bad = [k for k, v in parts.items() if not isinstance(v, str)]
        if bad:
            raise InvalidInput(f"S3 destination settings: {', '.join(bad)} must be text")
        return cls.checked(parts["bucket"], parts["prefix"], parts["endpoint"], parts["region"])


@dataclass(frozen=True, slots=True)
class DestinationAddress:
    """Where one destination is: ``type`` :data:`LOCAL` with ``path`` (absolute), or
    :data:`S3` with ``s3``."""

    type: str
    path: Path | None = None
    s3: S3Location | None = None

    @classmethod
    def local(cls, path: str | os.PathLike[str]) -> DestinationAddress:
        """A local folder (made absolute)."""
        return cls(LOCAL, path=Path(os.path.abspath(path)))

    @classmethod
    def from_settings(cls, dest_type: str, settings: Mapping[str, Any]) -> DestinationAddress:
        """What the server keeps of a destination (module docstring). Raises ``InvalidInput``
        for a type the agent cannot use or settings that do not name a place."""
        if dest_type == LOCAL:
            path = settings.get("path")
            if not isinstance(path, str) or not path:
                raise InvalidInput("a LOCAL destination without a path")
            return cls.local(path)
        if dest_type == S3:
            return cls(S3, s3=S3Location.from_settings(settings))
        raise InvalidInput(
            f"destination type {dest_type} is not one this agent can use",
            "use LOCAL (a folder) or S3 (s3://bucket/prefix) destinations",
        )

    @property
    def key(self) -> str:
        """The identity compared in the agent's records: the absolute path, or
        ``S3Location.key``."""
        if self.s3 is not None:
            return self.s3.key
        return str(self.path)

    def settings(self) -> dict[str, Any]:
        """The server's settings object of this destination."""
        if self.s3 is not None:
            return self.s3.settings()
        return {"path": str(self.path)}

    def __str__(self) -> str:
        """The folder, or the S3 location as :class:`S3Location` says it."""
        return str(self.s3) if self.s3 is not None else str(self.path)

    @property
    def is_s3(self) -> bool:
        """Whether this is an S3 destination."""
        return self.s3 is not None


def parse_destination(
    text: str | os.PathLike[str], *, s3_endpoint: str | None = None, s3_region: str | None = None
) -> DestinationAddress:
    """What a person gives as a destination: ``s3://bucket/prefix`` (with ``s3_endpoint`` and
    ``s3_region``) or a folder (made absolute; ``s3_endpoint`` then is an error). Raises
    ``InvalidInput``."""
    raw = os.fspath(text)
    if is_s3_url(raw):
        return DestinationAddress(
            S3, s3=S3Location.parse(raw, endpoint=s3_endpoint, region=s3_region)
        )
    if s3_endpoint or s3_region:
        raise InvalidInput(
            f"--s3-endpoint and --s3-region apply to an s3:// destination, not {raw}",
            _S3_HINT,
        )
    return DestinationAddress.local(raw)


def require_no_secrets(settings: Mapping[str, Any]) -> None:
    """Refuse a destination's settings holding, at any depth (in nested objects and lists
    too), a key that looks like a credential (secret, password, token, access key, API key,
    private key, ``auth…``): credentials stay on the agent, never on the server (issue 13).
    Raises ``InvalidInput`` naming the key."""
    pending: list[Any] = [settings]
    while pending:
        item = pending.pop()
        if isinstance(item, Mapping):
            for key in item:
                if _SECRET_KEY.search(str(key)):
                    raise InvalidInput(
                        f"destination settings must not hold credentials (key {key!r})",
                        "give S3 credentials to the agent (its config or AWS_ACCESS_KEY_ID / "
                        "AWS_SECRET_ACCESS_KEY), never to the server",
                    )
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
