"""The stream runtime every service uses: consume in batches, process purely, produce, commit."""

from carelake.stream.types import Emit, ProcessFn, Record, Reject, Sink, Write

__all__ = ["Emit", "ProcessFn", "Record", "Reject", "Sink", "Write"]
