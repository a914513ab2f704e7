"""The simulators' errors, one tree:

    SimulatorError            anything the simulators refuse or cannot do
    ├── ScenarioError         a scenario file is unreadable or invalid (names file and field)
    ├── TopologyError         the topology CSVs are missing, unreadable or inconsistent
    └── ConnectError          a device could not connect to the broker (refused, unreachable)
"""

from __future__ import annotations


class SimulatorError(Exception):
    pass


class ScenarioError(SimulatorError):
    pass


class TopologyError(SimulatorError):
    pass


class ConnectError(SimulatorError):
    pass
