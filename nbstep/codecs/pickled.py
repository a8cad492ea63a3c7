"""The ``pickle`` and ``cloudpickle`` codecs: everything the others do not take.

``pickle`` is protocol 5, used when the stream does not mention ``__main__``.
``cloudpickle`` is used when plain pickle would store a reference into ``__main__``
(functions and classes defined in a notebook cannot be imported by a new process),
or could not find a function or class by name (lambdas, nested functions, classes
defined inside a function): these are pickled by value. Nothing fits (pickle raises
``TypeError``: generators, locks, open files, sockets, modules, ...):
:class:`~nbstep.errors.NotPersistable`, naming the type and the reason.

Pickle load check
-----------------
Pickle streams up to ``VERIFY_PICKLE_LIMIT`` bytes are loaded back at encode time,
so a value whose pickle cannot be read (a broken ``__setstate__``, a reference that
no longer resolves) fails at record time. Larger streams are not re-loaded (that
would double the cost); they are almost always arrays and frames inside containers.
"""

from __future__ import annotations

from typing import Any

from nbstep.errors import NotPersistable

# Pickles up to this size are loaded back at encode time (see the module docstring).
VERIFY_PICKLE_LIMIT = 1 << 20


def not_persistable(value: Any, reason: str) -> NotPersistable:
    kind = type(value)
    name = kind.__qualname__
    if kind.__module__ != "builtins":
        name = f"{kind.__module__}.{name}"
    return NotPersistable(f"cannot record a value of type `{name}`: {reason}")


def encode(value: Any) -> tuple[str, bytes]:
    """``(codec, data)``: a pickle, or a cloudpickle where pickle cannot name a thing."""
    import pickle  # here, not at import: replaying JSON values never loads it

    codec = "pickle"
    try:
        data = pickle.dumps(value, protocol=5)
    except TypeError as e:
        # The object's type refuses pickling (generator, lock, file, socket, module):
        # cloudpickle cannot help either, and a module is not a result worth keeping.
        raise not_persistable(value, str(e)) from e
    except RecursionError as e:
        raise not_persistable(value, f"too deeply nested to pickle ({e})") from e
    except (pickle.PicklingError, AttributeError):
        # A function or class pickle could not find by name: a lambda, a nested
        # function, a class defined inside a function. cloudpickle stores it by value.
        data = None
    except Exception as e:  # a __reduce__ or __getstate__ of the value's own raising
        raise not_persistable(value, f"{type(e).__name__}: {e}") from e
    # A reference into __main__ would not resolve in the next process: cloudpickle
    # stores such functions and classes by value. The scan is a superset: a global
    # in __main__ always puts the module name "__main__" in the stream, while a
    # string "__main__" inside the data merely costs a slower, equally valid pickle.
    if data is None or b"__main__" in data:
        codec = "cloudpickle"
        data = _cloudpickle_dumps(value)
    if len(data) <= VERIFY_PICKLE_LIMIT:
        try:
            pickle.loads(data)
        except Exception as e:
            raise not_persistable(
                value, f"its {codec} does not load back ({type(e).__name__}: {e})"
            ) from e
    return codec, data


def decode(data: Any) -> Any:
    import pickle

    return pickle.loads(data)


def _cloudpickle_dumps(value: Any) -> bytes:
    import cloudpickle

    try:
        return cloudpickle.dumps(value, protocol=5)
    except RecursionError as e:
        raise not_persistable(value, f"too deeply nested to pickle ({e})") from e
    except Exception as e:
        raise not_persistable(value, str(e) or type(e).__name__) from e
