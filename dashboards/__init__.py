"""firegrid's Grafana dashboards as code; see docs/dashboards.md."""
