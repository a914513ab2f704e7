"""The simulators' errors, one tree:

    SimulatorError            anything the simulators refuse or cannot do (runtime.FiregridError)
    ├── ScenarioError         a scenario file is unreadable or invalid (names file and field)
    ├── TopologyError         the topology CSVs are missing, unreadable or inconsistent
    └── ConnectError          a device could not connect to the broker (refused, unreachable)
"""

from __future__ import annotations

from runtime.errors import FiregridError


class SimulatorError(FiregridError):
    exit_code = 2  # bad scenario, topology, mode or speed: the command line is at fault


class ScenarioError(SimulatorError):
    pass


class TopologyError(SimulatorError):
    pass


class ConnectError(SimulatorError):
    exit_code = 3  # the broker cannot be reached or refuses the devices
