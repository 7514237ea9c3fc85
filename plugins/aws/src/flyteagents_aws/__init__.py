"""flyteagents-aws: SQSSensor, done when a (matching) message arrives on an Amazon SQS queue."""

from ._config import SQSSensorConfig
from ._sensor import SQSMessage, SQSMessages, SQSSensor

__all__ = ["SQSMessage", "SQSMessages", "SQSSensor", "SQSSensorConfig"]
