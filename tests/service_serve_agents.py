"""Registers the service test agents in the default registry (``flyteagents serve --modules ...``)."""

from service_agents import EchoAgent, JobAgent, PlainAgent, SlowAgent

from flyteagents import AgentRegistry

for _agent in (JobAgent(), PlainAgent(), SlowAgent(), EchoAgent()):
    AgentRegistry.register(_agent, override=True)
