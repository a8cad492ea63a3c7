"""Validating a ``step.run`` call in the seed's order, and calling its handler.

docs/design.md states the seed's rules. A validation error consumes nothing (no
occurrence is taken). A handler is called with the input as its one argument; a
handler declaring no parameters is called with none (the input is still hashed); a
handler with more than one required parameter is an error, raised only when the
handler would actually run, not on replay.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from nbstep.core.names import plain_text
from nbstep.settings import ON_MISMATCH_MODES

RUN_OPTIONS = ("namespace", "on_mismatch", "rerun")
INSPECT_OPTIONS = ("namespace", "results", "history", "all_columns")


def _type_name(value: Any) -> str:
    return type(value).__name__


class Call(NamedTuple):
    """A validated ``step.run`` call."""

    builtin: str
    key: str
    input: Any
    input_supplied: bool
    handler: Callable[..., Any]
    namespace: str | None
    on_mismatch: str | None
    rerun: bool


def _check_options(builtin: str, options: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for name in options:
        if name not in allowed:
            raise ValueError(unknown_option(builtin, name, allowed))


def unknown_option(builtin: str, name: Any, allowed: tuple[str, ...]) -> str:
    """``step.run: unknown option `rerunn`; did you mean `rerun`? ...``: the seed's
    message, then the closest option and the list of them."""
    import difflib  # only when a call is wrong

    close = difflib.get_close_matches(str(name), allowed, n=1, cutoff=0.6)
    hint = f"; did you mean `{close[0]}`?" if close else ";"
    return f"{builtin}: unknown option `{name}`{hint} the options are {', '.join(allowed)}"


def _option_namespace(builtin: str, options: dict[str, Any]) -> str | None:
    namespace = options.get("namespace")
    if namespace is None:
        return None
    if not isinstance(namespace, str):
        raise TypeError(
            f"{builtin}: options.namespace must be a string, got {_type_name(namespace)}"
        )
    if not namespace.strip():
        raise ValueError(f"{builtin}: options.namespace cannot be empty")
    return plain_text(namespace, f"{builtin}: options.namespace")


def _merge_options(builtin: str, options: Any, keywords: dict[str, Any]) -> dict[str, Any]:
    if options is None:
        merged: dict[str, Any] = {}
    elif isinstance(options, dict):
        merged = dict(options)
    else:
        raise TypeError(f"{builtin}: options must be a dict, got {_type_name(options)}")
    for name, value in keywords.items():
        if name in merged:
            raise ValueError(
                f"{builtin}: option `{name}` given twice (in the options dict and as a keyword); "
                "give it once"
            )
        merged[name] = value
    return merged


def parse_run(builtin: str, args: tuple[Any, ...], keywords: dict[str, Any]) -> Call:
    """Validate a ``step.run`` call in the seed's order; raises before consuming anything."""
    if len(args) < 2:
        raise ValueError(f"{builtin}: expected key, optional input, handler, and optional options")
    key = args[0]
    if not isinstance(key, str):
        raise TypeError(f"{builtin}: key must be a string, got {_type_name(key)}")
    if not key.strip():
        raise ValueError(f"{builtin}: key cannot be empty")
    key = plain_text(key, f"{builtin}: key")
    second = args[1]
    if callable(second):
        handler, value, supplied, options_index = second, None, False, 2
    else:
        if len(args) < 3:
            raise ValueError(f"{builtin}: handler is required after input")
        handler, value, supplied, options_index = args[2], second, True, 3
    if not callable(handler):
        raise TypeError(f"{builtin}: handler must be callable, got {_type_name(handler)}")
    raw = args[options_index] if len(args) > options_index else None
    options = _merge_options(builtin, raw, keywords)
    _check_options(builtin, options, RUN_OPTIONS)
    namespace = _option_namespace(builtin, options)
    on_mismatch = options.get("on_mismatch")
    if on_mismatch is not None:
        if not isinstance(on_mismatch, str):
            raise TypeError(
                f"{builtin}: options.on_mismatch must be a string, got {_type_name(on_mismatch)}"
            )
        if on_mismatch not in ON_MISMATCH_MODES:
            raise ValueError(
                f"{builtin}: options.on_mismatch must be `error` or `rerun`, got `{on_mismatch}`"
            )
    rerun = options.get("rerun", False)
    if rerun is None:
        rerun = False
    if not isinstance(rerun, bool):
        raise TypeError(f"{builtin}: options.rerun must be a bool, got {_type_name(rerun)}")
    if len(args) > options_index + 1:
        raise ValueError(
            f"{builtin}: expected at most {options_index + 1} arguments, got {len(args)}"
        )
    return Call(builtin, key, value, supplied, handler, namespace, on_mismatch, rerun)


def handler_args(call: Call) -> tuple[Any, ...]:
    """The arguments to call a handler with (checked only when it is about to run)."""
    import inspect  # only when a handler runs: a replay never needs it

    try:
        signature = inspect.signature(call.handler)
    except (TypeError, ValueError):
        return (call.input,) if call.input_supplied else ()
    required = 0
    positional = False
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            positional = True
            required += parameter.default is parameter.empty
        elif parameter.kind is parameter.VAR_POSITIONAL:
            positional = True
        elif parameter.kind is parameter.KEYWORD_ONLY and parameter.default is parameter.empty:
            raise ValueError(
                f"{call.builtin}: handler has a required keyword-only parameter "
                f"`{parameter.name}`; a step handler receives its input as its one positional "
                "argument (give the parameter a default, or make it positional)"
            )
    if required > 1:
        raise ValueError(
            f"{call.builtin}: handler expects {required} required arguments; "
            "step handlers receive at most one input value"
        )
    return (call.input,) if positional else ()


class InspectCall(NamedTuple):
    """A validated ``step.inspect`` call (None: the default of the frame asked for)."""

    namespace: str | None
    results: bool | None
    history: bool | None
    all_columns: bool


def parse_inspect(args: tuple[Any, ...], options: dict[str, Any]) -> InspectCall:
    """``step.inspect``'s arguments, as the seed checks them, and nbstep's keywords
    ``results``, ``history`` and ``all_columns`` (also accepted in the options dict)."""
    builtin = "step.inspect"
    if len(args) > 1:
        raise ValueError(f"{builtin}: expected at most 1 argument, got {len(args)}")
    options = {name: value for name, value in options.items() if value is not None}
    namespace = options.pop("namespace", None)
    if namespace is not None:
        if args:
            raise ValueError(
                f"{builtin}: namespace given twice (as an argument and as namespace=); "
                "give it once"
            )
        args = (namespace,)
    arg = args[0] if args else None
    chosen: str | None
    if arg is None:
        chosen = None
    elif isinstance(arg, str):
        if not arg.strip():
            raise ValueError(f"{builtin}: namespace cannot be empty")
        chosen = plain_text(arg, f"{builtin}: namespace")
    elif isinstance(arg, dict):
        _check_options(builtin, arg, INSPECT_OPTIONS)
        chosen = _option_namespace(builtin, arg)
        for name in ("results", "history", "all_columns"):
            if name in arg and arg[name] is not None:
                if name in options:
                    raise ValueError(
                        f"{builtin}: option `{name}` given twice (in the options dict and as "
                        "a keyword); give it once"
                    )
                options[name] = arg[name]
    else:
        raise TypeError(
            f"{builtin}: expected namespace string or options dict, got {_type_name(arg)}"
        )
    for name, value in options.items():
        if not isinstance(value, bool):
            raise TypeError(f"{builtin}: {name} must be a bool, got {_type_name(value)}")
    return InspectCall(chosen, options.get("results"), options.get("history"),
                       options.get("all_columns", False))


def parse_forget(key: Any, namespace: Any) -> None:
    """``step.forget``'s arguments: a non-blank string or None, each."""
    builtin = "step.forget"
    for what, value in (("key", key), ("namespace", namespace)):
        if value is None:
            continue
        if not isinstance(value, str):
            raise TypeError(f"{builtin}: {what} must be a string or None, got {_type_name(value)}")
        if not value.strip():
            raise ValueError(f"{builtin}: {what} cannot be empty")
        plain_text(value, f"{builtin}: {what}")
