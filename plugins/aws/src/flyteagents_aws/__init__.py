"""flyteagents-aws: SQSSensor."""
