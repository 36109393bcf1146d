"""Build pools from configuration: a mapping (as loaded from YAML, TOML or JSON) or environment variables.

A pool's configuration has three sections, and nothing else:

```python
{
    "connector": "postgres",             # postgres | s3 | elasticsearch | sqlite | callable:module:attr
    "options": {"conninfo": "host=db"},  # keyword arguments of the connector
    "pool": {"max_size": 8},             # keyword arguments of syncpool.Pool
}
```

There is no flat form: keeping connector options apart from pool options means a typo in either is caught
(``pool.max_sise: unknown option; did you mean max_size?``) instead of being passed to the client library.

Every error is a ``ValueError`` whose message starts with the full path of the offending key
(``pools.jobs.pool.max_size: expected an integer, got 'ten'``) or the name of the offending environment variable.
Values of keys or variables that look secret (``password``, ``dsn``, ``conninfo``, ``secret``, ``token``...) are
never repeated in a message.

Environment variables (prefix ``SYNCPOOL_`` by default; ``<NAME>`` is the pool name upper-cased, with ``-`` and
``.`` turned into ``_``):

```text
SYNCPOOL_<NAME>_CONNECTOR=postgres         the connector (required)
SYNCPOOL_<NAME>_DSN=host=db user=app       postgres only: the conninfo (SYNCPOOL_<NAME>_CONNINFO also works)
SYNCPOOL_<NAME>_MAX_SIZE=8                 any Pool option, upper-cased
SYNCPOOL_<NAME>_DATABASE=/tmp/app.db       a named parameter of the connector (sqlite's database, s3's
                                           bucket, elasticsearch's hosts, comma-separated)
SYNCPOOL_<NAME>_OPTION_APPLICATION_NAME=x  any other connector keyword (libpq parameters, boto3 and
                                           elasticsearch client options), passed as a string
```

Strings are converted to the option's type: integers, seconds (``inf`` and ``none`` where the option allows them),
booleans (``true``/``false``, ``1``/``0``, ``yes``/``no``, ``on``/``off``). Any other variable starting with the
pool's prefix is an error, so a pool named ``jobs`` rejects ``SYNCPOOL_JOBS_DB_MAX_SIZE``: do not give one pool a
name that is another's name plus ``_something``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ._secrets import is_secret_key, mask_url
from .connector import Connector
from .pool import Pool
from .retry import Backoff

__all__ = [
    "CONNECTORS",
    "POOL_OPTIONS",
    "PoolConfig",
    "config_from_env",
    "env_prefix",
    "parse_config",
    "pool_from_config",
    "pool_from_env",
    "pools_from_config",
]

CONNECTORS: dict[str, str] = {
    "postgres": "syncpool.connectors.postgres:PostgresConnector",
    "s3": "syncpool.connectors.s3:S3Connector",
    "elasticsearch": "syncpool.connectors.elasticsearch:ElasticsearchConnector",
    "sqlite": "syncpool.connectors.sqlite:SQLiteConnector",
}
"""Connector names accepted by ``"connector"``, and the class each stands for (imported when used; importing a connector
module imports no client library).
"""

# Kinds of Pool options, for validation and for converting environment strings.
_INT, _INT_OR_NONE, _SECONDS, _SECONDS_OR_INF, _SECONDS_OR_NONE = "int", "int?", "s", "s|inf", "s?"
_STR, _BOOL, _BACKOFF, _CALLABLE = "str", "bool", "backoff", "callable"

POOL_OPTIONS: dict[str, str] = {
    "min_size": _INT,
    "max_size": _INT,
    "timeout": _SECONDS,
    "max_waiting": _INT,
    "max_lifetime": _SECONDS_OR_INF,
    "max_idle": _SECONDS_OR_INF,
    "leak_threshold": _SECONDS_OR_NONE,
    "name": _STR,
    "open": _BOOL,
    "num_workers": _INT,
    "reconnect_backoff": _BACKOFF,
    "reconnect_timeout": _SECONDS_OR_INF,
    "reconnect_failed": _CALLABLE,
    "health_check_interval": _SECONDS_OR_NONE,
    "health_check_timeout": _SECONDS,
    "check_after_idle": _SECONDS_OR_NONE,
    "breaker_threshold": _INT_OR_NONE,
    "breaker_probe_interval": _SECONDS,
    "monitor": _BOOL,
    "idle_order": _STR,
}
"""The [`Pool`][] options a configuration may set, and their kinds. ``reconnect_backoff`` is a mapping of
[`Backoff`][] fields; ``reconnect_failed`` is a ``"module:attr"`` string (or a callable).
"""

_SECTIONS = ("connector", "options", "pool")
_BACKOFF_FIELDS = ("initial", "maximum", "jitter")
_SECRET_PARTS = ("dsn", "conninfo")  # secret-looking names that syncpool._secrets does not know as such
_TRUE, _FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off"})


def _is_secret(key: str) -> bool:
    lowered = key.lower()
    return is_secret_key(lowered) or any(part in lowered for part in _SECRET_PARTS)


def _show(key: str, value: Any) -> str:
    """Describe ``value`` for an error message, unless ``key`` names a secret."""
    if _is_secret(key):
        return f"a {type(value).__name__} (value not shown: secret)"
    if isinstance(value, str):
        value = mask_url(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unknown(path: str, key: str, choices: list[str]) -> ValueError:
    close = difflib.get_close_matches(key, choices, n=1)
    hint = f"; did you mean {close[0]}?" if close else f"; expected one of {', '.join(sorted(choices))}"
    return ValueError(f"{_join(path, key)}: unknown option{hint}")


def _import(spec: str, where: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{where}: expected 'module:attribute', got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"{where}: cannot import {spec!r} ({type(error).__name__}: {error})") from error
    return target


# -- values --------------------------------------------------------------------------------------------------------


def _check_value(kind: str, value: Any, where: str) -> Any:
    """Check a value from a mapping against an option kind; return it (converted where lossless)."""
    if kind in (_INT, _INT_OR_NONE):
        if value is None and kind == _INT_OR_NONE:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{where}: expected an integer{' or null' if kind == _INT_OR_NONE else ''}, "
                         f"got {_show(where, value)}")
    if kind in (_SECONDS, _SECONDS_OR_INF, _SECONDS_OR_NONE):
        if value is None and kind == _SECONDS_OR_NONE:
            return None
        if kind == _SECONDS_OR_INF and isinstance(value, str) and value.strip().lower() in ("inf", "infinity"):
            return math.inf  # JSON has no infinity
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
            if seconds >= 0 and (kind == _SECONDS_OR_INF or not math.isinf(seconds)):
                return seconds  # NaN fails ">= 0" too
        extra = {_SECONDS_OR_INF: " or 'inf'", _SECONDS_OR_NONE: " or null"}.get(kind, "")
        raise ValueError(f"{where}: expected a number of seconds >= 0{extra}, got {_show(where, value)}")
    if kind == _STR:
        if isinstance(value, str):
            return value
        raise ValueError(f"{where}: expected a string, got {_show(where, value)}")
    if kind == _BOOL:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where}: expected a boolean, got {_show(where, value)}")
    if kind == _BACKOFF:
        if value is None or isinstance(value, Backoff):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping of {', '.join(_BACKOFF_FIELDS)}, got {_show(where, value)}")
        for key, item in value.items():
            if key not in _BACKOFF_FIELDS:
                raise _unknown(where, str(key), list(_BACKOFF_FIELDS))
            _check_value(_SECONDS, item, _join(where, key))
        try:
            return Backoff(**value)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
    if kind == _CALLABLE:
        if value is None or callable(value):
            return value
        if isinstance(value, str):
            target = _import(value, where)
            if not callable(target):
                raise ValueError(f"{where}: {value!r} is not callable")
            return target
        raise ValueError(f"{where}: expected 'module:attribute' naming a callable, got {_show(where, value)}")
    raise AssertionError(kind)  # pragma: no cover


def _from_string(kind: str, text: str, where: str) -> Any:
    """Convert an environment string to an option kind."""
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in ("none", "null", "") and kind in (_INT_OR_NONE, _SECONDS_OR_NONE, _BACKOFF, _CALLABLE):
        return None
    if kind in (_INT, _INT_OR_NONE):
        try:
            return int(stripped)
        except ValueError:
            raise ValueError(f"{where}: expected an integer, got {_show(where, text)}") from None
    if kind in (_SECONDS, _SECONDS_OR_INF, _SECONDS_OR_NONE):
        try:
            seconds = float(stripped)
        except ValueError:
            raise ValueError(f"{where}: expected a number of seconds >= 0, got {_show(where, text)}") from None
        return _check_value(kind, seconds, where)
    if kind == _BOOL:
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"{where}: expected a boolean (true/false, 1/0, yes/no, on/off), got {_show(where, text)}")
    if kind == _BACKOFF:
        # "initial,maximum[,jitter]", e.g. "0.1,10"
        parts = [part.strip() for part in stripped.split(",")]
        if not 2 <= len(parts) <= 3:
            raise ValueError(f"{where}: expected 'initial,maximum[,jitter]' seconds, got {_show(where, text)}")
        values = [_from_string(_SECONDS, part, where) for part in parts]
        return _check_value(_BACKOFF, dict(zip(_BACKOFF_FIELDS, values, strict=False)), where)
    if kind == _CALLABLE:
        return _check_value(_CALLABLE, stripped, where)
    return text


# -- connectors ----------------------------------------------------------------------------------------------------


def _connector_target(spec: Any, where: str) -> Any:
    """Return the class (or callable) a ``connector`` value names."""
    if not isinstance(spec, str):
        raise ValueError(f"{where}: expected a string ({', '.join(CONNECTORS)} or 'callable:module:attr'), "
                         f"got {_show(where, spec)}")
    if spec.startswith("callable:"):
        return _import(spec[len("callable:"):], where)
    if spec not in CONNECTORS:
        close = difflib.get_close_matches(spec, list(CONNECTORS), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ValueError(f"{where}: unknown connector {spec!r}; expected one of {', '.join(CONNECTORS)} or "
                         f"'callable:module:attr'{hint}")
    return _import(CONNECTORS[spec], where)


def _parameters(target: Any) -> tuple[dict[str, inspect.Parameter], bool]:
    """Return the named keyword parameters ``target`` accepts, and whether it also takes ``**kwargs``."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # a builtin without a signature: accept anything
        return {}, True
    named = {
        name: parameter for name, parameter in signature.parameters.items()
        if parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    return named, var_keyword


def _annotation_kind(parameter: inspect.Parameter) -> str | None:
    """The kind an environment string is converted to for a connector parameter; None to keep the string."""
    annotation = parameter.annotation
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    first = text.split("|")[0].strip()
    optional = "None" in text
    return {
        "bool": _BOOL,
        "int": _INT_OR_NONE if optional else _INT,
        "float": _SECONDS_OR_NONE if optional else _SECONDS,
    }.get(first)


def _check_options(target: Any, options: Any, where: str) -> dict[str, Any]:
    if not isinstance(options, Mapping):
        raise ValueError(f"{where}: expected a mapping of connector options, got {_show(where, options)}")
    named, var_keyword = _parameters(target)
    for key in options:
        if not isinstance(key, str):
            raise ValueError(f"{where}: option names must be strings, got {key!r}")
        if key not in named and not var_keyword:
            raise _unknown(where, key, list(named))
    if isinstance(target, type) and issubclass(target, Connector):
        missing = [
            name for name, parameter in named.items()
            if parameter.default is inspect.Parameter.empty and name not in options
        ]
        if missing:
            raise ValueError(f"{_join(where, missing[0])}: required by {target.__name__}")
    return dict(options)


# -- the normalised configuration ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolConfig:
    """A validated pool configuration: what [`parse_config`][] and [`config_from_env`][] return.

    Two configurations are equal when they would build the same pool (the registry relies on it).

    Attributes:
        connector: The connector name (``"postgres"``...) or ``"callable:module:attr"``.
        options: Keyword arguments of the connector.
        pool: Keyword arguments of [`Pool`][], checked and converted.
    """

    connector: str
    options: dict[str, Any] = field(default_factory=dict)
    pool: dict[str, Any] = field(default_factory=dict)

    def make_connector(self) -> Connector[Any]:
        """Instantiate the connector: a connector class gets ``options`` as keyword arguments; any other callable
        becomes a zero-argument factory (``options`` bound as its keyword arguments) wrapped in a
        [`CallableConnector`][]; a [`Connector`][] instance is used as it is."""
        target = _connector_target(self.connector, "connector")
        if isinstance(target, Connector):
            if self.options:
                raise ValueError("options: a connector instance takes no options")
            return target
        if isinstance(target, type) and issubclass(target, Connector):
            try:
                return target(**self.options)
            except (TypeError, ValueError) as error:
                raise ValueError(f"options: {error}") from None
        if not callable(target):
            raise ValueError(f"connector: {self.connector!r} is neither a Connector nor callable")
        from .connector import CallableConnector

        return CallableConnector(partial(target, **self.options) if self.options else target)

    def create_pool(self, *, name: str | None = None) -> Pool[Any]:
        """Build (and, unless ``pool.open`` is false, open) the pool; ``name`` overrides ``pool.name``."""
        kwargs = dict(self.pool)
        if name is not None:
            kwargs["name"] = name
        connector = self.make_connector()
        try:
            return Pool(connector, **kwargs)
        except (TypeError, ValueError) as error:
            raise ValueError(f"pool: {error}") from None

    def flatten(self) -> dict[str, Any]:
        """Return ``{"connector": ..., "options.<key>": ..., "pool.<key>": ...}``, for comparing configurations."""
        flat: dict[str, Any] = {"connector": self.connector}
        flat.update({f"options.{key}": value for key, value in self.options.items()})
        flat.update({f"pool.{key}": value for key, value in self.pool.items()})
        return flat

    def __repr__(self) -> str:
        options = {key: ("***" if _is_secret(key) else value) for key, value in self.options.items()}
        return f"PoolConfig(connector={self.connector!r}, options={options!r}, pool={self.pool!r})"


def parse_config(mapping: Mapping[str, Any], *, path: str = "") -> PoolConfig:
    """Validate a pool's configuration mapping and return it as a [`PoolConfig`][] (no pool is built).

    Args:
        mapping: ``{"connector": ..., "options": {...}, "pool": {...}}``; ``options`` and ``pool`` may be omitted.
        path: Prefix of the key paths in error messages (``"pools.jobs"``).

    Raises:
        ValueError: A key is unknown, missing or of the wrong type; the message starts with its full path.
    """
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{path or 'config'}: expected a mapping, got {type(mapping).__name__}")
    for key in mapping:
        if key not in _SECTIONS:
            raise _unknown(path, str(key), list(_SECTIONS))
    if "connector" not in mapping:
        raise ValueError(f"{_join(path, 'connector')}: required")
    connector = mapping["connector"]
    target = _connector_target(connector, _join(path, "connector"))
    options_section = mapping.get("options")
    options = _check_options(target, {} if options_section is None else options_section, _join(path, "options"))
    pool_section = mapping.get("pool")
    pool_section = {} if pool_section is None else pool_section
    where = _join(path, "pool")
    if not isinstance(pool_section, Mapping):
        raise ValueError(f"{where}: expected a mapping of pool options, got {_show(where, pool_section)}")
    pool: dict[str, Any] = {}
    for key, value in pool_section.items():
        if key not in POOL_OPTIONS:
            raise _unknown(where, str(key), list(POOL_OPTIONS))
        pool[key] = _check_value(POOL_OPTIONS[key], value, _join(where, key))
    return PoolConfig(connector, options, pool)


def pool_from_config(mapping: Mapping[str, Any], *, name: str | None = None) -> Pool[Any]:
    """Build a pool from a configuration mapping (see the module docstring for its shape).

    Args:
        mapping: ``{"connector": ..., "options": {...}, "pool": {...}}``, e.g. one entry of a YAML file.
        name: The pool's name; overrides ``pool.name``.

    Raises:
        ValueError: The configuration is invalid; the message names the key.
    """
    return parse_config(mapping).create_pool(name=name)


def pools_from_config(document: Mapping[str, Any]) -> dict[str, Pool[Any]]:
    """Build every pool of a ``{"pools": {name: config, ...}}`` document; each pool is named after its key.

    The whole document is validated before any pool is built, so an error leaves nothing open.
    """
    if not isinstance(document, Mapping):
        raise ValueError(f"config: expected a mapping, got {type(document).__name__}")
    for key in document:
        if key != "pools":
            raise _unknown("", str(key), ["pools"])
    pools_section = document.get("pools") or {}
    if not isinstance(pools_section, Mapping):
        raise ValueError(f"pools: expected a mapping of pool names to configurations, got {_show('pools', pools_section)}")
    configs = {str(name): parse_config(config, path=f"pools.{name}") for name, config in pools_section.items()}
    pools: dict[str, Pool[Any]] = {}
    try:
        for name, config in configs.items():
            pools[name] = config.create_pool(name=name)
    except BaseException:
        for pool in pools.values():
            pool.close(timeout=0)
        raise
    return pools


# -- environment ---------------------------------------------------------------------------------------------------


def env_prefix(name: str, prefix: str = "SYNCPOOL_") -> str:
    """Return the prefix of a pool's variables: ``env_prefix("jobs-db")`` is ``"SYNCPOOL_JOBS_DB_"``."""
    return prefix + name.upper().replace("-", "_").replace(".", "_") + "_"


def config_from_env(
    name: str, *, environ: Mapping[str, str] = os.environ, prefix: str = "SYNCPOOL_"
) -> PoolConfig:
    """Read a pool's configuration from environment variables (see the module docstring) without building it.

    Raises:
        ValueError: A variable is unknown or cannot be converted (the message names it, and never shows the value
            of a variable that looks secret), or ``<prefix><NAME>_CONNECTOR`` is missing.
    """
    start = env_prefix(name, prefix)
    found = {variable[len(start):]: value for variable, value in environ.items() if variable.startswith(start)}
    if "CONNECTOR" not in found:
        raise ValueError(f"{start}CONNECTOR: not set (required to configure pool {name!r} from the environment)")
    connector = found.pop("CONNECTOR").strip()
    target = _connector_target(connector, f"{start}CONNECTOR")
    named, var_keyword = _parameters(target)
    options: dict[str, Any] = {}
    pool: dict[str, Any] = {}
    for suffix, text in sorted(found.items()):
        variable = start + suffix
        key = suffix.lower()
        if suffix in ("DSN", "CONNINFO"):
            if connector != "postgres":
                raise ValueError(f"{variable}: only the postgres connector takes a DSN (this pool uses {connector!r})")
            if "conninfo" in options:
                raise ValueError(f"{variable}: set either {start}DSN or {start}CONNINFO, not both")
            options["conninfo"] = text
        elif key in POOL_OPTIONS:
            pool[key] = _from_string(POOL_OPTIONS[key], text, variable)
        elif key in named:
            kind = _annotation_kind(named[key])
            if connector == "elasticsearch" and key == "hosts" and "," in text:
                options[key] = [host.strip() for host in text.split(",") if host.strip()]
            else:
                options[key] = text if kind is None else _from_string(kind, text, variable)
        elif suffix.startswith("OPTION_") and len(suffix) > len("OPTION_"):
            option = key[len("option_"):]
            if option in named:
                kind = _annotation_kind(named[option])
                options[option] = text if kind is None else _from_string(kind, text, variable)
            elif var_keyword:
                options[option] = text
            else:
                raise _unknown("", variable, [f"{start}OPTION_{n.upper()}" for n in named])
        else:
            choices = ["CONNECTOR", *(n.upper() for n in POOL_OPTIONS), *(n.upper() for n in named)]
            if connector == "postgres":
                choices += ["DSN", "CONNINFO"]
            raise _unknown("", variable, [start + choice for choice in choices])
    return parse_config({"connector": connector, "options": options, "pool": pool}, path=start.rstrip("_"))


def pool_from_env(name: str, *, environ: Mapping[str, str] = os.environ, prefix: str = "SYNCPOOL_") -> Pool[Any]:
    """Build a pool named ``name`` from ``<prefix><NAME>_*`` environment variables (see the module docstring).

    Raises:
        ValueError: A variable is unknown, missing or invalid; the message names the variable.
    """
    return config_from_env(name, environ=environ, prefix=prefix).create_pool(name=name)
