"""Prometheus scrape config, Grafana dashboards and alert rules for a corral stack."""
