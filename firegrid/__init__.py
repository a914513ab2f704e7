"""firegrid's entry points: the `firegrid` command line (cli.py, alerts_cli.py) and the
local demo's wiring (demo.py, demo_console.py). This package imports every other one and is
imported by none (tests/test_layout.py)."""
