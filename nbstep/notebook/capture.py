"""Record a cell's outputs while they still show live, and show them again on replay.

What is recorded, in order: text written to ``sys.stdout`` / ``sys.stderr`` (also by
``print``, ``!cmd``, logging handlers and threads, since in a kernel the stream
object itself is wrapped), every ``display_pub.publish`` (``display()``, rich reprs,
matplotlib figures, ``update_display``), and ``clear_output``. The cell's result
(``Out[n]``) is not an output here: the step records it as a value.

How: in a kernel, ``sys.stdout`` is an ipykernel ``OutStream``; its ``write`` is
wrapped on the instance, so writes through references taken before the cell (a
``logging.StreamHandler`` made in an earlier cell) are recorded too. A stream that
cannot take an instance attribute (a plain ``TextIOWrapper``) is replaced in ``sys``
by a tee instead. Output a subprocess writes straight to file descriptor 1 or 2
reaches the notebook through ipykernel's pipe watcher thread, late and unordered;
it is recorded when it arrives before the cell ends.

After the result: a plain run shows ``Out[n]`` first and then the figures matplotlib's
inline backend shows in its ``post_execute`` hook. :meth:`OutputCapture.hold` records
those figures when the body ends but *holds* their publication, and
:func:`show_after_result` publishes them in a ``post_execute`` hook of its own, after
``Out[n]``: the recording run and a replay show them in the order a plain run does.
The events from :attr:`OutputCapture.held_from` on are those.

Replay writes each recorded stream event and flushes it before the next event, so
stdout, stderr and rich outputs come back in the order the cell produced them.
"""

from __future__ import annotations

import re
import sys
import threading
from typing import Any

STREAMS = ("stdout", "stderr")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# What Jupyter shows for "abc\rdef" is "def"; keep only that (nbconvert does the same).
_CARRIAGE_RETURN = re.compile(r"[^\n]*\r(?=[^\n])")

Event = tuple[Any, ...]  # ("stream", name, text) | ("display", data, metadata, transient, update)
#                           | ("clear", wait)


class _Tee:
    """Stands in for a stream that cannot be wrapped in place."""

    def __init__(self, stream: Any, record: Any) -> None:
        self._stream = stream
        self._record = record

    def write(self, text: str) -> int:
        self._record(text)
        return self._stream.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _instance_attribute(obj: Any, name: str) -> tuple[bool, Any]:
    """Whether ``obj`` itself (not its class) has ``name``, and its value."""
    own = getattr(obj, "__dict__", {})
    return name in own, own.get(name)


def _put_back(obj: Any, name: str, had: bool, previous: Any) -> None:
    # Someone else's wrapper (another tool, a test spy) stays in place after ours.
    if had:
        setattr(obj, name, previous)
    else:
        delattr(obj, name)


class OutputCapture:
    """Records outputs between :meth:`start` and :meth:`stop`; they still show live."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.events: list[Event] = []
        self._local = threading.local()
        self._undo: list[Any] = []
        self._lock = threading.Lock()
        self.holding = False  # publish calls are recorded, and published after Out[n]
        self.held: list[tuple[Any, Any, tuple[Any, ...], dict[str, Any]]] = []
        self.held_from: int | None = None  # the index of the first held event

    # -- recording ---------------------------------------------------------------

    def _record_text(self, name: str, text: Any) -> None:
        if getattr(self._local, "publishing", False) or not isinstance(text, str) or not text:
            return
        with self._lock:
            last = self.events[-1] if self.events else None
            if last is not None and last[0] == "stream" and last[1] == name:
                self.events[-1] = ("stream", name, last[2] + text)
            else:
                self.events.append(("stream", name, text))

    def _wrap_stream(self, name: str) -> None:
        stream = getattr(sys, name)
        if stream is None:
            return
        original = stream.write

        def write(text: Any, *args: Any, **kwargs: Any) -> Any:
            self._record_text(name, text)
            return original(text, *args, **kwargs)

        had, previous = _instance_attribute(stream, "write")
        try:
            stream.write = write
        except (AttributeError, TypeError):
            tee = _Tee(stream, lambda text: self._record_text(name, text))
            setattr(sys, name, tee)

            def restore_sys() -> None:
                if getattr(sys, name) is tee:
                    setattr(sys, name, stream)

            self._undo.append(restore_sys)
            return

        def restore_instance() -> None:
            if stream.__dict__.get("write") is write:
                _put_back(stream, "write", had, previous)

        self._undo.append(restore_instance)

    def _wrap_display(self) -> None:
        publisher = getattr(self.shell, "display_pub", None)
        if publisher is None:
            return
        original_publish = publisher.publish
        original_clear = publisher.clear_output
        had_publish, previous_publish = _instance_attribute(publisher, "publish")
        had_clear, previous_clear = _instance_attribute(publisher, "clear_output")

        def publish(data: Any, metadata: Any = None, *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.events.append((
                    "display", dict(data), dict(metadata or {}),
                    dict(kwargs.get("transient") or {}), bool(kwargs.get("update", False)),
                ))
                if self.holding:
                    self.held.append((data, metadata, args, kwargs))
                    return None
            # The base publisher prints text/plain itself; that is not a second output.
            self._local.publishing = True
            try:
                return original_publish(data, metadata, *args, **kwargs)
            finally:
                self._local.publishing = False

        def clear_output(wait: bool = False) -> Any:
            with self._lock:
                self.events.append(("clear", bool(wait)))
            self._local.publishing = True
            try:
                return original_clear(wait)
            finally:
                self._local.publishing = False

        publisher.publish = publish
        publisher.clear_output = clear_output

        def restore() -> None:
            if publisher.__dict__.get("publish") is publish:
                _put_back(publisher, "publish", had_publish, previous_publish)
            if publisher.__dict__.get("clear_output") is clear_output:
                _put_back(publisher, "clear_output", had_clear, previous_clear)

        self._undo.append(restore)

    def start(self) -> OutputCapture:
        for name in STREAMS:
            self._wrap_stream(name)
        self._wrap_display()
        return self

    def hold(self, show: Any) -> None:
        """Call ``show()`` (the inline backend's flush) recording what it publishes,
        and keep it for :func:`show_after_result`."""
        self.held_from = len(self.events)
        self.holding = True
        try:
            show()
        finally:
            self.holding = False
        if self.held:
            held, publisher = list(self.held), self.shell.display_pub

            def publish_held() -> None:
                for data, metadata, args, kwargs in held:
                    publisher.publish(data, metadata, *args, **kwargs)

            after_result(self.shell, publish_held)

    def stop(self) -> list[Event]:
        for name in STREAMS:
            stream = getattr(sys, name, None)
            flush = getattr(stream, "flush", None)
            if flush is not None:
                try:
                    flush()
                except Exception:  # a closed or odd stream: nothing left to record
                    pass
        while self._undo:
            self._undo.pop()()
        return self.finished()

    def stop_at_held(self) -> tuple[list[Event], int]:
        """:meth:`stop`, and the index of the first event shown after ``Out[n]``."""
        held_from = self.held_from if self.held_from is not None else len(self.events)
        before = len(self._finish(self.events[:held_from]))
        return self.stop(), before

    def finished(self) -> list[Event]:
        return self._finish(self.events)

    @staticmethod
    def _finish(raw: list[Event]) -> list[Event]:
        events: list[Event] = []
        for event in raw:
            if event[0] == "stream":
                text = _CARRIAGE_RETURN.sub("", event[2])
                if text:
                    events.append(("stream", event[1], text))
            else:
                events.append(event)
        return events

    def __enter__(self) -> OutputCapture:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def after_result(shell: Any, action: Any) -> None:
    """Run ``action`` once, after this cell's ``Out[n]`` (a ``post_execute`` hook)."""

    def once() -> None:
        shell.events.unregister("post_execute", once)
        action()

    shell.events.register("post_execute", once)


def show_after_result(shell: Any, events: list[Event]) -> None:
    """Show recorded outputs again once this cell's ``Out[n]`` is shown."""
    if events:
        after_result(shell, lambda: show_again(shell, events))


def show_again(shell: Any, events: list[Event]) -> None:
    """Show recorded outputs again, in their order."""
    publisher = shell.display_pub
    for event in events:
        kind = event[0]
        if kind == "stream":
            stream = getattr(sys, event[1])
            stream.write(event[2])
            flush = getattr(stream, "flush", None)
            if flush is not None:
                flush()  # one message per event: stdout and stderr keep their order
        elif kind == "display":
            _, data, metadata, transient, update = event
            if WIDGET_MIME in data and len(data) > 1:
                # The widget's model lived in the kernel that recorded it; its other
                # representations (text/plain at least) still say what it showed.
                data = {k: v for k, v in data.items() if k != WIDGET_MIME}
            kwargs: dict[str, Any] = {}
            if transient:
                kwargs["transient"] = transient
            if update:
                kwargs["update"] = True
            publisher.publish(data=data, metadata=metadata, **kwargs)
        elif kind == "clear":
            publisher.clear_output(event[1])
    for name in STREAMS:
        stream = getattr(sys, name, None)
        if stream is not None and hasattr(stream, "flush"):
            stream.flush()
