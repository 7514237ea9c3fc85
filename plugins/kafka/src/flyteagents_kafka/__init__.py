"""flyteagents-kafka: KafkaSensor, done when a (matching) message is produced to a Kafka topic."""

from ._cluster import close_clusters
from ._config import KafkaSensorConfig
from ._sensor import KafkaMessage, KafkaMessages, KafkaSensor

__all__ = ["KafkaMessage", "KafkaMessages", "KafkaSensor", "KafkaSensorConfig", "close_clusters"]
