"""flyteagents-kafka: KafkaSensor."""
