"""Data sources an algorithm reads: in memory (chunked), sharded over devices, streamed from the host."""

from ._base import Data as Data
from ._make import make_data as make_data
from ._memory import ArrayData as ArrayData
from ._sharded import ShardedData as ShardedData
from ._stream import Stream as Stream
from ._stream import StreamData as StreamData
from ._stream import predict_chunks as predict_chunks
from ._stream import score_chunks as score_chunks
