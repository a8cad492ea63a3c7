"""The ``npy`` codec: an exact ``numpy.ndarray`` of a dtype without Python objects.

The bytes are what ``numpy.save`` writes (format 1.0, or 2.0 for a long header): a
contiguous array's memory is written to its file as it is (:class:`.Streamed`),
another array is built with one copy; decoding a private mapping gives a writable
view into it.
"""

from __future__ import annotations

from typing import Any

from .mapping import is_private
from .streamed import Parts, Streamed


def encode(array: Any) -> Streamed | memoryview | None:
    """``.npy`` bytes (the format ``numpy.save`` writes): the header and the array's
    memory when it is contiguous, else built with one copy."""
    import numpy as np
    from numpy.lib import format as npy

    header = _NpyHeader()
    fields = npy.header_data_from_array_1_0(array)
    try:
        try:
            npy.write_array_header_1_0(header, fields)
        except ValueError:  # header longer than 65535 bytes: format 2.0
            header.parts.clear()
            npy.write_array_header_2_0(header, fields)
    except (ValueError, UnicodeError):
        return None  # e.g. a structured dtype with non-latin-1 field names
    head = b"".join(header.parts)
    if array.flags.c_contiguous or array.flags.f_contiguous:
        # The array's own memory after the header: written to the file as it is, no
        # copy (np.save's byte order: C order, or F order when fortran_order says so).
        body = array.ravel(order="K").view(np.uint8) if array.nbytes else b""
        return Parts([head, body])
    out = bytearray(len(head) + array.nbytes)
    out[: len(head)] = head
    if array.nbytes:
        order = "F" if fields["fortran_order"] else "C"
        body = np.frombuffer(out, dtype=array.dtype, count=array.size, offset=len(head))
        np.copyto(body.reshape(array.shape, order=order), array, casting="no")
    return memoryview(out)


class _NpyHeader:
    """A write-only file object that collects the header numpy writes."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)



def decode(data: Any) -> Any:
    import io

    import numpy as np
    from numpy.lib import format as npy

    with memoryview(data) as view:
        major = view[6]
        if major == 1:
            header_len = 10 + int.from_bytes(view[8:10], "little")
        else:
            header_len = 12 + int.from_bytes(view[8:12], "little")
        fp = io.BytesIO(view[:header_len])
    version = npy.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = npy.read_array_header_1_0(fp, max_header_size=header_len)
    elif version == (2, 0):
        shape, fortran, dtype = npy.read_array_header_2_0(fp, max_header_size=header_len)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    count = 1
    for n in shape:
        count *= n
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=header_len)
    if not is_private(data):
        flat = flat.copy()
    return flat.reshape(shape, order="F" if fortran else "C")
